"""Hard-prompt strategies on real data: zero-shot, few-shot (k = 4, 8, 16), prompt_search, each
with and without contextual calibration. Accuracy, macro-F1, prompt tokens per example, examples/s.

    python bench/prompting_quality.py --data sst2 --out docs/results/prompting_sst2
    python bench/prompting_quality.py --data banking77 --test-size 1000 --search-budget 600 \\
        --search-set k=8,exemplar_sets=1 \\
        --out docs/results/prompting_banking77
    python bench/prompting_quality.py --summary docs/results/prompting.md docs/results/prompting_*.json

Every configuration scores the held-out test split once; the calibrated row applies the
calibration vector (3 content-free inputs, 3 extra calls) to the same raw scores, so both rows
share one timing. prompt_search selects on the dev split (never the test split) with calibration
off, and the calibrated row calibrates the prompt it found. Resumable: finished configurations in
``<out>.json`` are skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from adaptlab.backends import LocalBackend
from adaptlab.data.named import load_task
from adaptlab.data.splits import subsample
from adaptlab.evaluation.metrics import classification_metrics
from adaptlab.models.base import load_base, resolve_device
from adaptlab.strategies import get_strategy, make_config
from adaptlab.utils import (
    atomic_write_json,
    atomic_write_text,
    machine_info,
    package_versions,
    provenance_lines,
    set_torch_threads,
)


def configs(search_budget: int, ks: list[int], search_set: dict) -> list[tuple[str, str, dict]]:
    out = [("zero-shot", "zero_shot", {})]
    out += [(f"few-shot k={k}", "few_shot", {"k": k, "selection": "balanced"}) for k in ks]
    out.append(
        (f"prompt_search ({search_budget} calls)", "prompt_search", {"budget_calls": search_budget, **search_set})
    )
    return out


def write(out: Path, meta: dict, rows: list[dict]) -> None:
    atomic_write_json(out.with_suffix(".json"), {"meta": meta, "results": rows})
    md = [
        f"## {meta['data']} ({meta['model']}), {meta['test_examples']} held-out test examples",
        "",
        *provenance_lines(meta),
        "",
        "| prompt | calibration | accuracy | macro-F1 | prompt tokens / example | examples/s | fit calls |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for cal in (False, True):
            q = r["calibrated" if cal else "raw"]
            md.append(
                f"| {r['config']} | {'yes' if cal else 'no'} | {q['accuracy']:.3f} | {q['macro_f1']:.3f} | "
                f"{r['prompt_tokens']:.0f} | {r['examples_per_s']:.2f} | {r['fit_calls'] + (3 if cal else 0)} |"
            )
    best = [r for r in rows if r["strategy"] == "prompt_search"]
    if best:
        b = best[0]["search"]["best"]
        md += [
            "",
            f'prompt_search winner: instruction "{b["instruction"]}", exemplars {b["exemplars"]}, '
            f"dev metric {b['dev_metric']:.3f} on {b['dev_examples']} dev examples "
            f"({best[0]['search']['candidates']} candidates, {best[0]['search']['calls_used']} calls).",
        ]
    atomic_write_text(out.with_suffix(".md"), "\n".join(md) + "\n")


def summary(target: Path, sources: list[Path]) -> None:
    parts = [
        "# Prompting strategies on real data (Gemma 3 270M, CPU)",
        "",
        "Produced by `bench/prompting_quality.py`; the JSON next to each table has the full records "
        "(exemplars, search trace, calibration vectors).",
        "",
    ]
    parts += [Path(s).with_suffix(".md").read_text() for s in sources]
    notes = target.with_name("prompting_notes.md")
    if notes.exists():
        parts.append(notes.read_text())
    atomic_write_text(target, "\n".join(parts))


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="sst2")
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda")
    ap.add_argument("--test-size", type=int, default=0, help="0: the whole test split")
    ap.add_argument("--ks", default="4,8,16")
    ap.add_argument("--search-budget", type=int, default=1500)
    ap.add_argument("--search-set", default="", help="prompt_search config, e.g. k=8,exemplar_sets=1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/results/prompting_sst2")
    ap.add_argument("--summary", nargs="+", metavar=("TARGET", "SOURCE"))
    args = ap.parse_args()
    if args.summary:
        summary(Path(args.summary[0]), [Path(p) for p in args.summary[1:]])
        return
    threads = set_torch_threads()
    splits = load_task(args.data, seed=args.seed)
    test = subsample(splits.test, n=args.test_size, seed=args.seed) if args.test_size else splits.test
    out = Path(args.out)
    meta = {
        "command": "python " + " ".join(sys.argv),
        "machine": {**machine_info(), "torch_threads": threads},
        "versions": package_versions(),
        "data": args.data,
        "model": args.model,
        "test_examples": len(test),
        "train_examples": len(splits.train),
        "dev_examples": len(splits.dev),
        "seed": args.seed,
        "date": time.strftime("%Y-%m-%d"),
    }
    rows = json.loads(out.with_suffix(".json").read_text())["results"] if out.with_suffix(".json").exists() else []
    done = {r["config"] for r in rows}
    base = load_base(args.model, device=resolve_device(args.device))
    texts = [ex.text for ex in test.examples]
    gold = [ex.label for ex in test.examples]
    search_set = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.search_set.split(",") if kv)}
    for name, strategy, kw in configs(args.search_budget, [int(k) for k in args.ks.split(",")], search_set):
        if name in done:
            continue
        backend = LocalBackend(base)
        t0 = time.perf_counter()
        art = (
            get_strategy(strategy)
            .strategy_cls(make_config(strategy, dev_limit=0, seed=args.seed, **kw))
            .fit(backend, splits.train, splits.dev)
        )
        fit_seconds, fit_calls = time.perf_counter() - t0, backend.calls
        t0 = time.perf_counter()
        raw = art.raw_scores(texts)
        seconds = time.perf_counter() - t0
        art.fit_calibration(list(art.config.content_free))
        cal = art.calibrate(raw)
        row = {
            "config": name,
            "strategy": strategy,
            "settings": kw,
            "fit_seconds": fit_seconds,
            "fit_calls": fit_calls,
            "examples_per_s": len(texts) / seconds,
            "prompt_tokens": art.prompt_tokens(texts),
            "raw": classification_metrics(gold, [art.labels[i] for i in raw.argmax(1).tolist()], art.labels),
            "calibrated": classification_metrics(gold, [art.labels[i] for i in cal.argmax(1).tolist()], art.labels),
            "calibration": art.calibration,
            "exemplars": art.exemplars,
            "instruction": art.template.instruction,
            "search": art.metrics.get("search"),
            "trace": art.trace,
        }
        rows.append(row)
        print(
            json.dumps(
                {k: row[k] for k in ("config", "examples_per_s", "prompt_tokens")}
                | {"raw": row["raw"]["accuracy"], "cal": row["calibrated"]["accuracy"]}
            ),
            flush=True,
        )
        write(out, meta, rows)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
