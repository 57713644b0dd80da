"""The adaptive compare: run only what can still change the recommendation, stop when it cannot.

A race between strategies (racing in the sense of Maron & Moore's Hoeffding races; LUCB-style
sampling of the leader and its strongest challenger, as in best-arm identification), with each
strategy's quality at the target size predicted from its learning curve (:mod:`.curves`):

1. every strategy runs once, at its smallest size, or a larger one that costs no more (cheapest first);
2. the **bar** is the best pessimistic bound at the target among all strategies; a strategy whose
   optimistic bound is under the bar is dropped (it stays dropped only while that holds: the state
   is recomputed from the finished runs after every run, so a resumed compare makes the same
   decisions);
3. the **leader** (the best central prediction among the strategies left) is measured at the target
   size itself, so that the bar rests on a measurement rather than an extrapolation, and then at
   the largest size below it (the **calibration run**): when its rise between the two beats what
   its curve through the smaller sizes allowed, every extrapolated optimistic bound of its kind is
   widened to at least that rate (:func:`adaptlab.compare.curves.calibrate`). Without it, a power
   law through 16 and 256 examples cannot see a jump between 256 and 1000, and the race once
   dropped full fine-tuning "at 95%" on Banking77 where it tied the winner;
4. then the challengers, those of the other side first (a prompt-only one against a trained leader,
   or the reverse: they can change the answer to "prompt or train?", the others only which strategy
   answers it), by highest optimistic bound: each gets a second point, at the largest size
   below the target (far from its first, so that the extrapolation is short and its noise small),
   then the target itself, until it is dropped (paired replicates: its optimistic prediction under
   the bar holder's pessimistic one in ``confidence`` of them) or measured there;
5. decided at ``confidence`` when the leader, measured at the target (and calibrated, when others
   are extrapolated), is the best in that share of the replicates (each strategy's curve drawn from
   its plausible ones, test rows and seed noise resampled) or every other strategy is dropped; when
   every run that could matter is done and the seed noise still leaves it open, further seeds of
   the leader and its rivals run if ``--seeds`` planned them, and the report says it was not
   decided otherwise. The question itself ("prompt or train?") is decided earlier, when every
   candidate of the side that does not lead is dropped, and the report says so on its own.

Everything here is a pure function of the finished run records, the plan and the estimates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from adaptlab.compare.baselines import ranking_metric
from adaptlab.compare.curves import Calibration, CurveFit, fit_all
from adaptlab.compare.record import records_of
from adaptlab.compare.stats import CONFIDENCE

# The two sides of the product's question, by a strategy's kind: prompt-only (no weights trained) or trained.
SIDES = {"prompt": "prompt", "gradient": "training"}


@dataclass
class RaceState:
    target: int
    metric: str
    fits: dict[str, CurveFit]
    leader: str | None
    bar: float | None
    bar_holder: str | None
    alive: list[str]
    dropped: dict[str, str]  # strategy -> why
    decided: bool
    candidates: list = field(default_factory=list)  # RunSpecs worth running next, best first, with why
    confidence: float = CONFIDENCE
    p_best: dict = field(default_factory=dict)  # strategy -> share of replicates where it is the best
    sure: bool = False  # decided at ``confidence``, not just out of runs
    calibration: list[Calibration] = field(default_factory=list)  # the rates extrapolations were widened to
    calibration_run: str | None = None  # the calibration run still to make, if any
    # The product's question, "prompt it or train it?": the leader's side ("prompt": no weights
    # trained; "training"), decided when every candidate of the other side is dropped (its optimistic
    # bound under the bar in ``confidence`` of paired resamples) even while the strategy is not.
    question: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "metric": self.metric,
            "leader": self.leader,
            "bar": self.bar,
            "bar_holder": self.bar_holder,
            "alive": self.alive,
            "dropped": self.dropped,
            "decided": self.decided,
            "sure": self.sure,
            "confidence": self.confidence,
            "p_best": self.p_best,
            "calibration": [c.to_dict() for c in self.calibration],
            "calibration_run": self.calibration_run,
            "question": self.question,
            "fits": {s: f.to_dict() for s, f in self.fits.items()},
            "next": [{"id": s.id, "why": why} for s, why in self.candidates],
        }


def _cells(specs: list) -> dict[tuple[str, int], list]:
    out: dict[tuple[str, int], list] = {}
    for s in specs:
        out.setdefault((s.strategy, s.train_size), []).append(s)
    for v in out.values():
        v.sort(key=lambda s: s.seed)
    return out


def race(
    records: list,
    specs: list,
    *,
    confidence: float = CONFIDENCE,
    cost=None,
    calibrated: bool = True,
    first_key=None,
    exclude: set | None = None,
    tie: list | None = None,
    asked: list[str] | None = None,
    first: dict[str, int] | None = None,
) -> RaceState:
    """The race's state after ``records`` (finished runs) over the plan ``specs``, and what to run next.

    ``cost``: a spec's estimated work (orders the first round cheapest first, or ``first_key``).
    ``exclude``: ids of planned runs that were cut by their time limit (they are not tried again).
    ``tie``: candidates in the order that breaks exact ties between predictions (:mod:`.lessons`).
    ``asked``: every candidate the user asked for (default: those in ``specs``); one never measured
    keeps the question "prompt or train?" open when it is of the side that does not lead.
    ``first``: the train size of each candidate's first run, where it is not its smallest (the
    schedule looks at a prompt strategy where a larger size costs no more, :meth:`.schedule.AdaptivePicker.first_look`).
    ``calibrated=False`` is the race before calibration (no calibration run, power-law bounds only),
    kept to replay what it did (``bench/race_replay.py``)."""
    cost = cost or (lambda s: s.train_size)
    records = records_of(records)
    done = {r.id for r in records}
    asked = asked or list(dict.fromkeys(s.strategy for s in specs))  # every candidate, run or not
    if exclude:
        specs = [s for s in specs if s.id not in exclude or s.id in done]
    cells = _cells(specs)
    strategies = list(dict.fromkeys(s.strategy for s in specs))
    ladder = {st: sorted({n for (s2, n) in cells if s2 == st}) for st in strategies}
    target = max((n for st in strategies for n in ladder[st]), default=0)
    metric, _ = ranking_metric(records)
    fits = fit_all(records, target, metric, confidence=confidence, calibrated=calibrated) if records else {}
    calibration = sorted({f.calibration for f in fits.values() if f.calibration}, key=lambda c: c.kind)
    state = RaceState(
        target, metric, fits, None, None, None, [], {}, False, confidence=confidence, calibration=calibration
    )

    def pending(cell) -> list:
        return [s for s in cells.get(cell, []) if s.id not in done]

    round_one = _round_one(cells, ladder, strategies, fits, done, first)
    if round_one:
        state.candidates = [(s, "first run of the strategy") for s in sorted(round_one, key=first_key or cost)]
        return state
    bar_holder, bar, alive, dropped = _drops(fits, strategies, metric, target, confidence)
    rank = {s: i for i, s in enumerate(tie or [])}
    leader = max(alive, key=lambda s: (fits[s].point, fits[s].lo, -rank.get(s, len(rank))))
    state.leader, state.bar, state.bar_holder, state.alive, state.dropped = leader, bar, bar_holder, alive, dropped
    state.p_best = p_best(fits, alive)
    state.question = _question(fits, leader, alive, [st for st in asked if st not in fits])

    out = []
    if not fits[leader].measured_at_target:
        s = _next_up(fits, ladder, pending, leader, jump=True)
        if s is not None:
            out.append((s, f"{leader} leads (predicted {fits[leader].point:.3f}): measure it at the target size"))
    calibration_run = _calibration_run(fits, leader, ladder, pending) if calibrated else None
    if calibration_run is not None:
        state.calibration_run = calibration_run.id
        why = (
            f"calibration: {leader} at {calibration_run.train_size} as well as {target}, to measure how fast "
            f"quality rises near the target on this data (every extrapolation's optimistic bound is widened "
            f"to that rate)"
        )
        out.append((calibration_run, why))
    # The question first: a challenger from the other side (prompt-only against a trained leader, or
    # the reverse) can change the answer to "prompt or train?", the rest only which strategy of the
    # leader's side; then the highest optimistic bound.
    side = SIDES.get(fits[leader].kind, "training")
    challengers = sorted(
        (st for st in alive if st != leader and not fits[st].measured_at_target),
        key=lambda st: (SIDES.get(fits[st].kind, "training") == side, -fits[st].hi),
    )
    for st in challengers:
        s = _next_up(fits, ladder, pending, st, jump=False)
        if s is not None:
            out.append((s, f"{st} could still win: optimistic {fits[st].hi:.3f} >= the bar {bar:.3f}"))
    sure = (
        fits[leader].measured_at_target
        and calibration_run is None
        and (len(alive) == 1 or state.p_best.get(leader, 0) >= confidence)
    )
    if not out and not sure:
        out = _more_seeds(state, alive, leader, target, cells, pending)
    state.candidates = out
    # Decided (``sure``): the leader, measured at the target, is the best in at least ``confidence``
    # of the replicates (each strategy's curve drawn from the plausible ones, rows and seeds
    # resampled), or every other strategy is dropped. Exhausted: nothing left in the plan to run.
    state.sure = sure
    state.decided = sure or not out
    return state


def _round_one(cells: dict, ladder: dict, strategies: list[str], fits: dict, done: set, first: dict | None) -> list:
    """Round one: every strategy not yet measured once, at its smallest size (or the size ``first``
    names, where planned), its first seed; empty once each has a run."""

    def first_cell(st: str):
        n = (first or {}).get(st)
        return (st, n if (st, n) in cells else ladder[st][0])

    return [
        cells[first_cell(st)][0]
        for st in strategies
        if st not in fits and ladder[st] and cells[first_cell(st)][0].id not in done
    ]


def _question(fits: dict[str, CurveFit], leader: str, alive: list[str], unmeasured: list[str]) -> dict:
    """Prompt or train: the leader's side, and whether every candidate of the other side is dropped
    (then no run left could move the answer to the other side, whichever strategy of this side wins).
    A candidate of the other side never measured (cut, left out, not reached) keeps it open: it was
    asked for and nothing says it loses."""
    side = SIDES.get(fits[leader].kind, "training")
    others = [s for s in fits if SIDES.get(fits[s].kind, "training") != side]
    never = [s for s in unmeasured if _side(s) != side]
    if not others and not never:
        return {"answer": side, "decided": False, "open": [], "why": "only one side was asked for"}
    still = [s for s in others if s in alive] + never
    why = (
        f"every {'prompt-only' if side == 'training' else 'trained'} candidate is dropped ({', '.join(sorted(others))})"
        if not still
        else "; ".join(
            part
            for part in (
                f"{', '.join(s for s in still if s not in never)} can still change it"
                if len(still) > len(never)
                else "",
                f"{', '.join(never)} never measured" if never else "",
            )
            if part
        )
    )
    return {"answer": side, "decided": not still, "open": still, "why": why}


def _side(candidate: str) -> str | None:
    """The side of a candidate that has no record yet, from its registered strategy (None: unknown)."""
    from adaptlab.strategies.registry import get_strategy

    try:
        return SIDES.get(get_strategy(candidate).kind)
    except ValueError:
        return None


def _next_up(fits: dict, ladder: dict, pending, st: str, jump: bool):
    """``st``'s next cell, first seed: the target when ``jump`` or once it has two sizes (a third
    point would cost a run and still leave an extrapolation), else the largest size below the
    target. The second point goes far from the first on purpose: extrapolating from 16 and 64
    examples to 1000 multiplies their noise about 2.5 times, from 16 and 256 about 1.4 times."""
    measured = max(fits[st].sizes)
    sizes = [n for n in ladder[st] if n > measured and pending((st, n))]
    if not sizes:
        return None
    n = sizes[-1] if jump or len(fits[st].sizes) >= 2 or len(sizes) == 1 else sizes[-2]
    return pending((st, n))[0]


def _drops(fits: dict[str, CurveFit], strategies: list[str], metric: str, target: int, confidence: float):
    """The bar (the best pessimistic bound, and whose it is), the strategies still alive, and why each
    other one is dropped: its optimistic bound stays below the bar in ``confidence`` of paired resamples."""

    bar_holder = max(fits, key=lambda s: fits[s].lo)
    bar = fits[bar_holder].lo
    alive, dropped = [], {}
    for st in strategies:
        worse = _below(fits[st], fits[bar_holder], confidence) if st != bar_holder else None
        if worse is not None:
            widened = (
                f", its bound widened to {fits[st].calibration.strategy}'s measured rise"
                if fits[st].calibration
                else ""
            )
            dropped[st] = (
                f"its optimistic {metric} at {target} examples ({fits[st].hi:.3f}{widened}) stays below "
                f"{bar_holder}'s pessimistic one ({bar:.3f}) in {100 * confidence:.0f}% of paired "
                f"resamples (difference at most {100 * worse:+.1f} points)"
            )
        else:
            alive.append(st)
    return bar_holder, bar, alive, dropped


def _more_seeds(state: RaceState, alive: list[str], leader: str, target: int, cells: dict, pending) -> list:
    """Every strategy left is measured at the target and the seed noise still leaves the winner open:
    more seeds of the leader and of its closest rivals (when --seeds allows them)."""
    out = []
    rivals = sorted((st for st in alive if st != leader), key=lambda st: -state.p_best.get(st, 0))
    for st in [leader] + rivals:
        more = pending((st, target)) if (st, target) in cells else pending((st, 0))
        if more:
            why = (
                f"{st} at {target}: another seed, to tell it from the others "
                f"(best in {100 * state.p_best.get(st, 0):.0f}% of resampled curves)"
            )
            out.append((more[0], why))
    return out


def _calibration_run(fits: dict[str, CurveFit], leader: str, ladder: dict, pending):
    """The leader's run at the largest size below the target, when the leader is measured at the
    target, no strategy of its kind measured there has that size yet, and some other strategy of its
    kind rests on an extrapolation (else there is nothing to calibrate); None otherwise."""
    target, kind = fits[leader].target, fits[leader].kind
    below = [n for n in ladder.get(leader, []) if 0 < n < target]
    same = [f for f in fits.values() if f.kind == kind]
    if not fits[leader].measured_at_target or not below or not any(f.extrapolated for f in same):
        return None
    n = max(below)
    if any(f.measured_at_target and n in f.sizes for f in same):
        return None
    todo = pending((leader, n))
    return todo[0] if todo else None


def p_best(fits: dict[str, CurveFit], alive: list[str]) -> dict[str, float]:
    """Each strategy's share of the paired replicates in which its drawn quality at the target is the
    highest among ``alive`` (ties to the earlier name)."""
    draws = {s: fits[s].samples.get("draw") for s in alive}
    n = min((len(d) for d in draws.values() if d is not None and len(d)), default=0)
    if n < 2 or any(d is None or len(d) < n for d in draws.values()):
        return {}
    names = sorted(alive)
    table = np.stack([draws[s][:n] for s in names])  # (strategies, replicates)
    wins = np.bincount(table.argmax(axis=0), minlength=len(names))
    return {s: float(w) / n for s, w in zip(names, wins)}


def _below(a: CurveFit, b: CurveFit, confidence: float) -> float | None:
    """When ``a``'s optimistic prediction is under ``b``'s pessimistic one in ``confidence`` of the
    paired replicates: that quantile of the difference (negative); else None. Replicates pair up
    (the same test rows resampled), so the rows' own difficulty cancels; without replicates the
    bounds are compared."""
    if len(a.samples.get("hi", ())) == len(b.samples.get("lo", ())) > 1:
        q = float(np.quantile(a.samples["hi"] - b.samples["lo"], confidence))
    else:
        q = a.hi - b.lo
    return q if q < 0 else None


# Rules of the recommendation that settle a race the noise leaves open (compare/recommend.py).
SETTLING = {"prompt_enough": "prompting is enough", "near_tie": "a tie goes to the adaptation easier to own"}


def decision_line(
    state: RaceState, n_runs: int, minutes: float, left: int, never: list[str] | None = None, recommendation=None
) -> str:
    """One sentence on where the race stands, for the log and the report (``never``: candidates that
    never ran). With the ``recommendation`` made from the same records, the sentence names what it
    recommends and which rule decided, so the two never disagree."""
    rec = recommendation
    line = _race_line(state, n_runs, minutes, left, never, rec is not None and rec.winner == state.leader)
    rule = next((r for r in rec.fired if r in SETTLING), None) if rec is not None else None
    # A rule settles what the noise leaves open among measured candidates; one that can still change
    # the winner, extrapolated to the target from smaller sizes, leaves the race open whatever the
    # rule says of the others (FPB on two bases at 20m: "tie resolved by prompt_enough" with hybrid on
    # Gemma predicted from 32 up to 0.848; measured at 128 in the 35m row, it won with 0.687).
    guessed = (
        [s for s in state.alive if s != rec.winner and s in state.fits and state.fits[s].extrapolated] if rule else []
    )
    if not state.sure and (rule is None or guessed):
        line += _question_line(state)
    if rec is None or not rec.winner:
        return line
    at = f" at {rec.target} examples" if rec.target else ""
    if guessed:
        return (
            f"{line}; {rec.winner} is recommended{at} by rule {rule} ({SETTLING[rule]}) among the candidates "
            f"measured there, which settles nothing while {', '.join(guessed)} "
            f"{'is' if len(guessed) == 1 else 'are'} not measured there"
        )
    if rule is not None:
        how = "decided" if state.sure and rec.winner == state.leader else "tie resolved"
        return f"{how} by rule {rule} ({SETTLING[rule]}): {rec.winner} is recommended{at}; the race: {line}"
    if rec.winner != state.leader:
        return f"{line}; {rec.winner} is recommended as the best measured{at}" + (
            f" ({state.leader} leads by prediction only)" if state.leader else ""
        )
    return line


def _question_line(state: RaceState) -> str:
    """The question's own answer while the strategy is open: prompt or train, decided or not."""
    q = state.question
    if not q or not q.get("open") and not q.get("decided"):
        return ""
    if q["decided"]:
        return f"; prompt or train: {q['answer']}, decided at {100 * state.confidence:.0f}% ({q['why']})"
    return f"; prompt or train: not decided ({q['answer']} leads; {q['why']})"


def _race_line(
    state: RaceState, n_runs: int, minutes: float, left: int, never: list[str] | None, recommended: bool = False
) -> str:
    p = state.p_best.get(state.leader) if state.leader else None
    if state.leader is None:
        names = never or sorted({s.strategy for s, _ in state.candidates})
        return (
            f"not decided at {100 * state.confidence:.0f}% after {n_runs} runs ({minutes:.0f} min): the budget "
            f"ended before every strategy had a first run ({', '.join(names) or 'none'} did not)"
        )
    chance = _chance(state, p)
    others = [s for s in state.alive if s != state.leader]
    if not state.sure and state.calibration_run and not others:
        return (
            f"not decided at {100 * state.confidence:.0f}% after {n_runs} runs ({minutes:.0f} min): "
            f"{state.leader} leads, but its calibration run ({state.calibration_run}) was not made, so the "
            f"drops rest on extrapolations the data has not checked"
        )
    if state.sure:
        return (
            f"decided at {100 * state.confidence:.0f}% after {n_runs} runs ({minutes:.0f} min): "
            f"the {left} runs left could not change the winner" + (f" ({chance})" if chance else "")
        )
    if state.decided and never:  # out of runs because the budget left candidates unmeasured, not by the noise
        return (
            f"not decided at {100 * state.confidence:.0f}% after {n_runs} runs ({minutes:.0f} min): the budget "
            f"ended before every candidate had a first look ({', '.join(never)} did not); among those measured, "
            f"{chance or state.leader + ' leads'}" + (f", {', '.join(others)} within the noise" if others else "")
        )
    if state.decided:
        return (
            f"not decided at {100 * state.confidence:.0f}% after {n_runs} runs ({minutes:.0f} min), and no run "
            f"left in the plan could decide it: {chance or state.leader + ' leads'}, "
            f"{', '.join(others)} within the noise; more seeds (--seeds) would settle it"
        )
    unrun = f"; never run: {', '.join(never)}" if never else ""
    bands = _bands(state, recommended)
    if bands:
        return f"not decided at {100 * state.confidence:.0f}% after {n_runs} runs ({minutes:.0f} min): {bands}{unrun}"
    open_ = (
        f"{', '.join(others)} can still change the winner at {state.target} examples"
        if others
        else f"{state.leader} leads, but is not yet measured at {state.target} examples"
    )
    return (
        f"not decided at {100 * state.confidence:.0f}% after {n_runs} runs ({minutes:.0f} min): {open_}"
        + (f"; {chance}" if chance else "")
        + unrun
    )


def _chance(state: RaceState, p: float | None) -> str:
    """The leader's share of the resampled curves (empty without replicates)."""
    return "" if p is None else f"{state.leader} is the best in {100 * p:.0f}% of the resampled curves"


def _bands(state: RaceState, recommended: bool = False) -> str:
    """When the leader is measured at the target and some rival still in the race is not: the
    measurement, and each such rival as what it is, a prediction with its band (empty otherwise).
    The leader's share of the resampled curves would count optimistic draws of extrapolations (one
    measured size gives a band over most of the scale): Financial PhraseBank's LoRA, measured at
    0.763 and recommended, read "the best in 0% of the resampled curves" beside five such bands.
    ``recommended``: the recommendation made from the same records names the leader."""
    leader = state.fits.get(state.leader)
    rivals = sorted((s for s in state.alive if s != state.leader), key=lambda s: -state.fits[s].hi)
    guessed = [s for s in rivals if not state.fits[s].measured_at_target]
    if leader is None or not leader.measured_at_target or not guessed:
        return ""

    def measured(s: str) -> str:
        f = state.fits[s]
        return f"{state.metric} {f.point:.3f}, interval {f.lo:.3f}-{f.hi:.3f}"

    def predicted(s: str) -> str:
        f = state.fits[s]
        n = len(f.sizes)
        source = (
            f"flat past the {f.flat_past} train rows it reads"
            if f.flat_past
            else f"predicted from {n} size{'s' if n > 1 else ''}"
        )
        return f"{s} {f.point:.3f} ({source}, band {f.lo:.3f}-{f.hi:.3f})"

    line = f"{state.leader}{', recommended,' if recommended else ''} is measured at {state.target} ({measured(state.leader)})"
    also = [f"{s} ({measured(s)})" for s in rivals if s not in guessed]
    if also:
        line += f"; so are {', '.join(also)}"
    return (
        f"{line}; not measured there, these can still change the winner (predictions, with the bands their "
        f"learning curves allow): {', '.join(predicted(s) for s in guessed)}"
    )
