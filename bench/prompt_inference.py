"""Few-shot label scoring: adaptlab's prefix/KV reuse vs naive per-label forward passes.

Gemma 3 270M, SST-2 validation (from the shared data directory), few-shot k=8 (class-balanced
exemplars from the train split, seed 0), in one run:

- *naive*: one forward pass per (prompt, label) pair over the whole prompt + label (the LM head
  already restricted to label positions, so the baseline is not a strawman);
- *adaptlab*: ``score_labels``: the exemplar prefix every prompt shares is encoded once, each
  prompt's remainder once, its KV cache reused for every label.

Both score the same ``--naive-limit`` examples (the naive route is slow), predictions must be
identical; adaptlab then also scores the whole validation set.

    python bench/prompt_inference.py --out docs/results/prompt_inference
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from adaptlab.data.named import load_task
from adaptlab.data.splits import subsample
from adaptlab.evaluation.scoring import score_labels, score_labels_naive
from adaptlab.models.base import load_base, resolve_device
from adaptlab.strategies import get_strategy, make_config
from adaptlab.utils import atomic_write_json, atomic_write_text, machine_info, package_versions, set_torch_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="sst2")
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--naive-limit", type=int, default=200, help="examples both routes score (0: all)")
    ap.add_argument("--out", default="docs/results/prompt_inference")
    args = ap.parse_args()
    threads = set_torch_threads()
    splits = load_task(args.data)
    base = load_base(args.model, device=resolve_device(args.device))
    art = get_strategy("few_shot").strategy_cls(make_config("few_shot", k=args.k, dev_limit=0)).fit(base, splits.train)
    test = splits.test
    both = subsample(test, n=args.naive_limit, seed=0) if args.naive_limit and args.naive_limit < len(test) else test
    texts = [ex.text for ex in both.examples]
    prompts = art.prompts(texts)
    label_texts = art.template.label_texts(art.labels)
    tok = base.tokenizer
    prompt_tokens = sum(len(tok(p)["input_ids"]) for p in prompts) / len(prompts)

    runs = {}
    for route, fn in (("naive", score_labels_naive), ("adaptlab", score_labels)):  # naive first: no warm-cache edge
        t0 = time.perf_counter()
        s = fn(base.model, tok, prompts, label_texts)
        runs[route] = {"seconds": time.perf_counter() - t0, "scores": s}
        print(f"{route}: {len(prompts) / runs[route]['seconds']:.2f} ex/s", flush=True)
    same = runs["naive"]["scores"].argmax(1).tolist() == runs["adaptlab"]["scores"].argmax(1).tolist()
    max_diff = (runs["naive"]["scores"] - runs["adaptlab"]["scores"]).abs().max().item()
    gold = [art.labels.index(ex.label) for ex in both.examples]
    acc = sum(int(p == g) for p, g in zip(runs["adaptlab"]["scores"].argmax(1).tolist(), gold)) / len(gold)

    t0 = time.perf_counter()
    full = art.evaluate(test)
    full_seconds = time.perf_counter() - t0
    result = {
        "meta": {
            "command": "python " + " ".join(sys.argv),
            "machine": {**machine_info(), "torch_threads": threads},
            "versions": package_versions(),
            "date": time.strftime("%Y-%m-%d"),
            "data": args.data,
            "model": base.name,
            "k": args.k,
            "exemplars": art.exemplars,
        },
        "compared_examples": len(prompts),
        "mean_prompt_tokens": prompt_tokens,
        "labels": len(label_texts),
        "naive_examples_per_s": len(prompts) / runs["naive"]["seconds"],
        "adaptlab_examples_per_s": len(prompts) / runs["adaptlab"]["seconds"],
        "ratio": runs["naive"]["seconds"] / runs["adaptlab"]["seconds"],
        "identical_predictions": same,
        "max_abs_score_diff": max_diff,
        "accuracy_on_compared": acc,
        "full_split": {
            "examples": full["n"],
            "accuracy": full["accuracy"],
            "examples_per_s": full["examples_per_s"],
            "seconds": full_seconds,
        },
    }
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), result)
    m = result["meta"]
    md = [
        f"## Few-shot label scoring: prefix/KV reuse vs naive ({args.data}, k={args.k}, {base.name})",
        "",
        f"Command: `{m['command']}`  ",
        f"Machine: {m['machine']['processor']}, {m['machine']['cpu_count']} cores, torch threads {threads}; "
        f"{m['date']}; torch {m['versions'].get('torch')}, transformers {m['versions'].get('transformers')}",
        "",
        f"{len(prompts)} validation examples scored by both routes, {prompt_tokens:.0f} prompt tokens on average, "
        f"{len(label_texts)} labels.",
        "",
        "| route | examples/s |",
        "|---|---|",
        f"| naive: one forward pass per (prompt, label) | {result['naive_examples_per_s']:.2f} |",
        f"| adaptlab: shared prefix once, KV reused across labels | {result['adaptlab_examples_per_s']:.2f} |",
        "",
        f"**Ratio: {result['ratio']:.1f}x** (target >= 3x). Identical predictions: {same} "
        f"(largest score difference {max_diff:.2e}). Accuracy on these examples: {acc:.3f}.",
        "",
        f"adaptlab on the whole split ({full['n']} examples): accuracy {full['accuracy']:.3f}, "
        f"{full['examples_per_s']:.2f} examples/s.",
    ]
    atomic_write_text(out.with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
