"""The adaptive compare's schedule: which run comes next, under the budget. The policy, in a screen:

1. **A first look at every candidate** (each strategy on each base, each prompt strategy on each
   endpoint), the cheapest of each family first, then the others, cheapest first, at low fidelity:
   its smallest train size (or a larger one that costs no more: a prompt strategy reads a fixed
   number of rows), scored on a screening subsample of the test rows sized by the statistics
   (:func:`.costs.screen_rows`). Nothing is concluded, and no second run made, before every
   candidate has one; a first look whose whole
   estimate does not fit what the budget leaves is skipped and the next one tried, so the cheap ones
   are always made (the skipped one waits for a late look, step 3).
2. **Promotion by what can still change the answer** (the race, :mod:`.adaptive`: successive halving
   in the manner of ASHA, with each candidate's learning-curve band in place of a fixed halving
   rate, so a steep riser with a slow start is not dropped): the leader is measured at the target
   on every test row; challengers whose optimistic band still reaches the bar get a larger size,
   then the target; the rest are dropped.
3. **The winner's run is reserved.** Until the leader is known, the time held back is the dearest
   target run among the candidates (whichever leads must be measurable at the user's size); after,
   the leader's own. Round one keeps the estimates the budget was accepted on (its first looks and
   that reserve): rates measured by the first looks move every estimate, and a first look the
   compare promised must not lose its place for that (its time limit still protects the reserve).
   No run may eat into the reserve; when the next promotion does not fit, the race stops there and
   the reserved run is made. When the leader's run, re-estimated, no longer fits what is left, the
   best-predicted candidate whose own run at the target fits is measured there instead (unless the
   leader's misses by less than the estimates err, NEAR_SHARE: it is tried first), so the answer
   always rests on a measurement at the user's size. Either way the reserve is then free:
   first looks that missed round one are made in it (and, once more, one cut by the reserve rather
   than by its own limit), then the race goes on while its next run fits.
   When no run at the target fits at all (the machine ran slower than estimated), the reserve is
   freed all the same, for the same first looks and runs: time is never held for a run that
   cannot be made.
4. **A budget that cannot fit step 1 and step 3 is said before anything runs**, with the budget
   that would fit. By default the compare then keeps the cheapest candidate of each family
   (prompt-only, learned prompt, adapter, full weights) on each base and endpoint, leaves out the
   others that free the most time first, names them with why, and goes on; ``strict_budget``
   refuses instead. Both sides of the question, a prompt and a trained candidate, are always
   measured. The choice is saved (``budget_plan.json``), so a resumed compare keeps it.

No candidate is favoured by its name. Which run is next follows from the finished records and
token-counted work alone (never the clock), so a slower machine walks the same path and stops
sooner; what the committed grids teach (:mod:`.lessons`) only breaks ties before anything is measured.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from adaptlab.compare.adaptive import SIDES, decision_line, race
from adaptlab.compare.config import CompareConfig
from adaptlab.compare.lessons import tie_order
from adaptlab.compare.record import RunRecord, RunSpec, records_of
from adaptlab.compare.store import (
    claimed,
    compare_minutes,
    load_results,
    load_skipped,
    minutes,
    write_result,
)
from adaptlab.compare.tuning import TUNING_SHARE
from adaptlab.strategies.registry import get_strategy
from adaptlab.utils import atomic_write_json

console = Console()
PLAN_FILE = "budget_plan.json"


class AdaptivePicker:
    """The schedule above; after every run the race's state is recomputed from all finished runs
    (other workers' included) and its first candidate runs."""

    OVERRUN = 3.0  # a run may take this many times its estimate (+ a minute) before it is cut
    ATTEMPT_SHARE = 0.75  # the reserved run is still tried with this share of its estimate left
    # The leader's run missing the time left by less than the estimates' own error is tried before a
    # stand-in: Banking77 at 20m, LoRA at 1000 re-estimated at 537 s with 526 s left; prompt search
    # stood in and LoRA was recommended on its run at 16 (a run that misses by 19%, as hybrid@smollm2's
    # 221 s with 179 s left did, was cut: a stand-in comes first there).
    NEAR_SHARE = 0.95
    # A budget the compare asks for must still fit when the user runs it: the machine's probe, and so
    # every estimate, moves by tens of percent between calls (Banking77 at half speed: one candidate of
    # each family estimated at 31 min, then at 35 min a minute later, which refused the 35m asked for).
    ASK_MARGIN = 1.3
    SAME_PRICE = 1.05  # a first look at a larger size costing at most this much more is the larger one
    RETRY = 1.25  # a first look cut by the time held for the winner is retried at this times the seconds it ran

    def __init__(self, cfg: CompareConfig, specs: list[RunSpec], out: Path, tokens):
        self.cfg, self.out, self.tokens = cfg, out, tokens
        self.planned = list(specs)
        self.specs = list(specs)
        self.target = max((s.train_size for s in specs), default=0)
        self.order = tie_order(list(dict.fromkeys(s.strategy for s in specs)), self.target)
        self.skipped: list[dict] = []
        self.left_out: list[dict] = []
        self.cut: set[str] = set()
        # Runs cut by the time held for the winner, not by running past their own limit (AG News at 500,
        # 15m: few-shot's first look, estimated 103 s, limited to 85 s by the reserve, cut at 93 s):
        # id -> seconds it ran. A first look among them is tried once more as a late look, when the
        # time held is free and it fits (:meth:`_late_look`); one cut again stays cut.
        self.squeezed: dict[str, float] = {}
        # Runs of candidates whose first look did not fit what the budget left: never tried in this
        # session, so the race goes on with the candidates measured (the report names the others).
        self.unfit: set[str] = set()
        for s in load_skipped(out):
            if s.get("cut"):
                self._cut(s["id"], s)
        self.stopped = False  # the next promotion did not fit: the reserved run, late looks, then _race_on
        self.state = None
        self._done: dict = {}
        self.held_at_start: float | None = None  # the reserve when the budget was accepted (round one holds it)
        self.first_est: dict[str, float] = {}  # each first look's estimate then
        self.standing_in: str | None = None  # a run measured at the target in place of the leader's (_stand_in)
        # No run at the target fits the time left (nor a stand-in's): the time held for it is free (_release)
        self.released = False
        self.retried: set[str] = set()  # squeezed first looks tried once more

    # -------------------------------------------------------------- fidelity and costs
    def light(self, spec: RunSpec) -> bool:
        return True

    def screened(self, spec: RunSpec) -> bool:
        return spec.train_size != self.target

    def keep(self, spec: RunSpec) -> bool:
        return spec.train_size in (0, self.target)

    def _rows(self, spec: RunSpec) -> int:
        return self.tokens.n_screen if self.screened(spec) else self.tokens.n_test

    def cost(self, spec: RunSpec) -> float:
        """The run's work (GFLOP): what the race orders by, the same on every machine."""
        return self.tokens.work(spec.strategy, spec.train_size, self._rows(spec)).total

    def seconds(self, spec: RunSpec) -> float:
        return self.tokens.seconds(spec.strategy, spec.train_size, self._rows(spec))

    @property
    def tuning_order(self) -> list[str]:
        """Candidates in the order tuning fits their variants: the cheapest first look first."""
        key = self.first_key()
        return sorted(self.candidates(), key=lambda c: key(self.first_look(c)))

    def first_key(self):
        """Round one's order, as a sort key: the cheapest candidate of each family on each base and
        endpoint first (the ones the budget check keeps when time is short), then the others; cheapest
        first within each; the committed grids' lessons break ties. When the first looks run slower than
        estimated, the ones left for a late look are never a family's only candidate, so both sides of
        the question are measured (the demo at 30 s on the tiny model, cheapest first: the three prompt
        candidates ran, their rates made LoRA, prefix and soft prompt dearer, and no trained candidate
        was measured). The heads are found once per key, not once per spec sorted."""
        heads = set(self.family_heads(key=lambda c: self.cost(self.first_look(c))).values())
        return lambda spec: (spec.strategy not in heads, self.cost(spec), self.order.index(spec.strategy))

    def family_heads(self, candidates: list[str] | None = None, key=None) -> dict[tuple[str, str], str]:
        """(family, where) -> its cheapest candidate among ``candidates`` (all by default) by ``key``
        (a first look's seconds by default)."""
        key = key or (lambda c: self.seconds(self.first_look(c, self.planned)))
        heads: dict[tuple[str, str], str] = {}
        for c in sorted(self.candidates() if candidates is None else candidates, key=key):
            heads.setdefault(self.group(c), c)
        return heads

    def finish_seconds(self, strategy: str) -> float:
        """Measuring ``strategy``'s recommended run in full at the end: the train gap, fragility,
        consistency (and forgetting) rows."""
        extra = max(0, self.tokens.scored_per_run(False) - self.tokens.scored_per_run(True))
        return self.tokens.score_seconds(strategy, extra) + 5.0

    # -------------------------------------------------------------- candidates and their first looks
    def candidates(self, specs: list[RunSpec] | None = None) -> list[str]:
        return list(dict.fromkeys(s.strategy for s in (self.specs if specs is None else specs)))

    def first_look(self, candidate: str, specs: list[RunSpec] | None = None) -> RunSpec:
        """``candidate``'s first run: its cheapest, at the largest train size that costs no more
        (:attr:`SAME_PRICE`). A prompt-only strategy reads a fixed number of train rows (few-shot's
        exemplars, a prompt search's sets and bootstrap), so its run at 256 costs what its run at 64
        does; measured at or past the rows it reads, it is measured, not extrapolated, at every larger
        size (:func:`.curves._flat_past`): the same seconds buy a narrow band instead of one from a
        single small size (prompt search at 64 on Financial PhraseBank: its band at 1000 spanned
        most of the scale, and kept "prompt or train?" open)."""
        mine = [s for s in (self.specs if specs is None else specs) if s.strategy == candidate]
        seed = min(s.seed for s in mine)
        mine = [s for s in mine if s.seed == seed]
        cheapest = min(self.cost(s) for s in mine)
        return max(
            (s for s in mine if self.cost(s) <= self.SAME_PRICE * cheapest), key=lambda s: (s.train_size, -s.seed)
        )

    def at_target(self, candidate: str) -> RunSpec | None:
        """``candidate``'s first-seed run at the target (or its only size, zero-shot's 0)."""
        return next(
            (s for s in self.planned if s.strategy == candidate and s.train_size in (self.target, 0) and s.seed == 0),
            None,
        )

    def _target_seconds(self, candidate: str) -> float:
        s = self.at_target(candidate)
        return (self.seconds(s) if s is not None else 0.0) + self.finish_seconds(candidate)

    def need(self, candidates: list[str]) -> float:
        """Seconds to give each of ``candidates`` a first look and still measure the dearest of them at
        the target in full (whichever wins)."""
        firsts = sum(self.seconds(self.first_look(c, self.planned)) for c in candidates)
        return firsts + max((self._target_seconds(c) for c in candidates), default=0.0)

    def group(self, candidate: str) -> tuple[str, str]:
        """(family, where): a compare keeps one candidate of each when the budget is short."""
        where = self.cfg.endpoint_of(candidate) or self.cfg.base_of(candidate) or ""
        return get_strategy(candidate).changes, where

    # -------------------------------------------------------------- the budget, before anything runs
    def check_budget(self) -> None:
        """Say, before anything runs, when the budget cannot fit a first look at every candidate and the
        winner's run; then refuse (``strict_budget``) or leave out what frees the most time, keeping
        the cheapest candidate of each family on each base and endpoint."""
        budget = self.cfg.budget_seconds
        if budget is None:
            return
        path = Path(self.out) / PLAN_FILE
        if path.exists():  # a resumed compare keeps the choice it made at its start
            import json

            saved = json.loads(path.read_text())
            self.left_out = saved.get("left_out", [])
            self.held_at_start = saved.get("held_s")
            self.first_est = saved.get("first_looks_s", {})
            self._apply_left_out()
            return
        cands = self.candidates()
        need = self.need(cands)
        if need <= budget:
            self._accept(path, {"budget_s": budget, "need_s": need, "left_out": []})
            return
        head = (
            f"--budget {minutes(budget)} cannot fit a first look at all {len(cands)} candidates and the "
            f"winner's run at {self.target} examples: estimated {minutes(need)} on this machine; use --budget "
            f"{minutes(self.ASK_MARGIN * need, up=True)} or more, or fewer rows (--test-limit, --train-sizes)"
        )
        if self.cfg.strict_budget:
            raise ValueError(head + " (--strict-budget)")
        keep = self.family_heads(cands)
        kept = list(cands)
        while self.need(kept) > budget:
            optional = [c for c in kept if keep[self.group(c)] != c]
            if not optional:
                break
            drop = max(optional, key=lambda c: self.need(kept) - self.need([k for k in kept if k != c]))
            kept.remove(drop)
            family, where = self.group(drop)
            self.left_out.append(
                {
                    "candidate": drop,
                    "family": family,
                    "first_look_s": round(self.seconds(self.first_look(drop, self.planned)), 1),
                    "at_target_s": round(self._target_seconds(drop), 1),
                    "why": f"the budget: {keep[(family, where)]} is the cheapest {family.replace('_', ' ')} candidate "
                    f"on {where} and stays; leaving {drop} out frees the most time",
                }
            )
        if self.need(kept) > budget:
            raise ValueError(
                f"{head}; even one candidate of each family ({', '.join(kept)}) needs "
                f"{minutes(self.need(kept))}: use --budget {minutes(self.ASK_MARGIN * self.need(kept), up=True)} "
                f"or more"
            )
        console.print(
            f"[yellow]{head}.[/] Going on with {len(kept)} of them (--strict-budget refuses instead); "
            f"left out: "
            + "; ".join(f"{x['candidate']} (first look est. {x['first_look_s']:.0f} s)" for x in self.left_out),
            highlight=False,
            soft_wrap=True,
        )
        self._apply_left_out()
        self._accept(
            path, {"budget_s": budget, "need_s": need, "kept_need_s": self.need(kept), "left_out": self.left_out}
        )

    def _accept(self, path: Path, plan: dict) -> None:
        """Keep the estimates the budget was accepted on (round one follows them), in ``path`` too."""
        self.held_at_start = self.reserve()
        self.first_est = {c: self.seconds(self.first_look(c)) for c in self.candidates()}
        atomic_write_json(path, {**plan, "held_s": self.held_at_start, "first_looks_s": self.first_est})

    def _apply_left_out(self) -> None:
        # a candidate measured after all (a late look, _late_look) is back in the race, on resume too
        ran = {r.strategy for r in load_results(self.out)} if Path(self.out).exists() else set()
        self.left_out = [x for x in self.left_out if x["candidate"] not in ran]
        gone = {x["candidate"] for x in self.left_out}
        self.specs = [s for s in self.planned if s.strategy not in gone]

    def tuning_allowance(self) -> float | None:
        """Seconds tuning may take: never more than its share of the budget, nor what the first looks
        and the winner's run need (None: no budget). Asked again before each variant: the variants
        measure this machine's rates, and when those make the runs dearer the allowance shrinks."""
        if self.cfg.budget_seconds is None:
            return None
        return max(
            0.0, min(TUNING_SHARE * self.cfg.budget_seconds, self.cfg.budget_seconds - self.need(self.candidates()))
        )

    # -------------------------------------------------------------- the reserve
    def leader(self) -> str | None:
        return self.state.leader if self.state is not None and self.state.leader else None

    def _unlooked(self, done: dict) -> list[str]:
        """Candidates without a finished run yet (whose first look was not cut or skipped for good)."""
        ran = {r.strategy for r in done.values()}
        return [c for c in self.candidates() if c not in ran and self.first_look(c).id not in self.cut | self.unfit]

    def reserve(self, done: dict | None = None, but: RunSpec | None = None) -> float:
        """Seconds held back for the winner's run at the target (unless it is ``but``) and its final
        measurements: the leader's, or before there is one, the dearest among the candidates."""
        done = done or {}
        if self.released:  # nothing fits at the target any more: only the recommended run's final rows
            lead = self.leader()
            return self.finish_seconds(lead) if lead else 0.0
        if but is not None and but.id == self.standing_in:
            return self.finish_seconds(but.strategy)  # the leader's run no longer fits: nothing else is held
        lead = self.leader()
        if lead is None:
            if self.held_at_start is not None:
                return self.held_at_start
            return max((self._target_seconds(c) for c in self.candidates() if self.at_target(c) != but), default=0.0)
        run = self.at_target(lead)
        held = self.finish_seconds(lead)
        if self.standing_in in done:  # measured in place of the leader's run, which no longer fitted
            return max(held, self.finish_seconds(done[self.standing_in].strategy))
        if run is not None and run.id not in done and run != but:
            held += self.seconds(run)
        return held

    def remaining(self, guess: float) -> float:
        return guess + sum(self.seconds(s) for s, _ in (self.state.candidates[1:] if self.state else []))

    def _own_limit(self, guess: float) -> float:
        """A run's own time limit, before the budget: a few times its estimate, plus a minute."""
        return self.OVERRUN * guess + 60.0

    def limit(self, spec: RunSpec, guess: float, spent: float) -> float | None:
        """Seconds ``spec`` may run before it is cut: a few times its estimate, and never into the time
        reserved for the winner (nor, for the reserved run itself, past the budget)."""
        own = self._own_limit(guess)
        if self.cfg.budget_seconds is None:
            return own
        left = self.cfg.budget_seconds - spent - self.reserve(self._done, but=spec)
        return max(1.0, min(own, left))

    # -------------------------------------------------------------- the next run
    def _race(self, records: list[dict]):
        # A candidate whose first look was cut waits for a late look (_late_look). Its smaller sizes are
        # not round one's either: the race would offer one as a first look and withhold the leader
        # meanwhile (AG News at 500, 15m: prompt search's first look at 256 cut, its run at 64, no
        # cheaper, kept round one open, so no leader, and the time held for LoRA at 500 was freed as
        # if no run at the target fitted).
        ran = {r.strategy for r in records_of(records)}
        waiting = {s.id for s in self.specs if s.strategy not in ran and self.first_look(s.strategy).id in self.cut}
        return race(
            records,
            self.specs,
            confidence=self.cfg.confidence,
            cost=self.cost,
            first_key=self.first_key(),
            exclude=self.cut | self.unfit | waiting,
            tie=self.order,
            asked=self.candidates(self.planned),
            first={c: self.first_look(c).train_size for c in self.candidates()},
        )

    def next(self, done: dict, spent: float):
        self._done = done
        for _ in range(360):  # other workers hold every candidate: wait for their results (up to an hour)
            done.update({r.id: r for r in load_results(self.out)})
            self.state = self._race(list(done.values()))
            if self.state.decided:
                return None
            pick = self._pick(done, spent)
            if pick is None:
                return None
            spec, why = pick
            if claimed(self.out, spec.id):
                time.sleep(10)
                continue
            console.print(f"  race: {why}", highlight=False, soft_wrap=True)
            return spec, self.seconds(spec)
        return None

    def _pick(self, done: dict, spent: float):
        todo = [(s, why) for s, why in self.state.candidates if s.id not in self.cut]
        unlooked = self._unlooked(done)
        if unlooked:  # round one: every first look that fits, the cheapest first
            fits = [(s, why) for s, why in todo if self._fits(s, spent, done, self.first_est.get(s.strategy))]
            # A first look that fits by the plan's estimate but, re-estimated now (tuning chose a dearer
            # variant: AG News' few-shot with nearest exemplars, 13 s planned, 96 s now), could not
            # finish before the time held for the winner: it waits for a late look instead of being
            # started and cut (88 s spent for nothing there).
            late = [s for s, _ in fits if not self._can_finish(s, spent, done)]
            for s in late:
                self.unfit |= {x.id for x in self.specs if x.strategy == s.strategy}
            fits = [(s, why) for s, why in fits if s not in late]
            if fits:
                return fits[0]
            # The rest of round one does not fit (the first looks took longer than estimated): those
            # candidates stay unmeasured, and the winner among the measured ones is still measured at
            # the target in the time reserved for it, the one run that may follow.
            self.unfit |= {s.id for s in self.specs if s.strategy in unlooked}
            self.stopped = True
            if not done:
                return None
            self.state = self._race(list(done.values()))
            if self.state.decided:
                return None
            todo = [(s, why) for s, why in self.state.candidates if s.id not in self.cut | self.unfit]
        lead = self.leader()
        lead_target = lead_run = self.at_target(lead) if lead else None
        # The winner is measured at the target (or a stand-in in its place): a first look that did not
        # fit round one comes before any further promotion, so every candidate is measured first.
        measured = (lead_target is not None and lead_target.id in done) or self.standing_in in done
        late = self._late_look(done, spent) if measured or self.released else None
        if late is not None:
            return late
        if lead_run is not None and (lead_run.id in done or lead_run.id in self.cut):
            lead_run = None
        # The race's order, the first run that fits (a challenger's dear run at 256 that does not fit
        # leaves the time to a cheaper one that can still change the answer); none fits: stopped.
        pick = None if self.stopped else next((t for t in todo if self._fits(t[0], spent, done)), None)
        if pick is None and todo:
            self.stopped = True
        if pick is None and lead_run is not None and self._fits(lead_run, spent, done):
            pick = (
                lead_run,
                f"the budget is nearly spent: {lead} leads, so it is measured at the target size "
                f"in the time reserved for it",
            )
        if pick is None and lead_run is not None and self._worth_trying(lead_run, spent, done, self.NEAR_SHARE):
            pick = (
                lead_run,
                f"{lead} at the target misses the time left by under {100 * (1 - self.NEAR_SHARE):.0f}% of its "
                f"estimate ({self.seconds(lead_run):.0f} s), less than estimates err: it is tried before any "
                f"stand-in, and cut at the budget's end",
            )
        if (
            pick is None
            and lead_target is not None
            and lead_target.id not in done
            and (lead_run is None or not self._fits(lead_run, spent, done))
        ):
            pick = self._stand_in(done, spent, lead)
        if pick is None and lead_run is not None and self._worth_trying(lead_run, spent, done):
            pick = (
                lead_run,
                f"{lead} at the target no longer fits its estimate ({self.seconds(lead_run):.0f} s), "
                f"but without it nothing is measured at the user's size: it is tried in the time "
                f"left, and cut at the budget's end",
            )
        if pick is None and (measured or self.released):
            pick = self._race_on(todo, spent, done)
        if pick is None and not measured and not self.released and self.cfg.budget_seconds is not None:
            pick = self._release(todo, spent, done)
        return pick

    def _release(self, todo: list, spent: float, done: dict):
        """Neither the leader's run at the target nor a stand-in's fits what is left, nor is worth
        trying (Financial PhraseBank at 15m, its first looks measured 2x slower than estimated: the
        compare ended after 3 runs with 11 of 15 minutes unused, holding them for a run that could
        not be made, and few-shot, prefix and prompt search never measured). The time held is free:
        the first looks not made come first (both sides of the question), then the race's next runs,
        while they fit; the answer then says it rests on smaller sizes."""
        self.released = True
        return self._late_look(done, spent) or self._race_on(todo, spent, done)

    def _race_on(self, todo: list, spent: float, done: dict):
        """The race stopped to keep the winner's run (AG News at 1000, 38m: a first look did not fit
        beside it), the winner is measured at the target and every late look made, and minutes are
        left (13 of 38 there, with six challengers predicted from one size): the race's next run,
        when it fits, is made after all, so the time goes to what can still change the answer."""
        if not self.stopped:
            return None
        spec, why = next(((s, w) for s, w in todo if self._fits(s, spent, done)), (None, None))
        if spec is None:
            return None
        now = "the winner is measured at the target" if not self.released else "no run at the target fits"
        return spec, f"{now} and its reserve is free: {why}"

    def _stand_in(self, done: dict, spent: float, lead: str):
        """The leader's run at the target no longer fits (Financial PhraseBank on two bases and an
        endpoint: hybrid@smollm2's, re-estimated at 221 s with 179 s left, was tried, cut, and the answer
        was left at 32 of 128 examples). The candidate still in the race with the best prediction at the
        target whose own run there fits the time left (with its final measurements) is measured there
        instead, so the answer rests on a measurement at the user's size; the leader keeps its
        prediction, with its band, beside it."""
        if self.cfg.budget_seconds is None or self._answer_at_target(done):
            return None
        left = self.cfg.budget_seconds - spent
        fits = self.state.fits
        for c in sorted((c for c in self.state.alive if c != lead and c in fits), key=lambda c: -fits[c].point):
            run = self.at_target(c)
            if run is None or run.id in done or run.id in self.cut | self.unfit:
                continue
            if self.seconds(run) + self.finish_seconds(c) <= left:
                self.standing_in = run.id
                return run, (
                    f"{lead}'s run at the target ({self.seconds(self.at_target(lead)):.0f} s) does not fit the "
                    f"{max(0.0, left):.0f} s left: {c}, the best prediction whose run there fits, is measured at "
                    f"the target instead, so the answer rests on the user's size"
                )
        return None

    def _answer_at_target(self, done: dict) -> bool:
        """The leader, or a stand-in for it, is measured at the target. A prompt candidate's first look
        made there because it cost no more (:meth:`first_look`) does not count: it does not free the
        time held for the leader's run."""
        lead = self.leader()
        run = self.at_target(lead) if lead else None
        return (run is not None and run.id in done) or self.standing_in in done

    def _late_look(self, done: dict, spent: float):
        """The winner is measured at the target and its reserve is free: a first look that did not fit
        round one (E2E at 256: hybrid, 179 s, with 285 s left at the end), or of a candidate the budget
        check left out (AG News at 500, 15m: prompt search, about 90 s, with 2 minutes unused at the
        end), is made now if it fits, those of the side that does not lead first, then the cheapest,
        so that no candidate stays unmeasured while the budget still has room for it. A left-out
        candidate measured so is back in the race."""
        gone = {x["candidate"] for x in self.left_out}
        now = (
            "no run at the target fits the time left, so the time held for it is free"
            if self.released
            else "the winner is measured at the target"
        )
        squeezed = {s.strategy for s in self.planned if s.id in self.squeezed}
        # The question first, as the race orders its challengers: a candidate of the side that does
        # not lead (a prompt against a trained leader) can change the answer to "prompt or train?"
        # (Banking77 at 20m: hybrid's late look, the cheaper, took the time prompt search's needed,
        # and the question stayed open with only the prompt side's cheapest two measured); then the
        # cheapest first.
        lead = self.leader()
        lead_side = SIDES.get(get_strategy(lead).kind) if lead else None
        late = sorted(
            {s.strategy for s in self.specs if s.id in self.unfit} | gone | squeezed,
            key=lambda c: (
                SIDES.get(get_strategy(c).kind) == lead_side,
                self.seconds(self.first_look(c, self.planned)),
            ),
        )
        for c in late:
            spec = self.first_look(c, self.planned)
            ran = self.squeezed.get(spec.id)
            # A squeezed first look needed more than the seconds it ran: it is tried again only where
            # that much and a margin fits, so that the second try is not cut too.
            guess = max(self.seconds(spec), self.RETRY * ran) if ran is not None else None
            if spec.id in done or (spec.id in self.cut and ran is None) or not self._fits(spec, spent, done, guess):
                continue
            self.skipped = [s for s in self.skipped if s["id"] != spec.id]
            if ran is not None:
                self.cut -= {s.id for s in self.planned if s.strategy == c}
                self.retried.add(spec.id)
                del self.squeezed[spec.id]
                return spec, (
                    f"{now} and {c}'s first look, cut in round one after {ran:.0f} s by the time held for the "
                    f"winner, fits the time left ({guess:.0f} s): tried once more"
                )
            self.unfit -= {s.id for s in self.planned if s.strategy == c}
            if c in gone:
                self.left_out = [x for x in self.left_out if x["candidate"] != c]
                self.specs += [s for s in self.planned if s.strategy == c]
                return spec, f"{now} and {c}'s first look, left out by the budget check, fits the time left"
            return spec, f"{now} and {c}'s first look, which did not fit round one, fits the time left"
        return None

    def _fits(self, spec: RunSpec, spent: float, done: dict, guess: float | None = None) -> bool:
        guess = self.seconds(spec) if guess is None else guess
        held = self.reserve(done, but=spec)
        if self.cfg.budget_seconds is None or spent + guess + held <= self.cfg.budget_seconds:
            return True
        left = self.cfg.budget_seconds - spent
        if all(s["id"] != spec.id for s in self.skipped):
            self.skipped.append(
                {
                    "id": spec.id,
                    "estimate_s": guess,
                    "left_s": left,
                    "reserved_s": held,
                    "reason": f"estimated {guess:.0f} s, {max(0.0, left):.0f} s of budget left"
                    + (
                        f" of which {held:.0f} s reserved for measuring the winner at the target and in full"
                        if held
                        else ""
                    ),
                }
            )
        return False

    def _can_finish(self, spec: RunSpec, spent: float, done: dict) -> bool:
        """Whether ``spec``, at its current estimate, can finish in the time its limit will allow
        (the budget less what is held for the winner). Its whole estimate, not ATTEMPT_SHARE of it: a
        first look that does not start now gets a late look once the time held is free, while one
        started short of its estimate is likely cut with its seconds spent for nothing (AG News at
        500, 15m: few-shot's, estimated 103 s, limited to 85 s, cut at 93 s)."""
        if self.cfg.budget_seconds is None:
            return True
        left = self.cfg.budget_seconds - spent - self.reserve(done, but=spec)
        return left >= self.seconds(spec)

    def _worth_trying(self, spec: RunSpec, spent: float, done: dict, share: float | None = None) -> bool:
        """The reserved run, re-estimated past what is left (this compare measured slower rates than
        the priors, or tuning took its share), may still fit: the estimates of first runs ran from
        0.76 to 1.4 times the measured seconds (docs/results/dependable_answers_notes.md). With at
        least ATTEMPT_SHARE of its estimate left it is tried rather than leaving the answer
        unmeasured (only then); its time limit still ends it at the budget's end."""
        if self.cfg.budget_seconds is None or self._answer_at_target(done):
            return False  # the answer rests on a measurement at the user's size already
        left = self.cfg.budget_seconds - spent - self.reserve(done, but=spec)
        return left >= (self.ATTEMPT_SHARE if share is None else share) * self.seconds(spec)

    def on_cut(self, spec: RunSpec, entry: dict) -> None:
        if spec.id in self.retried:
            entry["retried"] = True  # cut again: for good, in this session and a resumed one
        self._cut(spec.id, entry)

    def _cut(self, run_id: str, entry: dict | None = None) -> None:
        """A run cut by its time limit is not tried again, nor are its strategy's larger runs (they
        cost more); its smaller ones may still run. Cut by the time held for the winner rather than by
        its own limit (a few times its estimate), and not yet retried, it is ``squeezed``: a first look
        so cut gets one more try as a late look."""
        cut = next((s for s in self.planned if s.id == run_id), None)
        if cut is None:
            return
        self.cut |= {s.id for s in self.planned if s.strategy == cut.strategy and s.train_size >= cut.train_size}
        own = self._own_limit(float((entry or {}).get("estimate_s", 0.0)))
        if entry and not entry.get("retried") and float(entry.get("left_s", own)) < own - 1.0:
            self.squeezed[run_id] = float(entry.get("seconds", entry.get("left_s", 0.0)))
        else:
            self.squeezed.pop(run_id, None)

    # -------------------------------------------------------------- the end
    def finalize(self, ctx, records: list) -> list[RunRecord]:
        """Measure the recommended strategy's runs in full (from their kept artifacts), score every
        screened finalist again on all test rows, then let the artifacts of the target-size runs go as
        --keep-artifacts says; returns the records."""
        from adaptlab.compare.measure import finalize, prune_artifact, rescore_in_full
        from adaptlab.compare.recommend import constraints_for, recommend

        records = records_of(records)
        alive = set(self._race(records).alive)
        for rec in records:  # finalists first: the recommendation below must see their full rows
            if (
                rec.screened
                and rec.train_size in (0, self.target)
                and rec.strategy in alive
                and (self.out / "artifacts" / rec.id).is_dir()
            ):
                console.print(f"  scoring {rec.id} on every test row (a finalist)", highlight=False)
                rescore_in_full(rec, rec.spec, self.cfg, ctx, self.out)
                write_result(self.out, rec)
        best = recommend(records, constraints_for(self.cfg))
        for rec in records:
            folder = self.out / "artifacts" / rec.id
            if not folder.is_dir():
                continue
            measure = rec.strategy == best.winner and rec.train_size in (0, best.target) and rec.light
            prune = rec.cost.get("artifact_kept") and self.cfg.keep_artifacts != "all"
            if not (measure or prune):
                continue  # nothing changes for this run: its record stays as written
            if measure:
                console.print(f"  measuring {rec.id} in full (the recommended run)", highlight=False)
                finalize(rec, rec.spec, self.cfg, ctx, self.out)
            if prune:
                rec.cost["artifact_kept"] = prune_artifact(folder, self.cfg.keep_artifacts, rec.artifact_bytes)
            write_result(self.out, rec)
        return records

    def finish(self, out: Path, records: list[RunRecord]) -> None:
        """race.json: the final state, the decision in one sentence (agreeing with the recommendation),
        every planned run not run with why, every candidate never run or left out with why and what
        its first look would have cost."""
        from adaptlab.compare.recommend import constraints_for, recommend

        state = self._race(records)
        mins = compare_minutes(out, records)
        not_run = self._not_run(state, records)
        ran = {r.strategy for r in records}
        never = []
        for st in self.candidates():
            if st in ran:
                continue
            first = self.first_look(st)
            why = next(x["why"] for x in not_run if x["id"] == first.id)
            never.append(
                {
                    "strategy": st,
                    "why": why,
                    "first_run": first.id,
                    "estimate_s": round(self.seconds(first), 1),
                    "at_target_s": round(
                        self.tokens.seconds(st, self.target if first.train_size else 0, self.tokens.n_test), 1
                    ),
                }
            )
        never += [
            {
                "strategy": x["candidate"],
                "why": f"left out by the budget check: {x['why']}",
                "first_run": self.first_look(x["candidate"], self.planned).id,
                "estimate_s": x["first_look_s"],
                "at_target_s": x["at_target_s"],
            }
            for x in self.left_out
        ]
        rec = recommend(records, constraints_for(self.cfg)) if records else None
        line = decision_line(
            state, len(records), mins, len(not_run), never=[n["strategy"] for n in never], recommendation=rec
        )
        atomic_write_json(
            out / "race.json",
            {
                **state.to_dict(),
                "decision": line,
                "runs": len(records),
                "minutes": mins,
                "not_run": not_run,
                "never_run": never,
                "left_out": self.left_out,
                "candidates": self.candidates(self.planned),
                "budget_s": self.cfg.budget_seconds,
                "tie_order": self.order,
                "screen_rows": self.tokens.n_screen,
                "test_rows": self.tokens.n_test,
                "profile": self.tokens.prof.to_dict(),
            },
        )
        console.print(f"[bold]{line}[/]", highlight=False, soft_wrap=True)
        for n in never:
            console.print(
                f"  never run: {n['strategy']}: {n['why']} (its first run, {n['first_run']}, est. "
                f"{n['estimate_s']:.0f} s)",
                highlight=False,
                soft_wrap=True,
            )

    def _not_run(self, state, records: list[RunRecord]) -> list[dict]:
        finished = {r.id for r in records}
        skipped = {s["id"]: s["reason"] for s in load_skipped(self.out) + self.skipped}
        out = []
        for spec in self.specs:
            if spec.id in finished:
                continue
            if spec.id in skipped:
                why = f"budget: {skipped[spec.id]}"
            elif spec.id in self.unfit:  # re-estimated, it could not finish before the time held or the end
                why = (
                    f"budget: re-estimated at {self.seconds(spec):.0f} s once this machine's rates were "
                    f"measured, it could not finish in the time left"
                )
            elif spec.strategy in state.dropped:
                why = f"{spec.strategy} dropped: {state.dropped[spec.strategy]}"
            elif state.fits.get(spec.strategy) and state.fits[spec.strategy].measured_at_target:
                why = f"{spec.strategy} is measured at the target size; its smaller sizes cannot change the winner"
            elif not state.decided:
                why = "not reached: the budget ended before the race was decided"
            else:
                why = "not needed to decide"
            out.append({"id": spec.id, "why": why, "estimate_s": round(self.seconds(spec), 1)})
        return out
