"""Hosted or local, in one compare: the prompt strategies of a model behind llama.cpp's server
(an OpenAI-compatible endpoint on loopback, standing in for a hosted API, priced like one) beside
local adaptations of Gemma 3 270M, on the same test rows, with one cost model.

    python bench/compare_hosted.py --data financial_phrasebank --out docs/results/compare_hosted \
        --model gemma-3-270m,smollm2-135m-instruct
    # the LM-proposed optimizer against prompt_search and few-shot on the endpoint, at one call budget:
    python bench/compare_hosted.py --strategies zero_shot@hosted,few_shot@hosted,prompt_search@hosted,gepa@hosted \
        --proposer hosted --set prompt_search.budget_calls=300 --set gepa.budget_calls=300 \
        --work runs/optimizer_hosted --out docs/results/optimizer_hosted

The endpoint is ``llama-server`` (``llamacpp_kit.llama_server_binary``) serving ``--hosted-gguf``
(default: the SmolLM2-135M-Instruct GGUF the project installs, through its chat template, so the
hosted side is an instruction-tuned model prompted the way its users prompt it); prices are the
``--price-in``/``--price-out`` given (dollars per 1M tokens, a small hosted model's list price by
default; the server itself costs nothing here). Then ``adaptlab compare`` runs with that endpoint:
its report, results and the endpoint's spend are copied under ``--out``. llama-server and the
compare take turns on the cores (a hosted call waits for the server; a local run leaves it idle).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llamacpp_kit import llama_server_binary  # noqa: E402
from serving_llamacpp_http import LlamaServer  # noqa: E402


def hosted_gguf(name: str) -> Path:
    from adaptlab.models.registry import resolve_model

    spec = resolve_model(name)
    return Path(spec.weights().gguf(Path.home() / ".cache" / "adaptlab" / "gguf-assembled" / name))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="financial_phrasebank")
    ap.add_argument("--hosted-model", default="smollm2-135m-instruct", help="a model whose GGUF the project installs")
    ap.add_argument("--chat", action="store_true", default=True)
    ap.add_argument("--price-in", type=float, default=0.15)
    ap.add_argument("--price-out", type=float, default=0.60)
    ap.add_argument("--strategies", default="zero_shot,few_shot,lora")
    ap.add_argument("--train-sizes", default="128")
    ap.add_argument("--test-limit", type=int, default=200)
    ap.add_argument("--volume", default="1M/month")
    ap.add_argument("--model", default="gemma-3-270m", help="local base(s), comma-separated")
    ap.add_argument("--proposer", default=None, help="gepa's proposer: 'hosted' (the endpoint's model) or 'self'")
    ap.add_argument("--set", action="append", default=[], help="strategy.key=value, as compare --set")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("runs/compare_hosted"))
    ap.add_argument("--out", type=Path, default=Path("docs/results/compare_hosted"))
    a = ap.parse_args()
    server = LlamaServer(
        llama_server_binary(),
        hosted_gguf(a.hosted_model),
        [],
        parallel=4,
        ctx_per_slot=2048,
        extra=["--alias", a.hosted_model],
    )
    try:
        endpoint = (
            f"hosted={server.url}/v1,model={a.hosted_model},in={a.price_in},out={a.price_out},"
            f"concurrency=4,chat={'true' if a.chat else 'false'},mode=parse"
        )
        cmd = [
            sys.executable,
            "-m",
            "adaptlab.cli",
            "compare",
            "--data",
            a.data,
            "--strategies",
            a.strategies,
            "--train-sizes",
            a.train_sizes,
            "--test-limit",
            str(a.test_limit),
            "--full-grid",
            "--endpoint",
            endpoint,
            "--volume",
            a.volume,
            "--out",
            str(a.work),
            "--no-forgetting",
            "--fragility-k",
            "0",
            "--consistency-examples",
            "0",
            "--no-progress",
            "--model",
            a.model,
            "--seeds",
            str(a.seeds),
            *(["--proposer", a.proposer] if a.proposer else []),
            *(x for kv in a.set for x in ("--set", kv)),
        ]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        seconds = time.perf_counter() - t0
    finally:
        server.stop()
    a.out.mkdir(parents=True, exist_ok=True)
    for f in ("report.md", *(p.name for p in (a.work / "report").glob("*.png"))):
        shutil.copy2(a.work / "report" / f, a.out / f)
    results = [json.loads(p.read_text()) for p in sorted((a.work / "results").glob("*.json"))]
    for r in results:
        r.pop("predictions", None)
    (a.out / "results.json").write_text(
        json.dumps(
            {"command": "python " + " ".join(sys.argv), "compare": cmd, "seconds": seconds, "runs": results}, indent=2
        )
        + "\n"
    )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
