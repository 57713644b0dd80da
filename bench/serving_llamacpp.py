"""llama.cpp as a serving anchor: the same generation requests served by adaptlab and by llama.cpp.

One LoRA (an artifact on Gemma 3 270M) and the base model alone. The same N rendered prompts, greedy,
``--max-tokens`` new tokens each:

- adaptlab: its serving core in this process (``Service``: the batcher with mixed batches and the
  prompt cache, as ``adaptlab serve`` runs it), all N requests submitted at once;
- llama.cpp (llama-cpp-python, built from its source distribution): the packaged Q4_K_M base GGUF
  with the exported adapter (``export --format gguf``), one request after the other, as one
  llama-cpp-python model object serves them (its HTTP server serialises requests on one model too).

Requests per second and generated tokens per second over the wall time; one process, one side after
the other, nothing else running. The in-process cores are measured (no HTTP) on both sides.

    python bench/serving_llamacpp.py --artifact ART --data FILE --out docs/results/serving_llamacpp
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifact", type=Path, required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path("docs/results/serving_llamacpp"))
    a = ap.parse_args()
    from llama_cpp import Llama

    from adaptlab.data.named import load_task
    from adaptlab.export_gguf import export_gguf
    from adaptlab.models.base import load_base
    from adaptlab.serving.adapters import from_artifact, plain_adapter
    from adaptlab.serving.service import Service
    from adaptlab.strategies.base import Artifact
    from adaptlab.utils import set_torch_threads

    set_torch_threads()
    base = load_base("gemma-3-270m")
    art = Artifact.load(a.artifact, base)
    rows = load_task(a.data).test.examples
    texts = [rows[i % len(rows)].text for i in range(a.requests)]
    prompts = art.prompts(texts)
    lora = from_artifact(art, "lora", "lora-key")
    lora.base = base
    results = []
    service = Service(base, None)
    try:
        for name, adapter, inputs in (("base alone", plain_adapter(base), prompts), ("LoRA", lora, texts)):
            service.generate(adapter, inputs[:2], a.max_tokens)  # warm-up (and the prompt cache's lead)
            t0 = time.perf_counter()
            outs = service.generate(adapter, inputs, a.max_tokens)
            secs = time.perf_counter() - t0
            toks = sum(len(base.tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outs)
            results.append(
                {
                    "engine": "adaptlab (mixed batches, fp32)",
                    "adaptation": name,
                    "seconds": secs,
                    "requests_per_s": len(inputs) / secs,
                    "tokens_per_s": toks / secs,
                }
            )
            print(results[-1], flush=True)
    finally:
        service.close()
    with tempfile.TemporaryDirectory() as d:
        out = export_gguf(a.artifact, Path(d) / "gguf", base)
        for name, adapter in (("base alone", None), ("LoRA", str(out / "adapter.gguf"))):
            llm = Llama(
                model_path=str(out / "base.gguf"),
                lora_path=adapter,
                n_ctx=1024,
                n_threads=os.cpu_count(),
                verbose=False,
                seed=0,
            )
            llm.create_completion(prompts[0], max_tokens=a.max_tokens, temperature=0.0)  # warm-up
            t0 = time.perf_counter()
            toks = 0
            for p in prompts:
                r = llm.create_completion(p, max_tokens=a.max_tokens, temperature=0.0)
                toks += r["usage"]["completion_tokens"]
            secs = time.perf_counter() - t0
            results.append(
                {
                    "engine": "llama.cpp (one request at a time, Q4_K_M)",
                    "adaptation": name,
                    "seconds": secs,
                    "requests_per_s": len(prompts) / secs,
                    "tokens_per_s": toks / secs,
                }
            )
            print(results[-1], flush=True)
            del llm
    report = {
        "command": "python bench/serving_llamacpp.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores; nothing else running",
        "date": time.strftime("%Y-%m-%d"),
        "requests": a.requests,
        "max_tokens": a.max_tokens,
        "results": results,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    md = [
        "# Serving anchor: adaptlab and llama.cpp on the same requests",
        "",
        f"`{report['command']}` on {report['machine']}, {report['date']}: {a.requests} requests, greedy, "
        f"{a.max_tokens} new tokens each, in-process cores on both sides (no HTTP).",
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
