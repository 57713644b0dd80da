"""Train every gradient strategy on a dataset with the real base model and record quality and cost.

    python bench/strategies_demo.py --data demo --out docs/results/strategies_demo

Writes ``<out>.json`` (one record per strategy, with machine and versions) and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from adaptlab.data.named import load_task
from adaptlab.data.splits import subsample
from adaptlab.evaluation.zero_shot import evaluate_zero_shot
from adaptlab.models.base import load_base
from adaptlab.strategies import get_strategy, list_strategies, make_config
from adaptlab.strategies.base import artifact_bytes
from adaptlab.strategies.gradient import release
from adaptlab.training import TrainConfig
from adaptlab.utils import atomic_write_json, atomic_write_text, machine_info, package_versions, set_torch_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="demo")
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--strategies", default=",".join(list_strategies("gradient")))
    ap.add_argument("--train-size", type=int, default=0, help="0: the whole train split")
    ap.add_argument("--test-size", type=int, default=0, help="0: the whole test split")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/results/strategies_demo")
    args = ap.parse_args()

    threads = set_torch_threads()
    splits = load_task(args.data, seed=args.seed)
    train = subsample(splits.train, n=args.train_size, seed=args.seed) if args.train_size else splits.train
    test = subsample(splits.test, n=args.test_size, seed=args.seed) if args.test_size else splits.test
    base = load_base(args.model)
    records = []
    zs = evaluate_zero_shot(base, test)
    records.append({"strategy": "zero_shot (base)", "accuracy": zs["accuracy"], "macro_f1": zs["macro_f1"],
                    "train_seconds": 0.0, "trainable_params": 0, "artifact_bytes": 0,
                    "examples_per_s_infer": zs["examples_per_s"]})
    print(json.dumps(records[-1]), flush=True)
    for name in args.strategies.split(","):
        strat = get_strategy(name).strategy_cls(make_config(name))
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, checkpoint_every=0)
        art = strat.fit(base, train, splits.dev, cfg)
        ev = art.evaluate(test)
        folder = Path("runs/bench_artifacts") / name
        art.save(folder)
        tr = art.metrics["train"]
        records.append({"strategy": name, "accuracy": ev["accuracy"], "macro_f1": ev["macro_f1"],
                        "train_seconds": tr["train_seconds"], "train_examples_per_s": tr["examples_per_s"],
                        "peak_rss_gb": tr["peak_rss_bytes"] / 2**30, "trainable_params": tr["trainable_params"],
                        "artifact_bytes": artifact_bytes(folder), "best_dev": tr["best_dev"],
                        "examples_per_s_infer": ev["examples_per_s"], "lr": art.train_config["lr"]})
        print(json.dumps(records[-1]), flush=True)
        release(base)
    out = Path(args.out)
    meta = {"command": "python " + " ".join(sys.argv), "machine": {**machine_info(), "torch_threads": threads},
            "versions": package_versions(), "data": args.data, "train_examples": len(train),
            "test_examples": len(test), "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
            "date": time.strftime("%Y-%m-%d")}
    atomic_write_json(out.with_suffix(".json"), {"meta": meta, "results": records})
    lines = [f"# Gradient strategies on `{args.data}` with {args.model}", "",
             f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']['processor']}, "
             f"{meta['machine']['cpu_count']} cores, torch threads {threads}; {meta['date']}  ",
             f"Train {len(train)} examples, {args.epochs} epoch(s), batch {args.batch_size}; test {len(test)}.", "",
             "| strategy | accuracy | macro-F1 | train s | trainable params | artifact | infer ex/s |",
             "|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['strategy']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['train_seconds']:.0f} | "
                     f"{r['trainable_params']:,} | {r['artifact_bytes'] / 1e6:.2f} MB | {r['examples_per_s_infer']:.1f} |")
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
