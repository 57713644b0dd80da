"""llama.cpp as a serving anchor: the same generation requests served by adaptlab and by llama.cpp.

One LoRA (an artifact on Gemma 3 270M) and the base model alone. The same N rendered prompts, greedy,
``--max-tokens`` new tokens each:

- adaptlab: its serving core in this process (``Service``: the batcher with mixed batches and the
  prompt cache, as ``adaptlab serve`` runs it), all N requests submitted at once;
- llama.cpp (llama-cpp-python, built from its source distribution): the packaged Q4_K_M base GGUF
  with the exported adapter (``export --format gguf``), one request after the other, as one
  llama-cpp-python model object serves them (its HTTP server serialises requests on one model too).

Requests per second and generated tokens per second over the wall time; one process, one side after
the other. The in-process cores are measured (no HTTP) on both sides.

    python bench/serving_llamacpp.py --artifact ART --data FILE --out docs/results/serving_llamacpp
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llamacpp_kit import PACKAGES, llama, meta, setup  # noqa: E402


def timed(engine: str, adaptation: str, n: int, serve) -> dict:
    """Run ``serve()`` (which returns the tokens it generated) once after a warm-up, and time it."""
    serve(warmup=True)
    t0 = time.perf_counter()
    tokens = serve(warmup=False)
    secs = time.perf_counter() - t0
    row = {
        "engine": engine,
        "adaptation": adaptation,
        "seconds": secs,
        "requests_per_s": n / secs,
        "tokens_per_s": tokens / secs,
    }
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifact", type=Path, required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path("docs/results/serving_llamacpp"))
    a = ap.parse_args()
    from adaptlab.export_gguf import export_gguf
    from adaptlab.serving.adapters import from_artifact, plain_adapter
    from adaptlab.serving.service import Service
    from adaptlab.utils import provenance_lines

    base, art, texts, prompts = setup(a.artifact, a.data, a.requests)
    tok = base.tokenizer
    results = []
    service = Service(base, None)
    try:
        for name, adapter, inputs in (
            ("base alone", plain_adapter(base), prompts),
            ("LoRA", from_artifact(art, "lora", "lora-key", base), texts),
        ):

            def ours(warmup: bool, adapter=adapter, inputs=inputs) -> int:
                outs = service.generate(adapter, inputs[:2] if warmup else inputs, a.max_tokens)
                return sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in outs)

            results.append(timed("adaptlab (mixed batches, fp32)", name, len(inputs), ours))
    finally:
        service.close()
    with tempfile.TemporaryDirectory() as d:
        out = export_gguf(a.artifact, Path(d) / "gguf", base)
        for name, adapter in (("base alone", False), ("LoRA", True)):
            llm = llama(out, adapter)

            def theirs(warmup: bool, llm=llm) -> int:
                rs = [
                    llm.create_completion(p, max_tokens=a.max_tokens, temperature=0.0)
                    for p in (prompts[:1] if warmup else prompts)
                ]
                return sum(r["usage"]["completion_tokens"] for r in rs)

            results.append(timed("llama.cpp (one request at a time, Q4_K_M)", name, len(prompts), theirs))
            del llm
    report = meta(requests=a.requests, max_tokens=a.max_tokens, results=results)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    md = [
        "# Serving anchor: adaptlab and llama.cpp on the same requests",
        "",
        *provenance_lines(report, PACKAGES),
        "",
        f"{a.requests} requests, greedy, {a.max_tokens} new tokens each, in-process cores on both sides (no HTTP).",
        "",
        "| engine | adaptation | wall s | requests/s | generated tokens/s |",
        "|---|---|---|---|---|",
    ]
    md += [
        f"| {r['engine']} | {r['adaptation']} | {r['seconds']:.1f} | {r['requests_per_s']:.2f} | "
        f"{r['tokens_per_s']:.1f} |"
        for r in results
    ]
    a.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
