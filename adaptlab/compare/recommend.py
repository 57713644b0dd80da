"""The recommendation: explicit rules over the measured rows, each one tested firing and not firing.

Rules, in order (README "Recommendation rules" summarises them for users):

1. ``weights``      weights not accessible -> only prompt strategies are eligible.
2. ``train_time``   a strategy whose training took longer than --max-train-minutes is excluded.
3. ``memory``       a strategy whose peak RSS exceeded --max-memory GB is excluded.
4. ``min_quality``  a strategy below --min-quality is excluded; if none is left, say so.
5. ``measured``     rank by quality at the target size (the largest measured); a strategy not
                    measured there is ranked by its learning curve's prediction and marked so (rules
                    2-4 judge the same rows), but the answer is always one measured there: a
                    prediction ranked above it is named with its bounds. Unless its own measurement
                    already beats it: one measured at a smaller size whose pessimistic bound is above
                    the best measured there is the answer, on that measurement (confirm it there).
6. ``near_tie``     a tie goes to the adaptation that is easier to own: among the measured runner-ups
                    tied with the leader, a 10x smaller artifact (an adapter or prompt over a model
                    copy) wins, then a serving cost lower by more than its noise (25%), then at most
                    half the training time; the reason names the rule that decided. Tied: within 1
                    point, or not significantly worse on the paired test rows (the paired bootstrap
                    interval of leader - runner-up includes 0) and within 3 points. Runs without
                    stored rows fall back to max(1 point, the leader's seed std, the test set's
                    sampling error sqrt(p(1-p)/n)), at most 3 points.
7. ``many_tasks``   serving N tasks from one base: a winner whose artifact is a model copy (>= 100 MB)
                    costs N copies; an adapter or prompt within 2 points wins instead.
8. ``prompt_enough`` prompting is an answer: when a prompt-only candidate (no weights trained, on a
                    local base or an endpoint) is not significantly worse than the best trained one by
                    more than the user's margin (--prompt-margin, default 2 points: the paired interval
                    of trained - prompt reaches down to the margin or below), the prompt is recommended
                    (when a trained one leads) or its lead is taken as settled (when it leads itself),
                    since there is nothing to retrain when the base model or the data changes; the
                    reasons say what training would add and at what cost. When the interval lies wholly
                    above the margin, ``training_wins`` says by how much. Not while a trained candidate
                    not measured at the target could still beat the prompt by more than the margin
                    (its band's optimistic bound): the reasons name it.
9. ``prompt_cost``  the winner is a hard prompt and a trained strategy within 2 points needs 3x+
                    fewer prompt tokens: noted as the cheaper way to serve at volume.
Next steps: ``still_learning`` (quality still rises > 1 point between the two largest sizes: more
data helps), ``try_hybrid`` (hybrid not measured), ``fragile`` (paraphrase spread > 5 points),
``forgetting`` (general-text perplexity up > 20%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from adaptlab.compare.baselines import ranking_metric
from adaptlab.compare.curves import CurveFit, fit_all
from adaptlab.compare.record import RunRecord, records_of
from adaptlab.compare.stats import CONFIDENCE, PairedDiff, above_baseline, compare_runs
from adaptlab.compare.summary import Row, aggregate, crossovers, largest, ppl_rise
from adaptlab.strategies.registry import get_strategy, list_strategies


@dataclass
class Constraints:
    max_train_minutes: float | None = None
    max_memory_gb: float | None = None
    tasks: int = 1
    weights_accessible: bool = True
    min_quality: float | None = None
    volume: float | None = None  # predictions per month: serving costs count training at it
    # Rule prompt_enough: how much quality the user gives up to own a prompt instead of trained weights
    # (in the ranking metric's units: 0.02 is 2 points).
    prompt_margin: float = 0.02

    def __post_init__(self):
        if not 0 <= self.prompt_margin < 1:
            raise ValueError(f"prompt margin {self.prompt_margin}: must be in [0, 1) (0.02 is 2 points)")


PROMPT_MARGIN = Constraints.prompt_margin


def constraints_for(cfg) -> Constraints:
    """The constraints a compare was run with (its volume and prompt margin; no other limits)."""
    return Constraints(volume=cfg.volume, prompt_margin=cfg.prompt_margin)


# A volume's costs count each candidate's training once over this many months of that volume.
AMORTIZE_MONTHS = 12


def at_volume(rows: list[Row], volume: float | None) -> list[Row]:
    """``rows`` with ``usd_per_1m`` counting training too: its cost spread over AMORTIZE_MONTHS of
    ``volume`` predictions a month (the cost per 1M a user pays at that volume); unchanged without one."""
    if not volume:
        return rows
    return [replace(r, usd_per_1m=r.usd_per_1m + r.train_usd * 1e6 / (AMORTIZE_MONTHS * volume)) for r in rows]


@dataclass
class Recommendation:
    metric: str = "accuracy"
    target: int | None = None  # the train size ranked at
    ranked: list[dict] = field(default_factory=list)
    excluded: list[dict] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)
    paired: list[dict] = field(default_factory=list)  # leader minus each measured runner-up, with its interval
    baselines: dict = field(default_factory=dict)  # classification: majority class and chance
    fits: dict = field(default_factory=dict)  # strategy -> learning-curve fit at the target (dicts)

    @property
    def winner(self) -> str | None:
        return self.ranked[0]["strategy"] if self.ranked else None

    def to_markdown(self) -> str:
        if not self.ranked:
            lines = ["**No strategy meets the constraints.**"]
        else:
            top = self.ranked[0]
            lines = [
                f"**Recommended: {top['strategy']}** (train size {top['train_size']}"
                + (", predicted from its learning curve, not measured there" if top.get("predicted") else "")
                + ")."
            ]
        lines += [f"- {r}" for r in self.reasons]
        if len(self.ranked) > 1:
            lines.append("")
            # Numbered, not "a > b": a rule may put a cheaper strategy above a slightly better one, and
            # "lora (0.894) > hybrid (0.896)" would read as an error.
            lines.append(
                "Ranking: "
                + ", ".join(
                    f"{i}. {r['strategy']} ({_shown(r, self.target)}"
                    + (f", by rule {r['promoted_by']}" if r.get("promoted_by") else "")
                    + ")"
                    for i, r in enumerate(self.ranked, 1)
                )
            )
        if self.excluded:
            lines.append("")
            lines += [f"- excluded {e['strategy']}: {e['why']}" for e in self.excluded]
        if self.next_steps:
            lines += ["", "What to try next:"] + [f"- {s}" for s in self.next_steps]
        return "\n".join(lines)


def _shown(r: dict, target) -> str:
    """A ranked row's quality as what it is: measured, or a prediction with its band (a prediction's
    centre alone reads as a measurement and invites a lead nothing measured)."""
    if not r.get("predicted"):
        return f"{r['quality']:.3f}"
    band = f", band {r['lo']:.3f}-{r['hi']:.3f}" if r.get("lo") is not None and r.get("hi") is not None else ""
    return f"not measured at {target}: predicted {r['quality']:.3f}{band}"


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


# Serving cost differences below this share are noise: two seeds of one strategy and size differ by
# a median 5% in cost per 1M predictions in the committed SST-2 and Banking77 grids, and by 18% and 47%
# at their 90th percentiles (one run's examples/s on a shared 2-core machine).
COST_NOISE = 0.25
ARTIFACT_FACTOR = 10.0  # "smaller by a large factor": an adapter or prompt against a model copy
TRAIN_FACTOR = 0.5  # shorter training counts at half the time or less


def easier_to_own(a: Row, b: Row) -> str | None:
    """Why ``a`` is easier to own than ``b`` (the rule that decides), or None: a smaller artifact by a
    large factor, then a lower serving cost beyond its noise, then at most half the training time."""
    if a.artifact_bytes * ARTIFACT_FACTOR <= b.artifact_bytes:
        return f"a {b.artifact_bytes / max(a.artifact_bytes, 1):.0f}x smaller artifact ({_mb(a.artifact_bytes)} vs {_mb(b.artifact_bytes)})"
    if b.artifact_bytes * ARTIFACT_FACTOR <= a.artifact_bytes:
        return None
    if a.usd_per_1m < (1 - COST_NOISE) * b.usd_per_1m:
        return f"a lower serving cost (${a.usd_per_1m:.2f} vs ${b.usd_per_1m:.2f} per 1M predictions)"
    if b.usd_per_1m < (1 - COST_NOISE) * a.usd_per_1m:
        return None
    if a.train_seconds <= TRAIN_FACTOR * b.train_seconds:
        return f"shorter training ({a.train_seconds / 60:.1f} vs {b.train_seconds / 60:.1f} min)"
    return None


def _promote(rec: Recommendation, ranked: list[Row], alt: Row, rule: str, reason: str, promoted: dict[str, str]) -> Row:
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
    rec.reasons.append(
        f"no strategy meets the constraints; the best measured is {top.strategy} with "
        f"{top.metric} {top.quality:.3f} at {top.train_size} examples"
    )
    if c.min_quality is not None and top.quality < c.min_quality:
        rec.next_steps.append(
            f"collect more labelled data or use a larger base model: the best quality "
            f"{top.quality:.3f} is below the required {c.min_quality:g}"
        )
    return rec


def _tied(rec: Recommendation, lead: Row, r: Row, groups: dict) -> tuple[bool, str] | None:
    """Whether ``r`` is tied with ``lead`` on their paired test rows, and the interval as words; None
    when either lacks stored rows (or ``r`` is a prediction)."""
    if r.predicted or lead.predicted:
        return None
    d = _paired(rec, lead, r, groups)
    if d is None:
        return None
    gap = lead.quality - r.quality
    ci = f"{_pts(d.diff)[1:]}, {100 * d.confidence:.0f}% interval [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}] on {d.n} paired rows"
    if gap <= NEAR_TIE_MIN + 1e-9:
        return True, f"within 1 point ({ci})"
    if d.lo <= 0 and gap <= NEAR_TIE_MAX + 1e-9:
        return True, f"not significantly worse ({ci})"
    return False, ci


def _paired(rec: Recommendation, a: Row, b: Row, groups: dict) -> PairedDiff | None:
    """a minus b on their paired rows (cached in rec.paired)."""
    for p in rec.paired:
        if p["a"] == a.strategy and p["b"] == b.strategy:
            return PairedDiff(**{k: p[k] for k in ("diff", "lo", "hi", "n", "confidence", "p_mcnemar")})
    ra, rb = groups.get((a.strategy, a.train_size)), groups.get((b.strategy, b.train_size))
    if not ra or not rb:
        return None
    d = compare_runs(ra, rb, rec.metric, confidence=CONFIDENCE)
    if d is not None:
        rec.paired.append(
            {"a": a.strategy, "b": b.strategy, "a_size": a.train_size, "b_size": b.train_size, **d.to_dict()}
        )
    return d


def _rule_near_tie(rec: Recommendation, ranked: list[Row], lead: Row, promoted: dict, groups: dict) -> Row:
    """A tie goes to the adaptation that is easier to own (:func:`easier_to_own`): among the measured
    runner-ups tied with the leader, the one that beats every other tied one on ownership wins."""
    if len(ranked) < 2:
        return lead
    tol, why_tol = _tolerance(lead)
    tied = []
    for r in ranked[1:]:
        t = _tied(rec, lead, r, groups)
        if t is None:  # no stored rows: the old tolerance
            t = (
                not r.predicted and lead.quality - r.quality <= tol + 1e-9,
                f"inside the tolerance {100 * tol:.1f}, {why_tol}",
            )
        if t[0]:
            tied.append((r, t[1]))
    best, best_why, rule = lead, None, None
    for r, why in tied:
        because = easier_to_own(r, best)
        if because is not None:
            best, best_why, rule = r, why, because
    if best is lead:
        return lead
    return _promote(
        rec,
        ranked,
        best,
        "near_tie",
        f"{best.strategy} is within {_pts(lead.quality - best.quality)[1:]} of {lead.strategy} "
        f"({best_why}); a tie goes to the adaptation that is easier to own, decided by {rule}",
        promoted,
    )


def _rule_prompt_enough(
    rec: Recommendation, ranked: list[Row], lead: Row, c: Constraints, promoted: dict, groups: dict
) -> Row:
    """Prompting is enough when the best prompt-only candidate is not significantly worse than the best
    trained one by more than ``c.prompt_margin`` (the paired interval of trained minus prompt reaches
    down to the margin): recommended when a trained one leads, and the tie the noise leaves open is
    settled for it when it leads itself. Else say by how much training wins."""
    prompts = [r for r in ranked if r.kind == "prompt" and not r.predicted]
    trained = [r for r in ranked if r.kind != "prompt" and not r.predicted]
    if lead.predicted or not prompts or not trained:
        return lead
    best_t = lead if lead.kind != "prompt" else max(trained, key=lambda r: r.quality)
    candidates = [lead] if lead.kind == "prompt" else sorted(prompts, key=lambda r: -r.quality)
    margin = f"{100 * c.prompt_margin:.0f}-point margin"
    for p in candidates:
        d = _paired(rec, best_t, p, groups)
        low = d.lo if d is not None else best_t.quality - p.quality  # no stored rows: the point gap
        if low > c.prompt_margin + 1e-9:
            continue
        if _trained_still_open(rec, ranked, p, c, margin):
            return lead
        gap = best_t.quality - p.quality
        interval = (
            f"{100 * d.confidence:.0f}% interval [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}] on {d.n} paired rows"
            if d is not None
            else "no paired rows stored"
        )
        why = (
            f"prompting is enough: {p.strategy} ({p.quality:.3f}) is not significantly worse than the best "
            f"trained candidate, {best_t.strategy} ({best_t.quality:.3f}), by more than the {margin} "
            f"(--prompt-margin; {best_t.strategy} minus {p.strategy}: {_pts(gap)}, {interval}), and a prompt has "
            f"nothing to retrain when the base model or the data changes. Training ({best_t.strategy}) would "
            f"change quality by {_pts(gap)}"
            + (f" (at most {_pts(d.hi)})" if d is not None else "")
            + f" for {best_t.train_seconds / 60:.1f} min of fitting, a {_mb(best_t.artifact_bytes)} artifact "
            f"and ${best_t.usd_per_1m:.2f} instead of ${p.usd_per_1m:.2f} per 1M predictions"
        )
        if p is lead:
            rec.fired.append("prompt_enough")
            rec.reasons.append(why)
            return lead
        return _promote(rec, ranked, p, "prompt_enough", why, promoted)
    if lead.kind != "prompt":
        top = max(prompts, key=lambda r: r.quality)
        d = _paired(rec, lead, top, groups)
        rec.fired.append("training_wins")
        rec.reasons.append(
            f"training wins by a measured margin: {lead.strategy} over the best prompt-only candidate "
            f"({top.strategy}) by {_pts(lead.quality - top.quality)[1:]}"
            + (
                f", {100 * d.confidence:.0f}% interval [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}] on {d.n} paired "
                f"rows, all above the {margin}"
                if d is not None
                else f", above the {margin}"
            )
        )
    return lead


def _trained_still_open(rec: Recommendation, ranked: list[Row], p: Row, c: Constraints, margin: str) -> bool:
    """Whether a trained candidate not measured at the target could still beat prompt ``p`` by more
    than the margin (its band's optimistic bound): then prompting is not shown to be enough, and the
    reasons say which. FPB on two bases and an endpoint at 20m: prompt search (0.342) was called
    enough against the trained runs measured at 128 (0.285 at best) while hybrid on Gemma, predicted
    from 32 with a band up to 0.848, was not measured there; the same compare at 35m measured it at
    0.687."""

    def optimistic(r: Row) -> float:
        return r.hi if r.hi is not None else r.quality

    open_ = sorted(
        (r for r in ranked if r.kind != "prompt" and r.predicted and optimistic(r) > p.quality + c.prompt_margin),
        key=optimistic,
        reverse=True,
    )
    if not open_:
        return False
    names = ", ".join(f"{r.strategy} (band up to {r.hi:.3f})" if r.hi is not None else r.strategy for r in open_[:3])
    more = f" and {len(open_) - 3} more" if len(open_) > 3 else ""
    rec.reasons.append(
        f"prompting is not shown to be enough: {p.strategy} ({p.quality:.3f}) is within the {margin} of "
        f"the trained candidates measured at {p.train_size} examples, but {names}{more} "
        f"{'is' if len(open_) == 1 else 'are'} not measured there and could still beat it by more"
    )
    return True


def _rule_many_tasks(rec: Recommendation, ranked: list[Row], lead: Row, c: Constraints, promoted: dict) -> Row:
    """N full model copies vs adapters on one shared base."""
    if c.tasks <= 1 or lead.artifact_bytes < 100e6:  # not a model copy per task
        return lead
    small = [r for r in ranked[1:] if r.artifact_bytes < 100e6 and lead.quality - r.quality <= 0.02 + 1e-9]
    if not small:
        return lead
    alt = max(small, key=lambda r: r.quality)
    return _promote(
        rec,
        ranked,
        alt,
        "many_tasks",
        f"serving {c.tasks} tasks: {lead.strategy} needs {c.tasks} x {_mb(lead.artifact_bytes)} = "
        f"{_mb(c.tasks * lead.artifact_bytes)}, {alt.strategy} {c.tasks} x "
        f"{_mb(alt.artifact_bytes)} on one shared base, for {_pts(alt.quality - lead.quality)}",
        promoted,
    )


def _lead_reasons(rec: Recommendation, rows: list[Row], best: dict[str, Row], lead: Row, size) -> None:
    """Reasons that cite the numbers: the leader's, the best prompt's, and the size ranked at."""
    prompts = [r for r in best.values() if r.kind == "prompt" and r is not lead]
    bp = max(prompts, key=lambda r: r.quality) if prompts else None
    rec.reasons.insert(
        0,
        f"{lead.strategy}: {lead.metric} {lead.quality:.3f}"
        + (f" ± {lead.quality_std:.3f}" if lead.seeds > 1 else "")
        + f" at {lead.train_size} examples, {lead.train_seconds / 60:.1f} min to fit, "
        f"{_mb(lead.artifact_bytes)} artifact, {lead.prompt_tokens:.0f} prompt tokens per request, "
        f"${lead.usd_per_1m:.2f} per 1M predictions",
    )
    if bp is not None and lead.kind == "gradient":
        ratio = bp.prompt_tokens / max(1.0, lead.prompt_tokens)
        rec.reasons.insert(
            1,
            f"{_pts(lead.quality - bp.quality)} over the best prompt ({bp.strategy}, "
            f"{bp.quality:.3f}); {bp.strategy} sends {ratio:.1f}x the prompt tokens per request",
        )
    if lead.predicted:
        rec.reasons.append(
            f"this rests on extrapolation: {lead.strategy} was not measured at {size} examples; its "
            f"learning curve predicts {lead.quality:.3f} (bounds {lead.lo:.3f}-{lead.hi:.3f})"
        )
    guessed = sorted(r.strategy for r in best.values() if r.predicted and r is not lead)
    if guessed:
        rec.reasons.append(
            f"ranked at {size} examples, the largest size measured; {', '.join(guessed)} "
            f"{'was' if len(guessed) == 1 else 'were'} not measured there and "
            f"{'is' if len(guessed) == 1 else 'are'} ranked by {'its' if len(guessed) == 1 else 'their'} "
            f"learning-curve prediction"
        )


def _rule_prompt_cost(rec: Recommendation, eligible: list[Row], lead: Row) -> None:
    """A hard prompt wins but a trained strategy nearly ties with far fewer tokens."""
    if lead.kind != "prompt":
        return
    alts = [
        r
        for r in eligible
        if r.kind == "gradient"
        and lead.quality - r.quality <= 0.02 + 1e-9
        and r.prompt_tokens * 3 <= lead.prompt_tokens
    ]
    if alts:
        alt = max(alts, key=lambda r: r.quality)
        rec.fired.append("prompt_cost")
        rec.reasons.append(
            f"at volume consider {alt.strategy}: {_pts(alt.quality - lead.quality)} with "
            f"{alt.prompt_tokens:.0f} instead of {lead.prompt_tokens:.0f} prompt tokens per request"
        )


def _next_steps(rec: Recommendation, rows: list[Row], best: dict[str, Row], lead: Row) -> None:
    """Rules still_learning, try_stacked, fragile, forgetting; and the crossovers between strategies."""
    curve = sorted((r for r in rows if r.strategy == lead.strategy and r.train_size), key=lambda r: r.train_size)
    if len(curve) >= 2 and curve[-1].quality - curve[-2].quality > 0.01:
        rec.fired.append("still_learning")
        rec.next_steps.append(
            f"more data: {lead.strategy} rose {_pts(curve[-1].quality - curve[-2].quality)} from "
            f"{curve[-2].train_size} to {curve[-1].train_size} examples and has not levelled off"
        )
    stacked = [n for n in list_strategies() if get_strategy(n).stacks]
    if stacked and not any(n in best for n in stacked) and any(r.kind == "gradient" for r in best.values()):
        rec.fired.append("try_hybrid")
        rec.next_steps.append(
            f"try {' or '.join(stacked)} (fine-tune, then a soft prompt or few-shot exemplars on top): not measured"
        )
    if lead.paraphrase_spread is not None and lead.paraphrase_spread > 0.05:
        rec.fired.append("fragile")
        rec.next_steps.append(
            f"{lead.strategy} is prompt-sensitive: {_pts(lead.paraphrase_spread)[1:]} between its "
            f"best and worst wording; pin the template and test changes to it"
        )
    if lead.ppl_change is not None and lead.ppl_change > 0.20:
        rec.fired.append("forgetting")
        rec.next_steps.append(
            f"{lead.strategy} raised general-text perplexity by {ppl_rise(lead.ppl_change, signed=False)}: "
            f"keep the base model for other tasks (adapters do this by design)"
        )
    for x in crossovers(rows):
        if x["train_size"] is not None:
            rec.reasons.append(
                f"{x['strategy']} overtakes {x['over']} from {x['train_size']} examples "
                f"({x['quality']:.3f} vs {x['over_quality']:.3f})"
            )


def at_target(
    records: list[dict], rows: list[Row], metric: str, confidence: float = CONFIDENCE
) -> tuple[dict[str, Row], int | None, dict[str, CurveFit]]:
    """The row per strategy that the recommendation ranks, the size it ranks at, and the curve fits.

    The size is the largest train size measured (the user's data size when the grid or the race
    reached it). A strategy measured there is taken as measured; one that was not (skipped by a
    budget, dropped by the race) is ranked by its learning curve's prediction, marked ``predicted``
    with its bounds, its fit time scaled by the size. One missing run no longer drags every strategy
    down to the largest size all of them reached."""
    sizes = {r.train_size for r in rows if r.train_size}
    if not sizes:
        return largest(rows), None, {}
    target = max(sizes)
    fits = fit_all(records, target, metric, confidence=confidence, plot=True)
    best: dict[str, Row] = {}
    for strategy, last in largest(rows).items():
        if last.train_size in (0, target):
            best[strategy] = last
            continue
        f = fits[strategy]
        scale = target / max(1, last.train_size) if last.kind == "gradient" else 1.0
        best[strategy] = replace(
            last,
            quality=f.point,
            quality_std=0.0,
            train_size=target,
            predicted=True,
            lo=f.lo,
            hi=f.hi,
            train_seconds=last.train_seconds * scale,
        )
    return best, target, fits


def _baseline_notes(rec: Recommendation, records: list[dict], best: dict[str, Row], groups: dict) -> None:
    """Majority class and chance next to zero-shot; strategies not significantly above the majority
    class are called that."""
    b = records[0].baselines
    if not b:
        return
    rec.baselines = b
    zero = [r for r in best.values() if r.kind == "prompt" and r.train_size == 0]
    line = (
        f"baselines on the {b['test_n']} test rows: majority class '{b['majority_label']}' "
        f"{b['majority_accuracy']:.3f} accuracy, chance {b['chance_accuracy']:.3f}"
        + (f" (majority: {b['majority_note']})" if b.get("majority_note") else "")
    )
    if zero:
        line += "; " + ", ".join(f"{z.strategy} {z.quality:.3f}" for z in zero)
    rec.reasons.append(line)
    below = []
    for r in sorted(best.values(), key=lambda r: -r.quality):
        if r.predicted or (r.strategy, r.train_size) not in groups:
            continue
        d = above_baseline(groups[(r.strategy, r.train_size)], b["majority_label"], metric=rec.metric)
        if d is None:
            continue
        for item in rec.ranked:
            if item["strategy"] == r.strategy:
                item["over_majority"] = d.to_dict()
        if d.lo <= 0:
            below.append(
                f"{r.strategy} ({_pts(d.diff)} over answering '{b['majority_label']}', interval "
                f"[{100 * d.lo:+.1f}, {100 * d.hi:+.1f}])"
            )
    if below:
        rec.fired.append("at_majority")
        rec.reasons.append("not significantly above the majority class: " + "; ".join(below))


def _measured_first(rec: Recommendation, ranked: list[Row], size, promoted: dict, fits: dict) -> None:
    """Rule ``measured``: the answer is a strategy measured at the target size; one ranked above it by
    its learning curve's prediction alone is named, with its bounds, but never recommended.

    Unless its measurement already beats the measured one: a strategy measured only at a smaller size
    whose pessimistic bound at the target (one size: that measurement carried flat, less its noise)
    is above the best measured at the target is itself recommended, on that measurement. Recommending
    the one measured at the target would recommend what the measurements already show to be worse
    (AG News at 500, 15 minutes: prompt search 0.643 measured at 256, its pool of exemplars, against
    LoRA's 0.874 measured at 64)."""
    if not ranked or not ranked[0].predicted:
        return
    measured = [r for r in ranked if not r.predicted]
    if not measured:
        return
    top = measured[0]
    surer = [r for r in ranked if r.predicted and r.lo is not None and r.lo > top.quality]
    if surer:
        lead = max(surer, key=lambda r: (r.lo, r.quality))
        fit = fits.get(lead.strategy)
        shown = (
            f"{fit.quality[-1]:.3f} measured at {fit.sizes[-1]} examples"
            if fit is not None and fit.sizes
            else "its measurement at a smaller size"
        )
        promoted[lead.strategy] = "measured"
        rec.fired.append("measured")
        rec.reasons.append(
            f"{lead.strategy} is recommended on its own measurement ({shown}): even its pessimistic bound "
            f"at {size} examples, {lead.lo:.3f}, is above {top.strategy}'s {top.quality:.3f}, the best measured "
            f"there; measure {lead.strategy} at {size} examples to confirm it"
        )
        top = lead
    else:
        above = [r for r in ranked if r.predicted and r.quality > top.quality]
        promoted[top.strategy] = "measured"
        rec.fired.append("measured")
        rec.reasons.append(
            f"{top.strategy} is the best measured at {size} examples; "
            + ", ".join(f"{r.strategy} (predicted {r.quality:.3f}, bounds {r.lo:.3f}-{r.hi:.3f})" for r in above)
            + f" {'ranks' if len(above) == 1 else 'rank'} higher by prediction only, not measured there"
        )
    ranked.remove(top)
    ranked.insert(0, top)


def recommend(records: list, c: Constraints) -> Recommendation:
    """Rank the strategies at the target size, under the constraints, then apply the rules."""
    records = records_of(records)
    metric, why_metric = ranking_metric(records)
    rec = Recommendation(metric=metric)
    rows = aggregate(records, metric)
    if not rows:
        rec.reasons.append("no finished runs")
        return rec
    groups: dict[tuple, list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.strategy, r.train_size), []).append(r)
    best, size, fits = at_target(records, rows, metric)
    rec.target, rec.fits = size, {s: f.to_dict() for s, f in fits.items()}
    if c.volume:
        best = dict(zip(best, at_volume(list(best.values()), c.volume)))
    eligible = _eligible(rec, best, c)
    if not eligible:
        return _none_eligible(rec, best, c)
    ranked = sorted(eligible, key=lambda r: (-r.quality, r.usd_per_1m))
    promoted: dict[str, str] = {}  # strategy -> the rule that moved it to the top
    _measured_first(rec, ranked, size, promoted, fits)
    lead = _rule_near_tie(rec, ranked, ranked[0], promoted, groups)
    lead = _rule_many_tasks(rec, ranked, lead, c, promoted)
    lead = _rule_prompt_enough(rec, ranked, lead, c, promoted, groups)
    _lead_reasons(rec, rows, best, lead, size)
    if c.volume:
        rec.reasons.append(
            f"costs per 1M predictions at {c.volume:,.0f} predictions a month count each candidate's "
            f"training once over {AMORTIZE_MONTHS} months"
        )
    if why_metric:
        rec.reasons.append(why_metric)
    _rule_prompt_cost(rec, eligible, lead)
    rec.ranked = [
        {
            "strategy": r.strategy,
            "train_size": r.train_size,
            "quality": r.quality,
            "usd_per_1m": r.usd_per_1m,
            "promoted_by": promoted.get(r.strategy),
            "predicted": r.predicted,
            "lo": r.lo,
            "hi": r.hi,
        }
        for r in ranked
    ]
    for r in ranked[1:]:
        if r is not lead and not r.predicted:
            _paired(rec, lead, r, groups)
    _baseline_notes(rec, records, best, groups)
    _no_label_notes(rec, best)
    _next_steps(rec, rows, best, lead)
    return rec


def _no_label_notes(rec: Recommendation, best: dict[str, Row]) -> None:
    """Candidates whose answers named no label on some test rows (scored wrong, never a fallback class)."""
    failed = sorted((r for r in best.values() if r.no_label and not r.predicted), key=lambda r: -r.no_label)
    if failed:
        rec.reasons.append(
            "answers that named no label, scored wrong: "
            + "; ".join(f"{r.strategy} on {r.no_label} of {(r.test_n or 0) * r.seeds} rows" for r in failed)
        )
