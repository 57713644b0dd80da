"""The recommendation: explicit rules over the measured rows, each one tested firing and not firing.

Rules, in order (README "Recommendation rules" summarises them for users):

1. ``weights``      weights not accessible -> only prompt strategies are eligible.
2. ``train_time``   a strategy whose training took longer than --max-train-minutes is excluded.
3. ``memory``       a strategy whose peak RSS exceeded --max-memory GB is excluded.
4. ``min_quality``  a strategy below --min-quality is excluded; if none is left, say so.
5. ``near_tie``     rank by quality at the largest train size every strategy was measured at (each
                    at its largest if they share none; rules 2-4 judge the same rows); a runner-up
                    within the tolerance wins when it costs at least 20% less per 1M predictions, or
                    no more per 1M predictions and at most half the training time (the cheapest such
                    wins). Tolerance: max(1 point, the leader's seed std, for accuracy the test
                    set's sampling error sqrt(p(1-p)/n)), at most 3 points.
6. ``many_tasks``   serving N tasks from one base: a winner whose artifact is a model copy (>= 100 MB)
                    costs N copies; an adapter or prompt within 2 points wins instead.
7. ``prompt_cost``  the winner is a hard prompt and a trained strategy within 2 points needs 3x+
                    fewer prompt tokens: noted as the cheaper way to serve at volume.
Next steps: ``still_learning`` (quality still rises > 1 point between the two largest sizes: more
data helps), ``try_hybrid`` (hybrid not measured), ``fragile`` (paraphrase spread > 5 points),
``forgetting`` (general-text perplexity up > 20%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from adaptlab.compare.summary import Row, aggregate, compared, crossovers, ppl_rise
from adaptlab.strategies.registry import get_strategy, list_strategies


@dataclass
class Constraints:
    max_train_minutes: float | None = None
    max_memory_gb: float | None = None
    tasks: int = 1
    weights_accessible: bool = True
    min_quality: float | None = None


@dataclass
class Recommendation:
    ranked: list[dict] = field(default_factory=list)
    excluded: list[dict] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)

    @property
    def winner(self) -> str | None:
        return self.ranked[0]["strategy"] if self.ranked else None

    def to_markdown(self) -> str:
        if not self.ranked:
            lines = ["**No strategy meets the constraints.**"]
        else:
            lines = [f"**Recommended: {self.ranked[0]['strategy']}** (train size {self.ranked[0]['train_size']})."]
        lines += [f"- {r}" for r in self.reasons]
        if len(self.ranked) > 1:
            lines.append("")
            # Numbered, not "a > b": a rule may put a cheaper strategy above a slightly better one, and
            # "lora (0.894) > hybrid (0.896)" would read as an error.
            lines.append("Ranking: " + ", ".join(
                f"{i}. {r['strategy']} ({r['quality']:.3f}" + (f", by rule {r['promoted_by']}" if r.get("promoted_by") else "")
                + ")" for i, r in enumerate(self.ranked, 1)))
        if self.excluded:
            lines.append("")
            lines += [f"- excluded {e['strategy']}: {e['why']}" for e in self.excluded]
        if self.next_steps:
            lines += ["", "What to try next:"] + [f"- {s}" for s in self.next_steps]
        return "\n".join(lines)


def _pts(x: float) -> str:
    return f"{100 * x:+.1f} points"


def _mb(b: float) -> str:
    return f"{b / 1e6:.1f} MB" if b < 1e9 else f"{b / 1e9:.2f} GB"


NEAR_TIE_MIN, NEAR_TIE_MAX = 0.01, 0.03


def _tolerance(lead: Row) -> tuple[float, str]:
    """How far below the leader a runner-up still counts as tied, and which noise set it.

    The largest of 1 point, the leader's std over seeds, and for accuracy the test set's sampling
    error sqrt(p(1-p)/n) (385 Banking77 rows at 0.72: 2.3 points, more than two seeds' spread shows),
    capped at 3 points so that a tiny test set cannot make every strategy "tied"."""
    noise = [(NEAR_TIE_MIN, "1 point"), (lead.quality_std, "the leader's seed std")]
    if lead.metric == "accuracy" and lead.test_n:
        se = math.sqrt(max(lead.quality * (1 - lead.quality), 0.0) / lead.test_n)
        noise.append((se, f"the sampling error of {lead.test_n} test examples"))
    tol, why = max(noise, key=lambda t: t[0])
    if tol > NEAR_TIE_MAX:
        return NEAR_TIE_MAX, f"{why}, capped at {100 * NEAR_TIE_MAX:.0f} points"
    return tol, why


def _cheaper(r: Row, lead: Row) -> bool:
    """At least 20% cheaper per 1M predictions, or no dearer to serve and at most half the training time."""
    return (r.usd_per_1m < 0.8 * lead.usd_per_1m
            or (r.usd_per_1m <= lead.usd_per_1m and r.train_seconds <= 0.5 * lead.train_seconds))


def _promote(rec: Recommendation, ranked: list[Row], alt: Row, rule: str, reason: str,
             promoted: dict[str, str]) -> Row:
    """Move ``alt`` to the top of ``ranked`` because ``rule`` fired; returns the new leader."""
    promoted[alt.strategy] = rule
    rec.fired.append(rule)
    rec.reasons.append(reason)
    ranked.remove(alt)
    ranked.insert(0, alt)
    return alt


def _exclusion(r: Row, c: Constraints) -> tuple[str, str] | None:
    """(why, rule) when ``r`` breaks a constraint, else None."""
    if not c.weights_accessible and r.kind != "prompt":
        return "the model's weights are not accessible (API-only): only prompts apply", "weights"
    if c.max_train_minutes is not None and r.train_seconds / 60 > c.max_train_minutes:
        return f"training took {r.train_seconds / 60:.1f} min > {c.max_train_minutes:g} min", "train_time"
    if c.max_memory_gb is not None and r.peak_rss_gb > c.max_memory_gb:
        return f"peak memory {r.peak_rss_gb:.2f} GB > {c.max_memory_gb:g} GB", "memory"
    if c.min_quality is not None and r.quality < c.min_quality:
        return f"{r.metric} {r.quality:.3f} < required {c.min_quality:g}", "min_quality"
    return None


def _eligible(rec: Recommendation, best: dict[str, Row], c: Constraints) -> list[Row]:
    """Rule weights / train_time / memory / min_quality: the rows that meet every constraint."""
    eligible = []
    for r in best.values():
        out = _exclusion(r, c)
        if out is None:
            eligible.append(r)
            continue
        why, rule = out
        rec.excluded.append({"strategy": r.strategy, "why": why, "rule": rule})
        if rule not in rec.fired:
            rec.fired.append(rule)
    return eligible


def _none_eligible(rec: Recommendation, best: dict[str, Row], c: Constraints) -> Recommendation:
    top = max(best.values(), key=lambda r: r.quality)
    rec.reasons.append(f"no strategy meets the constraints; the best measured is {top.strategy} with "
                       f"{top.metric} {top.quality:.3f} at {top.train_size} examples")
    if c.min_quality is not None and top.quality < c.min_quality:
        rec.next_steps.append(f"collect more labelled data or use a larger base model: the best quality "
                              f"{top.quality:.3f} is below the required {c.min_quality:g}")
    return rec


def _rule_near_tie(rec: Recommendation, ranked: list[Row], lead: Row, promoted: dict) -> Row:
    """A cheaper runner-up within noise wins."""
    if len(ranked) < 2:
        return lead
    tol, why_tol = _tolerance(lead)
    cheaper = [r for r in ranked[1:] if lead.quality - r.quality <= tol + 1e-9 and _cheaper(r, lead)]
    if not cheaper:
        return lead
    alt = min(cheaper, key=lambda r: (r.usd_per_1m, r.train_seconds))
    return _promote(rec, ranked, alt, "near_tie",
                    f"{alt.strategy} is within {_pts(lead.quality - alt.quality)[1:]} of {lead.strategy} "
                    f"(inside the tolerance {100 * tol:.1f}, {why_tol}) and costs ${alt.usd_per_1m:.2f} vs "
                    f"${lead.usd_per_1m:.2f} per 1M predictions, {alt.train_seconds / 60:.1f} vs "
                    f"{lead.train_seconds / 60:.1f} min to fit", promoted)


def _rule_many_tasks(rec: Recommendation, ranked: list[Row], lead: Row, c: Constraints, promoted: dict) -> Row:
    """N full model copies vs adapters on one shared base."""
    if c.tasks <= 1 or lead.artifact_bytes < 100e6:  # not a model copy per task
        return lead
    small = [r for r in ranked[1:] if r.artifact_bytes < 100e6 and lead.quality - r.quality <= 0.02 + 1e-9]
    if not small:
        return lead
    alt = max(small, key=lambda r: r.quality)
    return _promote(rec, ranked, alt, "many_tasks",
                    f"serving {c.tasks} tasks: {lead.strategy} needs {c.tasks} x {_mb(lead.artifact_bytes)} = "
                    f"{_mb(c.tasks * lead.artifact_bytes)}, {alt.strategy} {c.tasks} x "
                    f"{_mb(alt.artifact_bytes)} on one shared base, for {_pts(alt.quality - lead.quality)}", promoted)


def _lead_reasons(rec: Recommendation, rows: list[Row], best: dict[str, Row], lead: Row, size) -> None:
    """Reasons that cite the numbers: the leader's, the best prompt's, and the size ranked at."""
    prompts = [r for r in best.values() if r.kind == "prompt" and r is not lead]
    bp = max(prompts, key=lambda r: r.quality) if prompts else None
    rec.reasons.insert(0, f"{lead.strategy}: {lead.metric} {lead.quality:.3f}"
                          + (f" ± {lead.quality_std:.3f}" if lead.seeds > 1 else "")
                          + f" at {lead.train_size} examples, {lead.train_seconds / 60:.1f} min to fit, "
                          f"{_mb(lead.artifact_bytes)} artifact, {lead.prompt_tokens:.0f} prompt tokens per request, "
                          f"${lead.usd_per_1m:.2f} per 1M predictions")
    if bp is not None and lead.kind == "gradient":
        ratio = bp.prompt_tokens / max(1.0, lead.prompt_tokens)
        rec.reasons.insert(1, f"{_pts(lead.quality - bp.quality)} over the best prompt ({bp.strategy}, "
                              f"{bp.quality:.3f}); {bp.strategy} sends {ratio:.1f}x the prompt tokens per request")
    beyond = sorted({r.strategy for r in rows if size is not None and r.train_size > size})
    if beyond:
        rec.reasons.append(f"ranked at {size} examples, the largest train size every strategy was measured at; "
                           f"{', '.join(beyond)} also measured at larger sizes (see quality by train size)")
    elif size is None and len({r.train_size for r in best.values() if r.train_size}) > 1:
        rec.reasons.append("the strategies share no train size: each is ranked at the largest it was measured at")


def _rule_prompt_cost(rec: Recommendation, eligible: list[Row], lead: Row) -> None:
    """A hard prompt wins but a trained strategy nearly ties with far fewer tokens."""
    if lead.kind != "prompt":
        return
    alts = [r for r in eligible if r.kind == "gradient" and lead.quality - r.quality <= 0.02 + 1e-9
            and r.prompt_tokens * 3 <= lead.prompt_tokens]
    if alts:
        alt = max(alts, key=lambda r: r.quality)
        rec.fired.append("prompt_cost")
        rec.reasons.append(f"at volume consider {alt.strategy}: {_pts(alt.quality - lead.quality)} with "
                           f"{alt.prompt_tokens:.0f} instead of {lead.prompt_tokens:.0f} prompt tokens per request")


def _next_steps(rec: Recommendation, rows: list[Row], best: dict[str, Row], lead: Row) -> None:
    """Rules still_learning, try_stacked, fragile, forgetting; and the crossovers between strategies."""
    curve = sorted((r for r in rows if r.strategy == lead.strategy and r.train_size), key=lambda r: r.train_size)
    if len(curve) >= 2 and curve[-1].quality - curve[-2].quality > 0.01:
        rec.fired.append("still_learning")
        rec.next_steps.append(f"more data: {lead.strategy} rose {_pts(curve[-1].quality - curve[-2].quality)} from "
                              f"{curve[-2].train_size} to {curve[-1].train_size} examples and has not levelled off")
    stacked = [n for n in list_strategies() if get_strategy(n).stacks]
    if stacked and not any(n in best for n in stacked) and any(r.kind == "gradient" for r in best.values()):
        rec.fired.append("try_hybrid")
        rec.next_steps.append(f"try {' or '.join(stacked)} (fine-tune, then a soft prompt or few-shot exemplars on "
                              f"top): not measured")
    if lead.paraphrase_spread is not None and lead.paraphrase_spread > 0.05:
        rec.fired.append("fragile")
        rec.next_steps.append(f"{lead.strategy} is prompt-sensitive: {_pts(lead.paraphrase_spread)[1:]} between its "
                              f"best and worst wording; pin the template and test changes to it")
    if lead.ppl_change is not None and lead.ppl_change > 0.20:
        rec.fired.append("forgetting")
        rec.next_steps.append(f"{lead.strategy} raised general-text perplexity by {ppl_rise(lead.ppl_change, signed=False)}: "
                              f"keep the base model for other tasks (adapters do this by design)")
    for x in crossovers(rows):
        if x["train_size"] is not None:
            rec.reasons.append(f"{x['strategy']} overtakes {x['over']} from {x['train_size']} examples "
                               f"({x['quality']:.3f} vs {x['over_quality']:.3f})")


def recommend(records: list[dict], c: Constraints) -> Recommendation:
    """Rank the strategies at the size all reached, under the constraints, then apply the rules."""
    rec = Recommendation()
    rows = aggregate(records)
    if not rows:
        rec.reasons.append("no finished runs")
        return rec
    best, size = compared(rows)
    eligible = _eligible(rec, best, c)
    if not eligible:
        return _none_eligible(rec, best, c)
    ranked = sorted(eligible, key=lambda r: (-r.quality, r.usd_per_1m))
    promoted: dict[str, str] = {}  # strategy -> the rule that moved it to the top
    lead = _rule_near_tie(rec, ranked, ranked[0], promoted)
    lead = _rule_many_tasks(rec, ranked, lead, c, promoted)
    _lead_reasons(rec, rows, best, lead, size)
    _rule_prompt_cost(rec, eligible, lead)
    rec.ranked = [{"strategy": r.strategy, "train_size": r.train_size, "quality": r.quality,
                   "usd_per_1m": r.usd_per_1m, "promoted_by": promoted.get(r.strategy)} for r in ranked]
    _next_steps(rec, rows, best, lead)
    return rec
