"""Hosted and local candidates side by side, in one cost model.

A local candidate costs machine time (``price_per_hour`` over its measured predictions per second)
and its training (train seconds at the same price); a hosted one (``STRATEGY@ENDPOINT``) costs the
tokens its answers report at the endpoint's prices, and its fitting calls (a prompt search scores
dev there). The **break-even volume** of a local adaptation against a hosted prompt is the number of
predictions after which the local one's training plus serving costs less::

    n* = (train_local - train_hosted) / (per_prediction_hosted - per_prediction_local)

(none when the hosted prompt is as cheap per prediction). Also what the compare itself paid each
endpoint: calls, HTTP requests, answers read back from the response cache, tokens and dollars.
"""

from __future__ import annotations

from adaptlab.compare.recommend import AMORTIZE_MONTHS, at_volume
from adaptlab.compare.summary import Row, proposer_spend


def break_even(local: Row, hosted: Row) -> float | None:
    """Predictions after which ``local`` (training + serving) costs less than ``hosted``; None: never."""
    per = (hosted.usd_per_1m - local.usd_per_1m) / 1e6
    if per <= 0:
        return None
    return max(0.0, (local.train_usd - hosted.train_usd) / per)


def _count(n: float | None) -> str:
    if n is None:
        return "never (the hosted prompt costs less per prediction)"
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit} predictions"
    return f"{n:.0f} predictions"


def _latency(r: Row) -> str:
    if r.latency_p50_s is None:
        return "-"
    return f"{r.latency_p50_s:.2f} / {r.latency_p95_s:.2f}"


def comparison(best: dict[str, Row], volume: float | None) -> tuple[list[str], list[list[str]]]:
    """Rows of the hosted-vs-local table: every candidate at the size it is ranked at, best first;
    the break-even of each local one against the best hosted one."""
    hosted = [r for r in best.values() if r.endpoint]
    if not hosted:
        return [], []
    top_hosted = max(hosted, key=lambda r: r.quality)
    cols = [
        "candidate",
        "runs on",
        "quality",
        "$ per 1M predictions",
        "latency p50 / p95 s",
        "fitting $",
        f"break-even vs {top_hosted.strategy}",
    ]
    if volume:
        cols.append(f"$ a month at {volume:,.0f} (training over {AMORTIZE_MONTHS} months)")
    out = []
    for r in sorted(best.values(), key=lambda r: -r.quality):
        where = f"endpoint {r.endpoint} (token prices)" if r.endpoint else "local model (machine time)"
        row = [
            r.strategy,
            where,
            f"{r.quality:.3f}",
            f"{r.usd_per_1m:.2f}",
            _latency(r),
            f"{r.train_usd:.4f}",
            "-" if r.endpoint else _count(break_even(r, top_hosted)),
        ]
        if volume:  # the recommendation's cost at this volume, per month
            row.append(f"{at_volume([r], volume)[0].usd_per_1m * volume / 1e6:.2f}")
        out.append(row)
    return cols, out


SPEND_KEYS = ("calls", "http_requests", "cache_hits", "prompt_tokens", "completion_tokens", "cost_usd")


def spend_rows(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """What this compare paid each endpoint (fitting and scoring, every run)."""
    by: dict[str, dict] = {}
    for r in records:
        ev = r.get("eval") or {}
        parts = [
            (r["run"].get("endpoint"), p)
            for p in ((r.get("train") or {}).get("endpoint"), ev.get("endpoint"), ev.get("endpoint_extras"))
        ]
        proposer = proposer_spend(r)  # a proposer LM on an endpoint of its own (gepa's)
        if proposer:
            parts.append((proposer["endpoint"], proposer))
        for name, part in parts:
            if not name or not part:
                continue
            acc = by.setdefault(name, dict.fromkeys(SPEND_KEYS, 0))
            for k in acc:
                acc[k] += part.get(k, 0) or 0
    if not by:
        return [], []
    cols = [
        "endpoint",
        "calls",
        "HTTP requests (paid)",
        "answered from the cache",
        "prompt tokens paid",
        "completion tokens paid",
        "$ paid",
    ]
    rows = [
        [
            name,
            f"{a['calls']:,}",
            f"{a['http_requests']:,}",
            f"{a['cache_hits']:,}",
            f"{a['prompt_tokens']:,}",
            f"{a['completion_tokens']:,}",
            f"{a['cost_usd']:.4f}",
        ]
        for name, a in by.items()
    ]
    return cols, rows
