"""Generation serving benchmark: 8 adaptations of mixed kinds, concurrent streaming completions.

    python bench/serving_generation.py --out docs/results/serving_generation
    python bench/serving_generation.py --model tiny --data demo-chat --requests 16 --out /tmp/sg   # smoke run

The same streamed ``/v1/completions`` requests (round-robin over 2 LoRA, 2 soft prompts, 2 prefixes,
a few-shot and a zero-shot prompt, all trained briefly on a generation task) are sent by
``--concurrency`` client threads to ``adaptlab serve`` started twice, in one run: ``swap`` (one
adaptation at a time through its own artifact code path) and ``mixed`` (rows of every adaptation in
one forward pass, the static prompt starts kept as keys/values). For each: generated tokens per
second over the wall time, time to first token (first streamed text) p50/p99, request latency,
and the ratio mixed / swap. Greedy decoding, so both modes must stream the same text: checked.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving as classify_bench  # noqa: E402  (the classification benchmark: adaptations, server, percentile)

from adaptlab.utils import atomic_write_json, atomic_write_text, machine_info, package_versions, provenance_lines  # noqa: E402,E501


def stream_one(session: requests.Session, url: str, body: dict) -> dict:
    """One streamed completion: the text, time to first text, total time."""
    t0 = time.perf_counter()
    first, pieces = None, []
    try:
        with session.post(url + "/v1/completions", json={**body, "stream": True}, stream=True, timeout=600) as r:
            if r.status_code != 200:
                return {"status": r.status_code, "seconds": time.perf_counter() - t0}
            for line in r.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                text = json.loads(line[6:])["choices"][0].get("text", "")
                if text:
                    first = first if first is not None else time.perf_counter() - t0
                    pieces.append(text)
    except requests.RequestException as e:
        return {"status": 0, "seconds": time.perf_counter() - t0, "error": str(e)}
    return {"status": 200, "seconds": time.perf_counter() - t0, "ttft": first, "text": "".join(pieces)}


def fire_streams(url: str, jobs: list[dict], concurrency: int) -> tuple[list[dict], float]:
    local = threading.local()

    def one(job):
        local.s = getattr(local, "s", None) or requests.Session()
        return stream_one(local.s, url, job)

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, jobs))
    return results, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    classify_bench.common_args(ap, "viggo", 96, 16, "runs/bench_serving_generation", "docs/results/serving_generation")
    ap.add_argument("--max-tokens", type=int, default=24)
    args = ap.parse_args()

    splits, tokenizer, reg_dir = classify_bench.prepare(args)
    if splits.task == "classification":
        sys.exit(f"{args.data} is a classification task: use bench/serving.py")
    inputs = list(dict.fromkeys(ex.text for ex in splits.test.examples))[:64]
    if splits.task == "chat":  # a completion prompt to a chat adaptation is one user turn: send the last one
        inputs = [next(m["content"] for m in reversed(json.loads(t)) if m["role"] == "user") for t in inputs]
    names = [a[0] for a in classify_bench.ADAPTATIONS]
    jobs = [
        {"model": names[i % len(names)], "prompt": inputs[i % len(inputs)], "max_tokens": args.max_tokens}
        for i in range(args.requests)
    ]
    meta = {
        "command": "python " + " ".join(sys.argv),
        "machine": machine_info(),
        "versions": package_versions(),
        "model": args.model,
        "data": args.data,
        "adaptations": [a[:2] for a in classify_bench.ADAPTATIONS],
        "requests": args.requests,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    modes, texts = {}, {}
    for mode in ("swap", "mixed"):
        server = classify_bench.Server(args.model, reg_dir, mode, args.max_batch, args.max_wait_ms, args.device)
        try:
            fire_streams(server.url, [{**j, "max_tokens": 2} for j in jobs[: len(names)]], 4)  # warm-up
            results, wall = fire_streams(server.url, jobs, args.concurrency)
        finally:
            server.stop()
        ok = [r for r in results if r["status"] == 200]
        tokens = sum(len(tokenizer(r["text"], add_special_tokens=False)["input_ids"]) for r in ok)
        ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
        lat = [r["seconds"] for r in ok]
        texts[mode] = [r.get("text") for r in results]
        modes[mode] = {
            "requests": len(results),
            "ok": len(ok),
            "wall_s": wall,
            "tokens": tokens,
            "tokens_per_s": tokens / wall,
            "ttft_p50_s": classify_bench.percentile(ttft, 50),
            "ttft_p99_s": classify_bench.percentile(ttft, 99),
            "latency_p50_s": classify_bench.percentile(lat, 50),
            "latency_p99_s": classify_bench.percentile(lat, 99),
        }
        print(mode, json.dumps(modes[mode]), flush=True)
    # The swap baseline does not stream: it sends its whole (stripped) answer at the end, token by token.
    same = sum((a or "").strip() == (b or "").strip() for a, b in zip(texts["mixed"], texts["swap"]))
    ratio = modes["mixed"]["tokens_per_s"] / modes["swap"]["tokens_per_s"]
    out = Path(args.out)
    atomic_write_json(
        out.with_suffix(".json"),
        {"meta": meta, "modes": modes, "ratio": ratio, "same_text": same, "compared": len(jobs), "texts": texts},
    )
    m, s = modes["mixed"], modes["swap"]
    row = "| {} | {:.1f} | {:.2f} s | {:.2f} s | {:.2f} s | {:.2f} s | {}/{} |"
    md = [
        f"## Generation serving: 8 adaptations of {args.model} on one server ({args.data})",
        "",
        *provenance_lines(meta),
        f"Adaptations: {', '.join(f'{n} ({k})' for n, k in meta['adaptations'])}. {args.requests} streamed "
        f"completions of up to {args.max_tokens} tokens (greedy), round-robin over them, {args.concurrency} "
        f"concurrent clients on loopback; max batch {args.max_batch}, max wait {args.max_wait_ms:g} ms.",
        "",
        "| mode | tokens/s | time to first token p50 | p99 | latency p50 | p99 | ok |",
        "|---|---|---|---|---|---|---|",
        row.format(
            "swap (one adaptation at a time)",
            s["tokens_per_s"],
            s["ttft_p50_s"],
            s["ttft_p99_s"],
            s["latency_p50_s"],
            s["latency_p99_s"],
            s["ok"],
            s["requests"],
        ),
        row.format(
            "mixed batches + prompt cache",
            m["tokens_per_s"],
            m["ttft_p50_s"],
            m["ttft_p99_s"],
            m["latency_p50_s"],
            m["latency_p99_s"],
            m["ok"],
            m["requests"],
        ),
        "",
        f"**Ratio mixed / swap: {ratio:.2f}x** tokens/s. Same streamed text as swap on {same}/{len(jobs)} requests.",
    ]
    atomic_write_text(out.with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
