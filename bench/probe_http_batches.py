"""Probe: batch sizes adaptlab serve forms over HTTP, base model vs LoRA traffic (the numbers in
``docs/results/serving_llamacpp_http.md``: 5.3 -> 9.1 rows a batch for 8 LoRAs at 16 clients).

    python bench/probe_http_batches.py [WEIGHTS [MAX_WAIT_MS]]   # default fp32 20; needs
                                       # bench/serving_field.py's generation LoRAs

64 E2E requests from 16 clients, three traffics (base model with the rendered prompts, 8 LoRAs in
turn, one LoRA), each after a 16-request warm-up; reads ``adaptlab_batch_rows`` from /metrics.
"""

import re
import sys
import tempfile
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import Server, fire  # noqa: E402

from adaptlab.data.named import load_task  # noqa: E402
from adaptlab.data.splits import subsample  # noqa: E402
from adaptlab.models.base import load_base  # noqa: E402
from adaptlab.registry import Registry  # noqa: E402
from adaptlab.strategies.base import Artifact  # noqa: E402

folders = sorted(p for p in Path("runs/bench_serving_field/gemma-3-270m-generate").iterdir())[:8]
base = load_base("gemma-3-270m")
arts = [Artifact.load(f, base) for f in folders]
texts = [e.text for e in subsample(load_task("e2e_nlg").test, n=64, seed=0).examples]
prompts = [arts[i % 8].prompts([t])[0] for i, t in enumerate(texts)]
del base
d = Path(tempfile.mkdtemp())
reg = Registry(d / "registry")
names = [f"lora-{i:02d}" for i in range(8)]
for n, f in zip(names, folders):
    reg.register(f, n)
weights = sys.argv[1] if len(sys.argv) > 1 else "fp32"
max_wait = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
srv = Server("gemma-3-270m", d / "registry", "mixed", 32, max_wait, preload=names, weights=weights)


def batches():
    m = requests.get(srv.url + "/metrics").text
    c = float(re.search(r"^adaptlab_batch_rows_count (\S+)", m, re.M).group(1))
    s = float(re.search(r"^adaptlab_batch_rows_sum (\S+)", m, re.M).group(1))
    return c, s


try:
    for label, jobs in (
        (
            "base",
            [
                {"path": "/v1/completions", "body": {"model": "base", "prompt": p, "max_tokens": 16, "temperature": 0}}
                for p in prompts
            ],
        ),
        (
            "lora",
            [
                {
                    "path": "/v1/completions",
                    "body": {"model": names[i % 8], "prompt": t, "max_tokens": 16, "temperature": 0},
                }
                for i, t in enumerate(texts)
            ],
        ),
        (
            "lora-one",
            [
                {
                    "path": "/v1/completions",
                    "body": {"model": names[0], "prompt": t, "max_tokens": 16, "temperature": 0},
                }
                for i, t in enumerate(texts)
            ],
        ),
    ):
        fire(srv.url, jobs[:16], 16)
        c0, s0 = batches()
        res, wall = fire(srv.url, jobs, 16)
        c1, s1 = batches()
        toks = sum(r["body"]["usage"]["completion_tokens"] for r in res)
        print(
            label,
            "tok/s",
            round(toks / wall, 1),
            "batches",
            c1 - c0,
            "rows/batch",
            round((s1 - s0) / max(1, c1 - c0), 1),
            flush=True,
        )
finally:
    srv.stop()
