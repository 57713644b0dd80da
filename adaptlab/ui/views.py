"""The report as data for the page: the recommendation under the page's constraints, learning
curves, the quality-cost front, fragility, forgetting and the per-example rows. Built from the run
folder's stored JSON only, like ``report.html``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from adaptlab.compare.recommend import Constraints, recommend
from adaptlab.compare.stats import row_key
from adaptlab.compare.store import load_results
from adaptlab.compare.summary import aggregate, best_per_strategy, ppl_rise
from adaptlab.ui.state import UiError


def constraints_from(params) -> Constraints:
    """Query parameters -> :class:`Constraints`; a bad value is a one-line error naming it."""

    def number(name: str, cast=float):
        raw = (params.get(name) or "").strip()
        if not raw:
            return None
        try:
            value = cast(raw)
        except ValueError:
            raise UiError(400, f"{name.replace('_', ' ')}: {raw!r} is not a number") from None
        if value <= 0:
            raise UiError(400, f"{name.replace('_', ' ')}: must be above 0")
        return value

    tasks = number("tasks", int) or 1
    weights = params.get("weights_accessible", "yes") not in ("no", "false", "0")
    return Constraints(
        max_train_minutes=number("max_train_minutes"),
        max_memory_gb=number("max_memory_gb"),
        tasks=tasks,
        weights_accessible=weights,
    )


def finished_runs(folder: Path) -> list[dict]:
    records = load_results(folder)
    if not records:
        raise UiError(404, "this compare has no finished runs yet")
    return records


def largest_run(record: dict) -> tuple:
    """The order in which a strategy's run stands for it: the largest train size, then the first seed."""
    return record["run"]["train_size"], -record["run"]["seed"]


def recommendation(records: list[dict], c: Constraints) -> dict:
    rec = recommend(records, c)
    return {
        "winner": rec.winner,
        "metric": rec.metric,
        "target": rec.target,
        "ranked": rec.ranked,
        "excluded": rec.excluded,
        "reasons": rec.reasons,
        "next_steps": rec.next_steps,
        "paired": rec.paired,
        "baselines": rec.baselines,
        "constraints": dataclasses.asdict(c),
    }


def _front(points: list[dict], cost: str) -> None:
    """Mark the points no other point beats on both quality and ``cost``."""
    for p in points:
        p["front"] = not any(
            q is not p
            and q["quality"] >= p["quality"]
            and q[cost] <= p[cost]
            and (q["quality"] > p["quality"] or q[cost] < p[cost])
            for q in points
        )


def report_data(records: list[dict]) -> dict:
    from adaptlab.compare.baselines import ranking_metric

    rows = aggregate(records, ranking_metric(records)[0])  # the charts' axis is the metric the ranking uses
    curves: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: r.train_size):
        curves.setdefault(r.strategy, []).append(
            {"n": r.train_size, "quality": r.quality, "std": r.quality_std, "seeds": r.seeds}
        )
    target = max(r.train_size for r in rows)
    at = {}
    for r in rows:  # each strategy at its largest measured size (zero-shot has size 0)
        if r.strategy not in at or r.train_size > at[r.strategy].train_size:
            at[r.strategy] = r
    points = [
        {
            "strategy": s,
            "n": r.train_size,
            "quality": r.quality,
            "train_minutes": r.train_seconds / 60,
            "usd_per_1m": r.usd_per_1m,
            "peak_rss_gb": r.peak_rss_gb,
            "trainable_params": r.trainable_params,
            "artifact_mb": r.artifact_bytes / 1e6,
            "prompt_tokens": r.prompt_tokens,
        }
        for s, r in at.items()
    ]
    _front(points, "train_minutes")
    fragility = [
        {"strategy": s, "paraphrase_spread": r.paraphrase_spread, "perturbation_drop": r.perturbation_drop}
        for s, r in at.items()
        if r.paraphrase_spread is not None or r.perturbation_drop is not None
    ]
    forgetting = [
        {"strategy": s, "ppl_change": ppl_rise(r.ppl_change), "second_task_change": r.second_task_change}
        for s, r in at.items()
        if r.ppl_change is not None or r.second_task_change is not None
    ]
    return {
        "metric": rows[0].metric,
        "target": target,
        "curves": curves,
        "points": points,
        "fragility": fragility,
        "forgetting": forgetting,
        "runs": len(records),
    }


def examples(folder: Path, strategy: str | None, limit: int = 200) -> dict:
    """Test rows of ``strategy``'s run at its largest size, with every other strategy's output on the
    same row (runs pair on (id, input)), worst first."""
    records = [r for r in load_results(folder) if r.get("predictions")]
    if not records:
        return {"strategy": None, "rows": [], "others": []}
    best = best_per_strategy(records, largest_run)
    if strategy not in best:
        strategy = next(iter(best))
    others = {s: {row_key(p, i): p for i, p in enumerate(r["predictions"])} for s, r in best.items() if s != strategy}
    rows = []
    for i, p in sorted(enumerate(best[strategy]["predictions"]), key=lambda ip: ip[1]["metric"]):
        k = row_key(p, i)
        rows.append(
            {
                "input": p["input"],
                "reference": p["reference"],
                "output": p["output"],
                "metric": p["metric"],
                "others": {s: m[k]["output"] if k in m else None for s, m in others.items()},
            }
        )
    return {
        "strategy": strategy,
        "strategies": sorted(best),
        "others": sorted(others),
        "rows": rows[:limit],
        "total": len(rows),
    }
