"""Aggregate run records (mean and std over seeds) into rows per strategy x train size."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from adaptlab.compare.record import RunRecord, records_of


def best_per_strategy(records: list[dict], key) -> dict[str, dict]:
    """Each strategy's record with the highest ``key(record)`` (the first of equals)."""
    out: dict[str, dict] = {}
    for r in records:
        s = r["run"]["strategy"]
        if s not in out or key(r) > key(out[s]):
            out[s] = r
    return out


def ppl_rise(change: float | None, signed: bool = True) -> str:
    """A relative perplexity change as people read it: +35.0%, or 2,460x once past 10x (where
    "+245881.4%" is unreadable)."""
    if change is None:
        return "-"
    if change < 9:
        return f"{100 * change:+.1f}%" if signed else f"{100 * change:.0f}%"
    return f"{change + 1:,.0f}x"


@dataclass
class Row:
    strategy: str
    kind: str
    train_size: int
    seeds: int
    quality: float
    quality_std: float
    macro_f1: float | None
    chrf: float | None  # generation tasks: corpus chrF (0-1)
    train_seconds: float
    peak_rss_gb: float
    trainable_params: int
    artifact_bytes: int
    examples_per_s: float
    prompt_tokens: float
    usd_per_1m: float
    overfit_gap: float | None
    stopped_early: int
    steps: float | None  # optimizer steps taken (mean over seeds)
    best_step: float | None  # step of the best dev score, whose weights the run keeps
    paraphrase_spread: float | None
    perturbation_drop: float | None
    ppl_change: float | None
    second_task_change: float | None
    metric: str
    test_n: int | None = None  # held-out examples scored (the fewest over seeds); None if not recorded
    agreement: float | None = None  # consistency under sampling, classification: samples agreeing with the mode
    pairwise_similarity: float | None = None  # generation: ROUGE-L between two samples of one input
    metric_spread: float | None = None  # generation: std of the samples' ROUGE-L per input
    accuracy: float | None = None  # classification: accuracy, whatever the ranking metric
    predicted: bool = False  # not measured at this size: quality is the learning curve's prediction
    lo: float | None = None  # the prediction's pessimistic / optimistic bounds (predicted rows)
    hi: float | None = None
    train_usd: float = 0.0  # what fitting cost: machine time at its price, or an endpoint's calls
    endpoint: str | None = None  # a hosted candidate's endpoint (STRATEGY@ENDPOINT)
    latency_p50_s: float | None = None  # seconds per request: an endpoint's answers, or a local one alone
    latency_p95_s: float | None = None
    no_label: int = 0  # test answers that named no label (scored wrong), summed over seeds


def train_usd(r) -> float:
    """A run's fitting cost: its train seconds at the machine price, or what its calls to an endpoint
    cost at the endpoint's prices (uncached: what a first run pays), plus a proposer LM's calls on an
    endpoint of its own (gepa's)."""
    r = RunRecord.of(r)
    proposer = float((proposer_spend(r) or {}).get("uncached_cost_usd") or 0.0)
    if r.endpoint:
        return float((r.train.get("endpoint") or {}).get("uncached_cost_usd") or 0.0) + proposer
    from adaptlab.evaluation.cost import DEFAULT_PRICE_PER_HOUR

    price = r.cost.get("price_per_hour")
    return r.fit_seconds / 3600 * (price if price is not None else DEFAULT_PRICE_PER_HOUR) + proposer


def proposer_spend(r) -> dict | None:
    """What a run's proposer LM cost on its endpoint, when that is not the endpoint the run prompts
    (whose fitting spend has the proposer's calls already)."""
    r = RunRecord.of(r)
    spent = (r.train.get("proposer") or {}).get("spend")
    if not spent or spent.get("endpoint") == r.endpoint:
        return None
    return spent


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _latency(r: RunRecord) -> dict:
    """A run's latency per request: an endpoint's answers, or a local artifact's one-at-a-time rows."""
    return r.eval.get("endpoint") or r.eval.get("latency") or {}


def aggregate(records: list, metric: str | None = None) -> list[Row]:
    """Rows per strategy x train size; ``metric`` "macro_f1" ranks classification by macro-F1
    (:func:`adaptlab.compare.baselines.ranking_metric`), else each run's own quality metric."""
    groups: dict[tuple, list[RunRecord]] = {}
    for r in records_of(records):
        groups.setdefault((r.strategy, r.train_size), []).append(r)
    rows = []
    for (strategy, size), rs in sorted(groups.items()):
        q = [r.ranked_quality(metric) for r in rs]
        frag = [r.eval.get("fragility") or {} for r in rs]
        forg = [r.eval.get("forgetting") or {} for r in rs]
        cons = [r.eval.get("consistency") or {} for r in rs]
        rows.append(
            Row(
                strategy=strategy,
                kind=rs[0].kind,
                train_size=size,
                seeds=len(rs),
                quality=statistics.fmean(q),
                quality_std=statistics.pstdev(q) if len(q) > 1 else 0.0,
                macro_f1=_mean([r.test.get("macro_f1") for r in rs]),
                chrf=_mean([r.test.get("chrf") for r in rs]),
                train_seconds=statistics.fmean(r.fit_seconds for r in rs),
                peak_rss_gb=max(r.train["peak_rss_bytes"] for r in rs) / 2**30,
                trainable_params=rs[0].train["trainable_params"],
                artifact_bytes=int(statistics.fmean(r.artifact_bytes for r in rs)),
                examples_per_s=statistics.fmean(r.eval["examples_per_s"] for r in rs),
                prompt_tokens=statistics.fmean(r.eval["prompt_tokens"] for r in rs),
                usd_per_1m=statistics.fmean(r.cost["usd_per_1m"] for r in rs),
                overfit_gap=_mean([r.eval.get("overfit_gap") for r in rs]),
                stopped_early=sum(bool(r.train.get("stopped_early")) for r in rs),
                steps=_mean([r.train.get("steps") or None for r in rs]),
                best_step=_mean([r.train.get("best_step") for r in rs]),
                paraphrase_spread=_mean([f.get("paraphrase_spread") for f in frag]),
                perturbation_drop=_mean([f.get("perturbation_drop") for f in frag]),
                ppl_change=_mean([f.get("ppl_change") for f in forg]),
                second_task_change=_mean([f.get("second_task_change") for f in forg]),
                metric="macro_f1" if metric == "macro_f1" else rs[0].metric,
                test_n=min(ns) if all(ns := [r.test.get("n") for r in rs]) else None,
                agreement=_mean([c.get("agreement") for c in cons]),
                pairwise_similarity=_mean([c.get("pairwise_similarity") for c in cons]),
                metric_spread=_mean([c.get("metric_spread") for c in cons]),
                accuracy=_mean([r.test.get("accuracy") for r in rs]),
                train_usd=statistics.fmean(train_usd(r) for r in rs),
                endpoint=rs[0].endpoint,
                latency_p50_s=_mean([_latency(r).get("latency_p50_s") for r in rs]),
                latency_p95_s=_mean([_latency(r).get("latency_p95_s") for r in rs]),
                no_label=sum(int(r.test.get("unparsed") or 0) for r in rs),
            )
        )
    return rows


def largest(rows: list[Row]) -> dict[str, Row]:
    """Each strategy at the largest train size it was measured at."""
    out: dict[str, Row] = {}
    for r in rows:
        if r.strategy not in out or r.train_size > out[r.strategy].train_size:
            out[r.strategy] = r
    return out


def compared(rows: list[Row]) -> tuple[dict[str, Row], int | None]:
    """The row per strategy that the recommendation ranks, and the train size it ranks at.

    Every strategy at the largest train size all of them were measured at (zero-shot, which uses no
    training data, counts at every size), so that a grid cut short by ``--budget`` (or still being
    resumed) compares like with like instead of one strategy at 1000 examples with another at 64.
    When the strategies share no size, each is taken at its largest and the size is None."""
    sizes: dict[str, set[int]] = {}
    for r in rows:
        if r.train_size:
            sizes.setdefault(r.strategy, set()).add(r.train_size)
    common = set.intersection(*sizes.values()) if sizes else set()
    if not common:
        return largest(rows), None
    n = max(common)
    return {r.strategy: r for r in rows if r.train_size in (0, n)}, n


def crossovers(rows: list[Row]) -> list[dict]:
    """For each gradient strategy: the smallest train size where it beats the best prompt strategy
    measured at that size (zero-shot counts at every size)."""
    prompt_by_size: dict[int, Row] = {}
    zero = [r for r in rows if r.kind == "prompt" and r.train_size == 0]
    sizes = sorted({r.train_size for r in rows if r.train_size})
    for n in sizes:
        cands = [r for r in rows if r.kind == "prompt" and r.train_size == n] + zero
        if cands:
            prompt_by_size[n] = max(cands, key=lambda r: r.quality)
    out = []
    for strat in sorted({r.strategy for r in rows if r.kind == "gradient"}):
        mine = {r.train_size: r for r in rows if r.strategy == strat}
        at = next(
            (n for n in sizes if n in mine and n in prompt_by_size and mine[n].quality > prompt_by_size[n].quality),
            None,
        )
        if at is not None:
            p = prompt_by_size[at]
            out.append(
                {
                    "strategy": strat,
                    "train_size": at,
                    "over": p.strategy,
                    "quality": mine[at].quality,
                    "over_quality": p.quality,
                }
            )
        else:
            out.append({"strategy": strat, "train_size": None, "over": None})
    return out
