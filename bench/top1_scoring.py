"""Exact top-1 label search vs scoring every label, on Banking77 (77 labels, 140 label-trie nodes).

Accuracy, F1 and predictions need only the best label. ``score_labels(top1=True)`` finds it by
branch and bound over the label trie (a prefix's log-probability bounds every label through it),
so most of the 262k-word LM-head projections are skipped. In one run, on the same test examples:

- *zero_shot*: the base model with the instruction template (labels listed in the prompt), the
  least peaked case: a weak model leaves many labels in contention;
- *lora*: a LoRA adapter trained here on ``--train`` examples, the usual case after adaptation.

For each, full scoring and the top-1 search score the same prompts: predictions must be identical,
and the table gives examples/s, LM-head rows per example and the ratio.

    python bench/top1_scoring.py --out docs/results/top1_scoring
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from adaptlab.data.named import load_task
from adaptlab.data.splits import subsample
from adaptlab.evaluation.scoring import score_labels
from adaptlab.models.base import load_base, resolve_device
from adaptlab.strategies import get_strategy, make_config
from adaptlab.training import TrainConfig
from adaptlab.utils import atomic_write_json, atomic_write_text, machine_info, package_versions, set_torch_threads


def timed(model, head, tok, prompts, label_texts, top1: bool) -> dict:
    rows = []
    hook = head.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    try:
        t0 = time.perf_counter()
        s = score_labels(model, tok, prompts, label_texts, batch_size=16, top1=top1)
        seconds = time.perf_counter() - t0
    finally:
        hook.remove()
    return {
        "seconds": seconds,
        "examples_per_s": len(prompts) / seconds,
        "head_rows_per_example": sum(rows) / len(prompts),
        "pred": s.argmax(1).tolist(),
    }


def score_case(base, model, prompts, label_texts, labels, gold) -> dict:
    head = base.model.get_output_embeddings()  # shared by the adapters: LoRA injects into the base
    full = timed(model, head, base.tokenizer, prompts, label_texts, top1=False)
    top = timed(model, head, base.tokenizer, prompts, label_texts, top1=True)
    same = full["pred"] == top["pred"]
    acc = sum(labels[p] == g for p, g in zip(full["pred"], gold)) / len(gold)
    print(
        f"full {full['examples_per_s']:.2f} ex/s ({full['head_rows_per_example']:.0f} rows), "
        f"top1 {top['examples_per_s']:.2f} ex/s ({top['head_rows_per_example']:.1f} rows), same={same}",
        flush=True,
    )
    return {
        "labels": len(labels),
        "accuracy": acc,
        "identical_predictions": same,
        "full": {k: v for k, v in full.items() if k != "pred"},
        "top1": {k: v for k, v in top.items() if k != "pred"},
        "ratio": full["seconds"] / top["seconds"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="banking77")
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda")
    ap.add_argument("--examples", type=int, default=64, help="test examples scored by both routes")
    ap.add_argument("--train", type=int, default=512, help="train examples for the LoRA case")
    ap.add_argument("--out", default="docs/results/top1_scoring")
    args = ap.parse_args()
    threads = set_torch_threads()
    splits = load_task(args.data)
    base = load_base(args.model, device=resolve_device(args.device))
    test = subsample(splits.test, n=args.examples, seed=0)
    texts = [ex.text for ex in test.examples]
    gold = [ex.label for ex in test.examples]

    # Each case is scored right after it is built: LoRA injects its layers into the base model in
    # place, so the zero-shot case must be timed before the adapter exists.
    zs = get_strategy("zero_shot").strategy_cls(make_config("zero_shot", dev_limit=0)).fit(base, splits.train)
    cases = {
        "zero_shot": score_case(
            base, base.model, zs.prompts(texts), zs.template.label_texts(zs.labels), zs.labels, gold
        )
    }
    t0 = time.perf_counter()
    lora = (
        get_strategy("lora")
        .strategy_cls(make_config("lora"))
        .fit(
            base,
            subsample(splits.train, n=args.train, seed=0),
            None,
            TrainConfig(epochs=1, checkpoint_every=0),
            progress=False,
        )
    )
    train_seconds = time.perf_counter() - t0
    lora.module.eval()
    cases["lora"] = score_case(
        base,
        lora.module,
        [lora.template.render(t, lora.labels) for t in texts],
        lora.template.label_texts(lora.labels),
        lora.labels,
        gold,
    )

    result = {
        "meta": {
            "command": "python " + " ".join(sys.argv),
            "machine": {**machine_info(), "torch_threads": threads},
            "versions": package_versions(),
            "date": time.strftime("%Y-%m-%d"),
            "data": args.data,
            "model": base.name,
            "examples": len(texts),
            "lora_train_examples": args.train,
            "lora_train_seconds": train_seconds,
        },
        "cases": cases,
    }
    ok = all(c["identical_predictions"] for c in cases.values())
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), result)
    m = result["meta"]
    md = [
        f"## Exact top-1 label search vs scoring every label ({args.data}, {base.name})",
        "",
        f"Command: `{m['command']}`  ",
        f"Machine: {m['machine']['processor']}, {m['machine']['cpu_count']} cores, torch threads {threads}; "
        f"{m['date']}; torch {m['versions'].get('torch')}",
        "",
        f"{len(texts)} test examples, both routes on the same prompts. LoRA: {args.train} train examples, "
        f"1 epoch ({train_seconds:.0f} s).",
        "",
        "| case | accuracy | full: ex/s | full: LM-head rows/ex | top-1: ex/s | top-1: LM-head rows/ex | ratio | same predictions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, c in result["cases"].items():
        md.append(
            f"| {name} | {c['accuracy']:.3f} | {c['full']['examples_per_s']:.2f} | "
            f"{c['full']['head_rows_per_example']:.0f} | {c['top1']['examples_per_s']:.2f} | "
            f"{c['top1']['head_rows_per_example']:.1f} | **{c['ratio']:.2f}x** | {c['identical_predictions']} |"
        )
    atomic_write_text(out.with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
