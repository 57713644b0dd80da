"""Train every gradient strategy on a dataset with the real base model and record quality and cost.

    python bench/strategies_quality.py --data demo --out docs/results/strategies_demo
    python bench/strategies_quality.py --data sst2 --train-size 500 --out docs/results/strategies_sst2
    python bench/strategies_quality.py --data banking77 --per-class 10 --test-size 1000 \
        --epochs 3 --strategy-epochs full=1 --dev-limit 154 --out docs/results/strategies_banking77
    python bench/strategies_quality.py --summary docs/results/strategies.md docs/results/strategies_*.json

Writes ``<out>.json`` (one record per strategy, with machine and versions) and ``<out>.md``
after every strategy, so a killed run keeps what it finished; re-running skips finished strategies.
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
from adaptlab.models.base import load_base, resolve_device
from adaptlab.strategies import get_strategy, list_strategies, make_config
from adaptlab.strategies.base import artifact_bytes
from adaptlab.training import TrainConfig
from adaptlab.utils import (
    atomic_write_json,
    atomic_write_text,
    machine_info,
    package_versions,
    provenance_lines,
    set_torch_threads,
)


def _write(out: Path, meta: dict, records: list[dict]) -> None:
    atomic_write_json(out.with_suffix(".json"), {"meta": meta, "results": records})
    lines = [
        f"## {meta['data']} ({meta['model']})",
        "",
        *provenance_lines(meta, ("torch", "transformers", "peft")),
        f"Train {meta['train_examples']} examples, batch {meta['batch_size']}, seed {meta['seed']}; "
        f"held-out test {meta['test_examples']} examples (never used for selection).",
        "",
        "| strategy | test accuracy | macro-F1 | epochs | train time | trainable params | artifact | infer ex/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['strategy']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r.get('epochs', '-')} | "
            f"{r['train_seconds']:.0f} s | {r['trainable_params']:,} | {r['artifact_bytes'] / 1e6:.2f} MB | "
            f"{r['examples_per_s_infer']:.1f} |"
        )
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")


def summary(target: Path, sources: list[Path]) -> None:
    parts = [
        "# Strategy quality on real data (Gemma 3 270M, CPU)",
        "",
        "Every row is one run of `bench/strategies_quality.py`; the JSON next to each table has the full "
        "records (peak RSS, dev score, learning rate, versions).",
        "",
    ]
    for src in sources:
        parts.append(Path(src).with_suffix(".md").read_text())
    notes = Path(target).with_name("strategies_notes.md")
    if notes.exists():
        parts.append(notes.read_text())
    atomic_write_text(target, "\n".join(parts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="demo")
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda")
    ap.add_argument("--strategies", default=",".join(list_strategies("gradient")))
    ap.add_argument("--train-size", type=int, default=0, help="0: the whole train split")
    ap.add_argument("--per-class", type=int, default=0, help="train examples per class (overrides --train-size)")
    ap.add_argument("--test-size", type=int, default=0, help="0: the whole test split")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--strategy-epochs", default="", help="per-strategy epochs, e.g. full=1,lora=2")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--dev-limit", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/results/strategies_demo")
    ap.add_argument("--summary", nargs="+", metavar=("TARGET", "SOURCE"), help="build TARGET from result JSONs")
    args = ap.parse_args()
    if args.summary:
        summary(Path(args.summary[0]), [Path(p) for p in args.summary[1:]])
        return

    threads = set_torch_threads()
    splits = load_task(args.data, seed=args.seed)
    if args.per_class:
        train = subsample(splits.train, per_class=args.per_class, seed=args.seed)
    else:
        train = subsample(splits.train, n=args.train_size, seed=args.seed) if args.train_size else splits.train
    test = subsample(splits.test, n=args.test_size, seed=args.seed) if args.test_size else splits.test
    per_strategy = {k: float(v) for k, v in (kv.split("=") for kv in args.strategy_epochs.split(",") if kv)}
    out = Path(args.out)
    meta = {
        "command": "python " + " ".join(sys.argv),
        "machine": {**machine_info(), "torch_threads": threads},
        "versions": package_versions(),
        "data": args.data,
        "model": args.model,
        "train_examples": len(train),
        "test_examples": len(test),
        "batch_size": args.batch_size,
        "seed": args.seed,
        "date": time.strftime("%Y-%m-%d"),
    }
    records = json.loads(out.with_suffix(".json").read_text())["results"] if out.with_suffix(".json").exists() else []
    done = {r["strategy"] for r in records}
    base = load_base(args.model, device=resolve_device(args.device))
    if "zero_shot (base)" not in done:
        zs = evaluate_zero_shot(base, test)
        records.append(
            {
                "strategy": "zero_shot (base)",
                "accuracy": zs["accuracy"],
                "macro_f1": zs["macro_f1"],
                "train_seconds": 0.0,
                "trainable_params": 0,
                "artifact_bytes": 0,
                "examples_per_s_infer": zs["examples_per_s"],
                "prompt_tokens": zs["prompt_tokens"],
            }
        )
        print(json.dumps(records[-1]), flush=True)
        _write(out, meta, records)
    for name in args.strategies.split(","):
        if name in done:
            continue
        epochs = per_strategy.get(name, args.epochs)
        strat = get_strategy(name).strategy_cls(make_config(name))
        cfg = TrainConfig(
            epochs=epochs, batch_size=args.batch_size, seed=args.seed, checkpoint_every=0, dev_limit=args.dev_limit
        )
        art = strat.fit(base, train, splits.dev, cfg)
        ev = art.evaluate(test)
        folder = Path("runs/bench_artifacts") / args.data / name
        art.save(folder)
        tr = art.metrics["train"]
        records.append(
            {
                "strategy": name,
                "accuracy": ev["accuracy"],
                "macro_f1": ev["macro_f1"],
                "epochs": epochs,
                "train_seconds": tr["train_seconds"],
                "train_examples_per_s": tr["examples_per_s"],
                "peak_rss_gb": tr["peak_rss_bytes"] / 2**30,
                "trainable_params": tr["trainable_params"],
                "artifact_bytes": artifact_bytes(folder),
                "best_dev": tr["best_dev"],
                "examples_per_s_infer": ev["examples_per_s"],
                "lr": art.train_config["lr"],
            }
        )
        print(json.dumps(records[-1]), flush=True)
        _write(out, meta, records)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
