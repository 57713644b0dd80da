"""Probe: one 16-row batch through the serving core (`Service`, no HTTP), base model and 8 trained
E2E LoRAs each row another, 16 greedy tokens; the time of each batch's generate call, 3 batches each
(`engine_notes.md`: 3.27 s -> 2.83 s a LoRA batch, measured with this probe before and after
d073189).

    python bench/probe_service_batch.py [WEIGHTS]   # default auto; needs bench/serving_field.py's
                                                     # generation LoRAs
"""

import sys
import tempfile
import time
from pathlib import Path

import adaptlab.serving.service as service
from adaptlab.data.named import load_task
from adaptlab.data.splits import subsample
from adaptlab.models.base import load_base
from adaptlab.registry import Registry
from adaptlab.serving.service import ServeConfig, Service, Work
from adaptlab.utils import set_torch_threads

set_torch_threads()
folders = sorted(Path("runs/bench_serving_field/gemma-3-270m-generate").iterdir())[:8]
base = load_base("gemma-3-270m")
texts = [e.text for e in subsample(load_task("e2e_nlg").test, n=64, seed=0).examples]
reg = Registry(Path(tempfile.mkdtemp()) / "registry")
names = [f"lora-{i:02d}" for i in range(8)]
for n, f in zip(names, folders):
    reg.register(f, n)
svc = Service(
    base, reg, ServeConfig(max_batch=32, max_wait_ms=20, weights=sys.argv[1] if len(sys.argv) > 1 else "auto")
)
adapters = [svc.resolve(n)[1] for n in names]
seconds = []
generate = service.generate_rows


def timed(*args, **kwargs):
    t = time.perf_counter()
    out = generate(*args, **kwargs)
    seconds.append(time.perf_counter() - t)
    return out


service.generate_rows = timed
for label, adapter in (("base", lambda i: svc.lanes[0].plain), ("8 LoRAs", lambda i: adapters[i % 8])):
    for rep in range(3):
        futures = [
            svc.submit(Work("generate", adapter(i), texts[i], max_new=16)) for i in range(16 * rep, 16 * rep + 16)
        ]
        for f in futures:
            f.result()
    print(label, "seconds a batch", [round(s, 3) for s in seconds[-3:]], "tokens/s", round(256 / min(seconds[-3:]), 1))
svc.close()
