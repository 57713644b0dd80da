"""Probe: adaptlab's serving core, in process, on one batch of 16 E2E rows x 16 greedy tokens: the
base model, one LoRA, eight LoRAs, with and without the static-lead cache (the 4.4 / 4.1 / 4.9 s in
``docs/results/serving_llamacpp_http.md``; best of two timed runs after one untimed).

    python bench/probe_core_lora.py        # needs bench/serving_field.py's generation LoRAs
"""

import time
from pathlib import Path

from adaptlab.data.named import load_task
from adaptlab.data.splits import subsample
from adaptlab.models.base import load_base
from adaptlab.serving.adapters import from_artifact, plain_adapter
from adaptlab.serving.service import ServeConfig, Service, Work
from adaptlab.strategies.base import Artifact

base = load_base("gemma-3-270m")
folders = sorted(Path("runs/bench_serving_field/gemma-3-270m-generate").iterdir())[:8]
arts = [Artifact.load(f, base) for f in folders]
texts = [e.text for e in subsample(load_task("e2e_nlg").test, n=16, seed=0).examples]


def run(cache, which):
    svc = Service(base, None, ServeConfig(max_batch=32, prompt_cache=cache))
    ads = [from_artifact(a, f"l{i}", f"k{i}", base) for i, a in enumerate(arts)]
    plain = plain_adapter(base)

    def items():
        if which == "base":
            return [Work("generate", plain, arts[i % 8].prompts([t])[0], max_new=16) for i, t in enumerate(texts)]
        if which == "one":
            return [Work("generate", ads[0], t, max_new=16) for t in texts]
        return [Work("generate", ads[i % 8], t, max_new=16) for i, t in enumerate(texts)]

    svc.lanes[0]._process(items())
    ts = []
    for _ in range(2):
        t0 = time.perf_counter()
        svc.lanes[0]._process(items())
        ts.append(time.perf_counter() - t0)
    svc.close()
    return min(ts)


for cache in (True, False):
    for which in ("base", "one", "eight"):
        print("cache" if cache else "nocache", which, round(run(cache, which), 2), flush=True)
