"""Probe: the same 16-row batches through the serving core worked on the main thread (the thread that
loaded the weights, as ``adaptlab serve`` does since 7934e07) or on a worker thread (as before); base
model, then 8 trained E2E LoRAs each row another, 16 greedy tokens, 3 batches each. One mode per
process: which threads ran OpenMP work is what is measured.

    python bench/probe_engine_thread.py main|worker              # needs bench/serving_field.py's LoRAs
    taskset -c 0 python bench/probe_engine_thread.py main|worker # half speed: one core, one thread
"""

import sys
import tempfile
import time
from pathlib import Path

from adaptlab.data.named import load_task
from adaptlab.data.splits import subsample
from adaptlab.models.base import load_base
from adaptlab.registry import Registry
from adaptlab.serving.service import ServeConfig, Service, Work
from adaptlab.utils import set_torch_threads

mode = sys.argv[1] if len(sys.argv) > 1 else "main"
set_torch_threads()
folders = sorted(Path("runs/bench_serving_field/gemma-3-270m-generate").iterdir())[:8]
base = load_base("gemma-3-270m")
texts = [e.text for e in subsample(load_task("e2e_nlg").test, n=64, seed=0).examples]
reg = Registry(Path(tempfile.mkdtemp()) / "registry")
names = [f"lora-{i:02d}" for i in range(8)]
for n, f in zip(names, folders):
    reg.register(f, n)
svc = Service(base, reg, ServeConfig(max_batch=32, max_wait_ms=20), threads=mode == "worker")
lane = svc.lanes[0]
adapters = [svc.resolve(n)[1] for n in names]
for label, adapter in (("base", lambda i: lane.plain), ("8 LoRAs", lambda i: adapters[i % 8])):
    seconds = []
    for rep in range(3):
        works = [Work("generate", adapter(i), texts[i], max_new=16) for i in range(16 * rep, 16 * rep + 16)]
        t = time.perf_counter()
        if mode == "worker":
            for f in [svc.submit(w) for w in works]:
                f.result()
        else:
            with lane.lock:
                lane._process(works)
        seconds.append(time.perf_counter() - t)
    print(mode, label, "seconds a batch", [round(s, 2) for s in seconds], flush=True)
svc.close()
