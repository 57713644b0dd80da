"""The experiment grid: plan, estimate, schedule under a budget, run, store, resume.

Each finished run is one JSON file (``results/<run id>.json``, sections run/train/eval/cost/meta)
written atomically when the run is complete, so a killed or Ctrl-C'd grid leaves no partial result
marked done, and re-running the same command skips what is finished. Hand-written rather than
taken from an experiment tracker: the grid is small, the results must stay plain files that the
report reads alone, and the scheduler needs our cost model.
"""

from __future__ import annotations

import collections
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from adaptlab.compare.config import CompareConfig
from adaptlab.compare.tuning import TUNING_SHARE, load_tuning
from adaptlab.strategies.registry import get_strategy, make_config
from adaptlab.utils import TimeUp, atomic_write_json, machine_info, package_versions, speed_probe, time_limit

console = Console()

# A gradient strategy's prior seconds per (train example x epoch) is its spec's ``train_prior``
# (registered in its own folder), used until the grid has measured its own; this one stands in
# for a strategy that registered none. Prompt strategies train nothing.
TRAIN_PRIOR_DEFAULT = 0.3
EVAL_PRIOR = 0.08          # seconds per scored example at 0 labels, x (1 + labels / 20): demo (12 labels) 0.13 s


@dataclass(frozen=True)
class RunSpec:
    strategy: str
    train_size: int
    seed: int

    @property
    def id(self) -> str:
        return f"{self.strategy}-n{self.train_size}-s{self.seed}"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def plan(cfg: CompareConfig, n_train: int, task: str | None = None) -> list[RunSpec]:
    """strategies x train sizes x seeds; a strategy that uses no train data runs once per seed; with
    ``task``, only the strategies that support that task type (:meth:`StrategySpec.supports`)."""
    sizes = sorted({n_train if s == "all" else min(int(s), n_train) for s in cfg.train_sizes})
    out = []
    for name in cfg.strategies:
        if task is not None and not get_strategy(name).supports(task):
            continue
        for seed in range(cfg.seeds):
            if not get_strategy(name).uses_train_data:
                out.append(RunSpec(name, 0, seed))
                continue
            for n in sizes:
                out.append(RunSpec(name, n, seed))
    return out


def results_dir(out: Path) -> Path:
    return Path(out) / "results"


def load_results(out: Path) -> list[dict]:
    """Every finished run's record (files that do not parse are reported and ignored)."""
    recs = []
    for f in sorted(results_dir(out).glob("*.json")):
        try:
            recs.append(json.loads(f.read_text()))
        except json.JSONDecodeError:
            console.print(f"[yellow]warning:[/] {f}: unreadable result, ignored (it will be re-run)")
    return recs


class Estimator:
    """Seconds a run will take, from what this grid has measured (priors until then)."""

    def __init__(self, cfg: CompareConfig, n_eval: int, n_labels: int):
        self.cfg, self.n_eval, self.n_labels = cfg, n_eval, n_labels
        # (work, fit seconds) per strategy, work as in _work.
        self._fits: dict[str, list[tuple[float, float]]] = {}
        # Scoring speed differs by strategy (a few-shot prompt is several times longer than a
        # trained model's), so eval seconds and scored examples are summed per strategy; the pooled
        # rate stands in for a strategy not measured yet. Sums, not the last run: one run slowed by
        # other work on the machine should not swing every estimate.
        self._eval: dict[str, list[float]] = {}

    @property
    def eval_rate(self) -> float | None:
        """Seconds per scored example over every observed run (None before the first)."""
        seconds = sum(v[0] for v in self._eval.values())
        scored = sum(v[1] for v in self._eval.values())
        return seconds / scored if scored else None

    def strategy_eval_rate(self, strategy: str) -> float:
        if strategy in self._eval:
            seconds, scored = self._eval[strategy]
            return seconds / scored
        pooled = self.eval_rate
        return pooled if pooled is not None else EVAL_PRIOR * (1 + self.n_labels / 20)

    @staticmethod
    def _work(kind: str, train_size: int, epochs: float) -> float:
        """What fit time grows with: train examples x epochs (prompt strategies: examples)."""
        return max(1, train_size) * (epochs if kind == "gradient" else 1.0)

    def observe(self, rec: dict) -> None:
        r, tr, ev = rec["run"], rec["train"], rec["eval"]
        if r["train_size"] or r["kind"] == "prompt":
            work = self._work(r["kind"], r["train_size"], r.get("epochs") or 1.0)
            self._fits.setdefault(r["strategy"], []).append((work, tr["seconds"]))
        if ev.get("seconds") and ev.get("scored_examples"):
            acc = self._eval.setdefault(r["strategy"], [0.0, 0.0])
            acc[0] += ev["seconds"]
            acc[1] += ev["scored_examples"]

    def fit_line(self, strategy: str, prior_rate: float) -> tuple[float, float] | None:
        """(fixed seconds, seconds per unit of work) of fitting ``strategy``, from its measured runs.

        A run's fit time is a fixed part (dev evaluations, setting up adapters, a second stage)
        plus a part that grows with the data; a small run is mostly the fixed part, so dividing its
        time by its size would make a 1000-example run look many times too long. Two or more sizes
        measured: least squares. One: the prior rate, the rest of the measured time being fixed.
        """
        pts = self._fits.get(strategy)
        if not pts:
            return None
        xs = {w for w, _ in pts}
        if len(xs) == 1:
            w = next(iter(xs))
            s = statistics.fmean(sec for _, sec in pts)
            fixed = max(0.0, s - prior_rate * w)
            return fixed, (s - fixed) / w
        mx, my = statistics.fmean(w for w, _ in pts), statistics.fmean(sec for _, sec in pts)
        slope = sum((w - mx) * (sec - my) for w, sec in pts) / sum((w - mx) ** 2 for w, _ in pts)
        slope = max(0.0, slope)
        fixed = my - slope * mx
        if fixed < 0:  # through the origin instead
            fixed, slope = 0.0, sum(w * sec for w, sec in pts) / sum(w * w for w, _ in pts)
        return fixed, slope

    def epochs(self, strategy: str) -> float:
        return self.cfg.epochs_for(strategy)

    def scored_per_run(self, light: bool = False) -> int:
        """Examples scored per run besides training: test, train-gap sample, fragility variants
        (``light``: the test rows only, as the adaptive compare scores runs below its target size)."""
        if light:
            return self.n_eval
        frag = self.cfg.fragility_examples * (1 + self.cfg.fragility_k + 5) if self.cfg.fragility_k else 0
        steady = self.cfg.consistency_examples * (self.cfg.consistency_samples if not self.n_labels else 1)
        return self.n_eval + min(self.cfg.fragility_examples, 64) + frag + steady

    def __call__(self, spec: RunSpec, kind: str, light: bool = False) -> float:
        eval_rate = self.strategy_eval_rate(spec.strategy)
        seconds = self.scored_per_run(light) * eval_rate
        work = self._work(kind, spec.train_size, self.epochs(spec.strategy))
        sp = get_strategy(spec.strategy)
        prior = (sp.train_prior if sp.train_prior is not None else TRAIN_PRIOR_DEFAULT) if kind == "gradient" else 0.0
        line = self.fit_line(spec.strategy, prior)
        if line is not None:
            seconds += line[0] + line[1] * work
        elif kind == "gradient":
            dev_evals = self.epochs(spec.strategy) * min(self.cfg.dev_limit, 64) * eval_rate
            seconds += prior * work + dev_evals
        else:  # a search spends calls whatever the data
            settings = self.cfg.settings_for(spec.strategy)
            calls = sp.strategy_cls.planned_calls(make_config(spec.strategy, **settings))
            seconds += (calls or 0) * eval_rate
        return seconds


def order_runs(todo: list[RunSpec], cost, rounds: dict[str, int]) -> list[RunSpec]:
    """The order to run ``todo`` in: by rounds, then cheapest first. A strategy's next run waits until
    every strategy has had as many runs as it has (``rounds``: runs each strategy has had), so a budget
    cuts larger sizes and second seeds, not whole strategies: one whose fit time does not grow with
    the data (prompt search) must not fill the budget with its large sizes while another has no run."""
    costs = {s.id: cost(s) for s in todo}
    round_of: dict[str, int] = {}
    for strategy in {s.strategy for s in todo}:  # a run's round: the strategy's runs so far + its rank among the rest
        mine = sorted((s for s in todo if s.strategy == strategy), key=lambda s: (costs[s.id], s.train_size, s.id))
        round_of.update({s.id: rounds.get(strategy, 0) + i for i, s in enumerate(mine)})
    return sorted(todo, key=lambda s: (round_of[s.id], costs[s.id], s.train_size, s.id))


def claims_dir(out: Path) -> Path:
    return Path(out) / "claims"


def _claim_alive(info: dict) -> bool:
    """A claim is live while its process runs (same host) or, from another host, for 24 hours."""
    if info.get("host") != socket.gethostname():
        return time.time() - info.get("time", 0) < 24 * 3600
    try:
        os.kill(int(info["pid"]), 0)
        return True
    except (ProcessLookupError, ValueError, KeyError):
        return False
    except PermissionError:
        return True


def _live_claim(path: Path) -> bool:
    """Whether the claim file at ``path`` holds a live claim (an unreadable one is stale)."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return False
    return bool(info) and _claim_alive(info)


def claim(out: Path, run_id: str) -> bool:
    """Take ``run_id`` for this process (several workers can share one grid folder, even on
    several machines over a shared filesystem). O_EXCL creation is atomic; a claim whose process
    has died is taken over."""
    d = claims_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{run_id}.claim"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _live_claim(path):
                return False
            path.unlink(missing_ok=True)  # stale: its worker died; the loser of a race here retries once
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}, f)
        return True
    return False


def release_claim(out: Path, run_id: str) -> None:
    (claims_dir(out) / f"{run_id}.claim").unlink(missing_ok=True)


class GridPicker:
    """The full grid: every planned run, in rounds, cheapest first; a run that will not fit the budget
    is skipped and the next one tried. Every run is measured in full."""

    light = staticmethod(lambda spec: False)
    keep = staticmethod(lambda spec: False)
    screened = staticmethod(lambda spec: False)

    order = None    # tuning goes in plan order

    def __init__(self, cfg: CompareConfig, specs: list[RunSpec], est: Estimator, done: dict, tokens=None):
        self.cfg, self.est, self.tokens = cfg, est, tokens
        self.todo = [s for s in specs if s.id not in done]
        self.rounds = collections.Counter(r["run"]["strategy"] for r in done.values())
        self.kinds = {s.id: get_strategy(s.strategy).kind for s in specs}
        self.skipped: list[dict] = []

    def remaining(self, guess: float) -> float:
        return sum(self.est(s, self.kinds[s.id]) for s in self.todo) + guess

    def next(self, done: dict, spent: float):
        """(spec, estimated seconds) of the next run, or None when the grid is through."""
        while self.todo:
            self.todo = order_runs(self.todo, lambda s: self.est(s, self.kinds[s.id]), self.rounds)  # re-estimated
            spec = self.todo.pop(0)
            self.rounds[spec.strategy] += 1
            guess = self.est(spec, self.kinds[spec.id])
            if _over_budget(self.cfg, spent, guess, spec, self.skipped):
                continue
            return spec, guess
        return None

    def check_budget(self) -> None:
        pass  # the full grid runs what fits and lists the rest

    def tuning_allowance(self) -> float | None:
        """Seconds tuning may take: its share of the budget (None: no budget)."""
        return None if self.cfg.budget_seconds is None else TUNING_SHARE * self.cfg.budget_seconds

    def limit(self, spec: RunSpec, guess: float, spent: float) -> float | None:
        """Seconds ``spec`` may run: what the budget leaves (None: no budget)."""
        return None if self.cfg.budget_seconds is None else max(1.0, self.cfg.budget_seconds - spent)

    def on_cut(self, spec: RunSpec, entry: dict) -> None:
        pass

    def finalize(self, ctx, records: list[dict]) -> list[dict]:
        return records

    def finish(self, out: Path, records: list[dict]) -> None:
        pass


class AdaptivePicker:
    """The race (:mod:`adaptlab.compare.adaptive`): after every run, the state is recomputed from all
    finished runs (other workers' included) and its first candidate runs.

    - **The answer is measured at the target.** From the start, time is reserved for the likely
      winner's run at the target size (the current leader once there are measurements, the priors'
      likeliest before: :mod:`.priors`) and for measuring it in full at the end; no other run may eat
      into it, and when the budget is nearly spent that run is the one made.
    - **Screening.** Runs below the target (and zero-shot's) score a subsample of the test rows
      sized by the statistics (:func:`.costs.screen_rows`); runs at the target, the finalists, score
      every row, and a screened finalist is scored again in full at the end.
    - **Reproducible.** Which run comes next is decided from the records and token-based work alone
      (:class:`.costs.Estimator`), never from the clock: when the race's next run does not fit what
      is left of the budget, the race stops there (after the reserved run) instead of trying a
      cheaper one, so a slower machine reaches less far along the same path.
    - **Measured time.** Every run has a time limit (a few times its estimate, never past what the
      budget leaves it); one that overruns is cut and listed with its measured time."""

    OVERRUN = 3.0            # a run may take this many times its estimate (+ a minute) before it is cut
    ATTEMPT_SHARE = 0.75     # the reserved run is still tried with this share of its estimate left

    def __init__(self, cfg: CompareConfig, specs: list[RunSpec], est: Estimator, out: Path, tokens=None):
        from adaptlab.compare.priors import prior_order

        self.cfg, self.specs, self.est, self.out, self.tokens = cfg, specs, est, out, tokens
        self.kinds = {s.id: get_strategy(s.strategy).kind for s in specs}
        self.target = max((s.train_size for s in specs), default=0)
        self.order = prior_order(list(dict.fromkeys(s.strategy for s in specs)), self.target)
        self.skipped: list[dict] = []
        self.cut: set[str] = set()
        for s in load_skipped(out):
            if s.get("cut"):
                self._cut(s["id"])
        self.stopped = False      # the race's next run did not fit: only the reserved run may follow
        self.state = None

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

    def first_key(self, spec: RunSpec):
        """Round one's order: the likeliest winners first (priors), so that a tight budget leaves out
        the strategies least likely to win, not the leader's closest rivals."""
        return (self.order.index(spec.strategy), self.cost(spec))

    def finish_seconds(self, strategy: str) -> float:
        """Measuring ``strategy``'s recommended run in full at the end: the train gap, fragility,
        consistency (and forgetting) rows."""
        extra = max(0, self.est.scored_per_run(False) - self.est.scored_per_run(True))
        return self.tokens.score_seconds(strategy, extra) + 5.0

    def leader(self) -> str:
        return self.state.leader if self.state is not None and self.state.leader else self.order[0]

    def _likely_at_target(self, records: dict) -> RunSpec | None:
        """The priors' likely winner at the target, while it is not measured there (the first run)."""
        for s in self.specs:
            if s.strategy == self.order[0] and s.train_size in (self.target, 0) and s.seed == 0:
                return None if s.id in records or s.id in self.cut else s
        return None

    def leader_target(self, records: dict) -> RunSpec | None:
        """The leader's first-seed run at the target, while it is not measured there."""
        lead = self.leader()
        for s in self.specs:
            if s.strategy == lead and s.train_size in (self.target, 0) and s.seed == 0:
                return None if s.id in records else s
        return None

    def reserve(self, records: dict | None = None, but: RunSpec | None = None) -> float:
        """Seconds held back: the leader's run at the target (unless it is ``but``) and its final
        measurements."""
        lead_run = self.leader_target(records or {})
        held = self.finish_seconds(self.leader())
        if lead_run is not None and lead_run != but:
            held += self.seconds(lead_run)
        return held

    def check_budget(self) -> None:
        """Refuse, before anything runs, a budget that cannot fit the likely winner's run at the target
        and its final measurements, with the budget that would."""
        if self.cfg.budget_seconds is None:
            return
        need = self.reserve({})
        first = sum(self.seconds(s) for s in self._first_round())
        if need > self.cfg.budget_seconds:
            lead = self.order[0]
            raise ValueError(
                f"--budget {_minutes(self.cfg.budget_seconds)} cannot fit measuring {lead} (the likely winner) at "
                f"{self.target} examples: estimated {_minutes(need)} on this machine with its final measurements; "
                f"use --budget {_minutes(1.25 * need, up=True)} or more ({_minutes(1.25 * (need + first), up=True)} "
                f"to also give every strategy a first run), or fewer rows (--test-limit, --train-sizes)")

    def tuning_allowance(self) -> float | None:
        """Seconds tuning may take: never more than its share of the budget, nor what the reserved run
        and a first round of every strategy need (None: no budget). Tuning asks again before each
        variant: the variants it fits measure this machine's rates, and when those make the reserved
        run dearer than the priors said, the allowance shrinks with it."""
        if self.cfg.budget_seconds is None:
            return None
        first = sum(self.seconds(s) for s in self._first_round())
        return max(0.0, min(TUNING_SHARE * self.cfg.budget_seconds, self.cfg.budget_seconds - self.reserve({}) - first))

    def _first_round(self) -> list[RunSpec]:
        firsts: dict[str, RunSpec] = {}
        for s in sorted(self.specs, key=lambda s: (s.train_size, s.seed)):
            firsts.setdefault(s.strategy, s)
        return list(firsts.values())

    def remaining(self, guess: float) -> float:
        return guess + sum(self.seconds(s) for s, _ in (self.state.candidates[1:] if self.state else []))

    def limit(self, spec: RunSpec, guess: float, spent: float) -> float | None:
        """Seconds ``spec`` may run before it is cut: a few times its estimate, and never into the time
        reserved for the leader (nor, for the reserved run itself, past the budget)."""
        own = self.OVERRUN * guess + 60.0
        if self.cfg.budget_seconds is None:
            return own
        left = self.cfg.budget_seconds - spent - self.reserve(self._done, but=spec)
        return max(1.0, min(own, left))

    def next(self, done: dict, spent: float):
        from adaptlab.compare.adaptive import race

        self._done = done
        for _ in range(360):  # other workers hold every candidate: wait for their results (up to an hour)
            records = load_results(self.out)
            done.update({r["run"]["id"]: r for r in records})
            self.state = race(list(done.values()), self.specs, confidence=self.cfg.confidence, cost=self.cost,
                              first_key=self.first_key, exclude=self.cut)
            if self.state.decided:
                return None
            todo = [(s, why) for s, why in self.state.candidates if s.id not in self.cut]
            first = self._likely_at_target(done)
            if first is not None:
                todo = [(first, f"{first.strategy} is the likely winner (it leads or ties at the largest size in every "
                                f"committed grid: compare/priors.py): measured at the target size first, so the "
                                f"answer is measured at the user's data size whatever the budget")] + [
                    (s, w) for s, w in todo if s.id != first.id]
            lead_run = self.leader_target(done)
            if lead_run is not None and lead_run.id in self.cut:
                lead_run = None
            pick = todo[0] if todo and not self.stopped else None
            if pick is not None and not self._fits(pick[0], spent, done):
                self.stopped = True
                pick = None
            if pick is None and lead_run is not None and self._fits(lead_run, spent, done):
                pick = (lead_run, f"the budget is nearly spent: {lead_run.strategy} leads, so it is measured at the "
                                  f"target size in the time reserved for it")
            elif pick is None and lead_run is not None and self._worth_trying(lead_run, spent, done):
                pick = (lead_run, f"{lead_run.strategy} at the target no longer fits its estimate "
                                  f"({self.seconds(lead_run):.0f} s), but without it nothing is measured at the "
                                  f"user's size: it is tried in the time left, and cut at the budget's end")
            if pick is None:
                return None
            spec, why = pick
            if _claimed(self.out, spec.id):
                time.sleep(10)
                continue
            console.print(f"  race: {why}", highlight=False, soft_wrap=True)
            return spec, self.seconds(spec)
        return None

    def _fits(self, spec: RunSpec, spent: float, done: dict) -> bool:
        guess = self.seconds(spec)
        held = self.reserve(done, but=spec)
        if self.cfg.budget_seconds is None or spent + guess + held <= self.cfg.budget_seconds:
            return True
        left = self.cfg.budget_seconds - spent
        if all(s["id"] != spec.id for s in self.skipped):
            self.skipped.append({"id": spec.id, "estimate_s": guess, "left_s": left, "reserved_s": held,
                                 "reason": f"estimated {guess:.0f} s, {max(0.0, left):.0f} s of budget left"
                                           + (f" of which {held:.0f} s reserved for measuring {self.leader()} at "
                                              f"the target and in full" if held else "")})
        return False

    def _worth_trying(self, spec: RunSpec, spent: float, done: dict) -> bool:
        """The reserved run, re-estimated past what is left (this compare measured slower rates than
        the priors, or tuning took its share), may still fit: the estimates of first runs ran from
        0.76 to 1.4 times the measured seconds (docs/results/dependable_answers_notes.md). With at
        least ATTEMPT_SHARE of its estimate left it is tried rather than leaving the answer
        unmeasured (only then); its time limit still ends it at the budget's end."""
        if self.cfg.budget_seconds is None or any(r["run"]["train_size"] == self.target for r in done.values()):
            return False  # something is measured at the user's size already: the answer rests on it
        left = self.cfg.budget_seconds - spent - self.reserve(done, but=spec)
        return left >= self.ATTEMPT_SHARE * self.seconds(spec)

    def on_cut(self, spec: RunSpec, entry: dict) -> None:
        self._cut(spec.id)

    def _cut(self, run_id: str) -> None:
        """A run cut by its time limit is not tried again, nor are its strategy's larger runs (they
        cost more); its smaller ones may still run."""
        cut = next((s for s in self.specs if s.id == run_id), None)
        if cut is None:
            return
        self.cut |= {s.id for s in self.specs if s.strategy == cut.strategy and s.train_size >= cut.train_size}

    def finalize(self, ctx, records: list[dict]) -> list[dict]:
        """Measure the recommended strategy's runs in full (from their kept artifacts), score every
        screened finalist again on all test rows, then let the artifacts of the target-size runs go as
        --keep-artifacts says; returns the records."""
        from adaptlab.compare.adaptive import race
        from adaptlab.compare.measure import finalize, prune_artifact, rescore_in_full
        from adaptlab.compare.recommend import Constraints, recommend

        alive = set(race(records, self.specs, confidence=self.cfg.confidence, cost=self.cost, exclude=self.cut).alive)
        for rec in records:  # finalists first: the recommendation below must see their full rows
            r = rec["run"]
            if (rec["eval"].get("screened") and r["train_size"] in (0, self.target) and r["strategy"] in alive
                    and (self.out / "artifacts" / r["id"]).is_dir()):
                console.print(f"  scoring {r['id']} on every test row (a finalist)", highlight=False)
                rescore_in_full(rec, RunSpec(r["strategy"], r["train_size"], r["seed"]), self.cfg, ctx, self.out)
                atomic_write_json(results_dir(self.out) / f"{r['id']}.json", rec)
        best = recommend(records, Constraints())
        for rec in records:
            r = rec["run"]
            folder = self.out / "artifacts" / r["id"]
            if not folder.is_dir():
                continue
            measure = r["strategy"] == best.winner and r["train_size"] in (0, best.target) and rec["eval"].get("light")
            prune = rec["cost"].get("artifact_kept") and self.cfg.keep_artifacts != "all"
            if not (measure or prune):
                continue  # nothing changes for this run: its record stays as written
            if measure:
                console.print(f"  measuring {r['id']} in full (the recommended run)", highlight=False)
                finalize(rec, RunSpec(r["strategy"], r["train_size"], r["seed"]), self.cfg, ctx, self.out)
            if prune:
                rec["cost"]["artifact_kept"] = prune_artifact(folder, self.cfg.keep_artifacts, rec["cost"]["artifact_bytes"])
            atomic_write_json(results_dir(self.out) / f"{r['id']}.json", rec)
        return records

    def finish(self, out: Path, records: list[dict]) -> None:
        """race.json: the final state, the decision in one sentence, every planned run not run with why,
        and every strategy never run with why and what its first run would have cost."""
        from adaptlab.compare.adaptive import decision_line, race

        state = race(records, self.specs, confidence=self.cfg.confidence, cost=self.cost, first_key=self.first_key,
                     exclude=self.cut)
        minutes = compare_minutes(out, records)
        finished = {r["run"]["id"] for r in records}
        skipped = {s["id"]: s["reason"] for s in load_skipped(out) + self.skipped}
        not_run = []
        for spec in self.specs:
            if spec.id in finished:
                continue
            if spec.id in skipped:
                why = f"budget: {skipped[spec.id]}"
            elif spec.strategy in state.dropped:
                why = f"{spec.strategy} dropped: {state.dropped[spec.strategy]}"
            elif state.fits.get(spec.strategy) and state.fits[spec.strategy].measured_at_target:
                why = f"{spec.strategy} is measured at the target size; its smaller sizes cannot change the winner"
            elif not state.decided:
                why = "not reached: the budget ended before the race was decided"
            else:
                why = "not needed to decide"
            not_run.append({"id": spec.id, "why": why, "estimate_s": round(self.seconds(spec), 1)})
        ran = {r["run"]["strategy"] for r in records}
        never = []
        for st in self.order:
            if st in ran:
                continue
            first = next(s for s in self._first_round() if s.strategy == st)
            why = next(x["why"] for x in not_run if x["id"] == first.id)
            never.append({"strategy": st, "why": why, "first_run": first.id,
                          "estimate_s": round(self.seconds(first), 1),
                          "at_target_s": round(self.tokens.seconds(st, self.target if first.train_size else 0,
                                                                   self.tokens.n_test), 1)})
        line = decision_line(state, len(records), minutes, len(not_run), never=[n["strategy"] for n in never])
        atomic_write_json(out / "race.json", {**state.to_dict(), "decision": line, "runs": len(records),
                                              "minutes": minutes, "not_run": not_run, "never_run": never,
                                              "budget_s": self.cfg.budget_seconds, "prior_order": self.order,
                                              "screen_rows": self.tokens.n_screen, "test_rows": self.tokens.n_test,
                                              "profile": self.tokens.prof.to_dict()})
        console.print(f"[bold]{line}[/]", highlight=False, soft_wrap=True)
        for n in never:
            console.print(f"  never run: {n['strategy']}: {n['why']} (its first run, {n['first_run']}, est. "
                          f"{n['estimate_s']:.0f} s)", highlight=False, soft_wrap=True)


def _minutes(seconds: float, up: bool = False) -> str:
    m = seconds / 60
    if up:
        return f"{math.ceil(m)}m"
    return f"{m:.1f} min" if m < 10 else f"{m:.0f} min"


def load_skipped(out: Path) -> list[dict]:
    """The runs a compare skipped or cut (``skipped.json``), for the grid, the report and the CLI alike.

    One policy for all three: a missing file is no skipped run; a file that is not a JSON list of
    objects with an ``id`` is an error naming it (treating it as empty would quietly retry runs a
    time limit cut, and drop them from the report's list of runs never made)."""
    from adaptlab.data.loading import DataError

    path = Path(out) / "skipped.json"
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not readable as JSON ({e}); it lists the runs the budget skipped or cut: "
                        f"fix or delete it, and a resumed compare estimates them again") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("id"), str) for r in rows):
        raise DataError(f"{path}: expected a list of objects with an 'id' (the runs skipped or cut); "
                        f"fix or delete it, and a resumed compare estimates them again")
    return rows


def _over_budget(cfg: CompareConfig, spent: float, guess: float, spec: RunSpec, skipped: list[dict]) -> bool:
    if cfg.budget_seconds is None or spent + guess <= cfg.budget_seconds:
        return False
    left = cfg.budget_seconds - spent
    if all(s["id"] != spec.id for s in skipped):
        skipped.append({"id": spec.id, "estimate_s": guess, "left_s": left,
                        "reason": f"estimated {guess:.0f} s, {max(0.0, left):.0f} s of budget left"})
    return True


def _claimed(out: Path, run_id: str) -> bool:
    return _live_claim(claims_dir(out) / f"{run_id}.claim")


def _check_out(cfg: CompareConfig, out: Path) -> None:
    cfg_path = out / "compare.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        changed = sorted(k for k in ("data", "model") if old.get(k) != getattr(cfg, k))
        if changed:
            raise ValueError(f"{out}: holds a comparison of another {'/'.join(changed)} "
                             f"({', '.join(str(old.get(k)) for k in changed)}); use another --out")
    atomic_write_json(cfg_path, cfg.to_dict())


def run_compare(cfg: CompareConfig, out: Path, progress: bool = True, clock=time.monotonic) -> dict:
    """Run (or resume) the grid, or the race when ``cfg.adaptive``; returns {"finished": [...],
    "skipped": [...], "results": [...]}.

    Full grid order: in rounds, every strategy's next run before any strategy's one after it, cheap
    runs first within a round (:func:`order_runs`). Adaptive: :class:`AdaptivePicker`."""
    from adaptlab.compare.measure import prepare

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_out(cfg, out)
    ctx = prepare(cfg)
    done = {r["run"]["id"]: r for r in load_results(out)}
    specs = plan(cfg, len(ctx.splits.train), ctx.splits.task)
    planned = {s.strategy for s in specs}
    unfit = [s for s in cfg.strategies if s not in planned]
    if unfit:
        console.print(f"left out (they do not adapt to {ctx.splits.task} tasks): {', '.join(unfit)}")
    if not specs:
        from adaptlab.data.loading import DataError

        raise DataError(f"{cfg.data}: no strategy of {', '.join(cfg.strategies)} supports {ctx.splits.task} tasks")
    est = Estimator(cfg, ctx.n_eval, len(ctx.labels) if ctx.labels else 0)
    for r in done.values():
        est.observe(r)
    from adaptlab.compare.costs import Estimator as TokenEstimator

    tokens = TokenEstimator(cfg, ctx.profile, ctx.n_eval, ctx.n_screen, profiles=ctx.profiles)
    for r in done.values():
        tokens.observe(r)
    picker = AdaptivePicker(cfg, specs, est, out, tokens) if cfg.adaptive else GridPicker(cfg, specs, est, done, tokens)
    picker.check_budget()
    t_start = clock()
    settings = dict(cfg.strategy_settings)
    if cfg.tune:
        from adaptlab.compare.tuning import run_tuning

        for rec in load_tuning(out).values():
            tokens.observe(rec)
        tuned = run_tuning(cfg, ctx, specs, out, spent=lambda: clock() - t_start,
                           log=lambda m: console.print(m, highlight=False, soft_wrap=True),
                           claim=lambda i: claim(out, i), release=lambda i: release_claim(out, i),
                           claimed=lambda i: _claimed(out, i), estimate=tokens, allowance=picker.tuning_allowance,
                           order=picker.order)
        settings.update(tuned)
        tokens.settings.update(tuned)
    if done:
        console.print(f"resuming: {len(done)} finished run(s) kept"
                      + ("" if cfg.adaptive else f", {len(specs) - len(done)} to go"))
    live = LiveStatus(out, cfg, len(specs))
    try:
        finished = _race_or_grid(cfg, ctx, out, picker, done, specs, settings, t_start, progress, live, clock)
    except BaseException as e:
        live.write("stopped" if isinstance(e, KeyboardInterrupt) else "failed", error=f"{type(e).__name__}: {e}")
        raise
    _write_skipped(out, picker.skipped)
    done = {r["run"]["id"]: r for r in load_results(out)}  # include what other workers finished
    live.write("running", done=len(done), phase="measuring the recommended run in full")
    records = picker.finalize(ctx, list(done.values()))
    picker.finish(out, records)
    live.write("finished", done=len(done))
    return {"finished": finished, "skipped": picker.skipped, "results": list(done.values())}


class LiveStatus:
    """``live/status.json`` in the run folder: what a watcher (``adaptlab ui``) shows while a compare
    runs: state, runs done of planned, the run now going with its estimate, the ETA. The run now going
    logs its steps to ``live/<run id>/`` (removed when it is done). Written atomically; the folder,
    not this process, is the state, so a watcher that restarts reads it again."""

    def __init__(self, out: Path, cfg: CompareConfig, planned: int):
        self.dir = Path(out) / "live"
        self.base = {"pid": os.getpid(), "host": socket.gethostname(), "planned": planned,
                     "adaptive": bool(cfg.adaptive), "budget_s": cfg.budget_seconds, "started": time.time()}

    def write(self, state: str, **fields) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.dir / "status.json", {**self.base, "state": state, "updated": time.time(), **fields})

    def run_dir(self, run_id: str) -> Path:
        return self.dir / run_id


def _race_or_grid(cfg, ctx, out, picker, done, specs, settings, t_start, progress, live: LiveStatus,
                  clock=time.monotonic) -> list[str]:
    import torch

    from adaptlab.compare.measure import run_one

    finished: list[str] = []
    live.write("running", done=len(done), phase="choosing the first run")
    # The code this process runs is the commit checked out now: read HEAD once, since commits made
    # while a long grid runs would otherwise be credited with runs they did not produce.
    commit = git_commit()
    machine = {**machine_info(), "gemm_gflops": round(ctx.probe_gflops or speed_probe(), 2)}  # once per worker, before any run
    while (pick := picker.next(done, clock() - t_start)) is not None:
        spec, guess = pick
        best = _best(list(done.values()))
        console.print(f"[bold][{len(done) + 1}/{len(specs)}][/] {spec.id}  est {guess:.0f} s, "
                      + ("" if cfg.adaptive else f"grid ETA {picker.remaining(guess) / 60:.1f} min")
                      + (f"  best so far: {best}" if best else ""),
                      highlight=False, soft_wrap=True)  # one line per run, also in a log file
        if (results_dir(out) / f"{spec.id}.json").exists() or not claim(out, spec.id):
            continue  # another worker finished it or is running it
        live.write("running", done=len(done), eta_s=picker.remaining(guess), best=best,
                   current={"id": spec.id, "strategy": spec.strategy, "train_size": spec.train_size,
                            "estimate_s": guess, "started": time.time()})
        limit = picker.limit(spec, guess, clock() - t_start)
        t_run = clock()
        ended = False  # finished or cut; after an error its live folder stays (a search journals there: gepa)
        try:
            torch.manual_seed(spec.seed)
            with time_limit(limit):
                rec = run_one(spec, cfg, ctx, out, progress=progress, light=picker.light(spec),
                              settings=cfg.settings_for(spec.strategy, settings), keep=picker.keep(spec),
                              log_dir=live.run_dir(spec.id), screened=picker.screened(spec))
            rec["meta"].update({"versions": package_versions(), "git_commit": commit,
                                "machine": machine, "data": cfg.data, "model": cfg.model,
                                "worker": f"{socket.gethostname()}:{os.getpid()}"})
            atomic_write_json(results_dir(out) / f"{spec.id}.json", rec)  # written last: marks the run done
            ended = True
        except TimeUp:
            ended = True
            took = clock() - t_run
            entry = {"id": spec.id, "estimate_s": guess, "left_s": limit, "cut": True, "seconds": took,
                     "reason": f"cut after {took:.0f} s by its time limit ({limit:.0f} s; estimated {guess:.0f} s)"}
            console.print(f"  [yellow]{spec.id} cut[/]: {entry['reason']}", highlight=False, soft_wrap=True)
            picker.skipped.append(entry)
            picker.on_cut(spec, entry)
            shutil.rmtree(out / "artifacts" / spec.id, ignore_errors=True)
            continue
        finally:
            release_claim(out, spec.id)
            if ended:
                shutil.rmtree(live.run_dir(spec.id), ignore_errors=True)
        done[spec.id] = rec
        finished.append(spec.id)
        picker.est.observe(rec)
        if picker.tokens is not None:
            picker.tokens.observe(rec)
        live.write("running", done=len(done), phase="choosing the next run")
    return finished


def run_seconds(rec: dict) -> float | None:
    """A run's own start-to-finish seconds from its record, or None where it kept no timestamps."""
    import datetime

    try:
        a = datetime.datetime.strptime(rec["meta"]["started"], "%Y-%m-%dT%H:%M:%S%z")
        b = datetime.datetime.strptime(rec["meta"]["finished"], "%Y-%m-%dT%H:%M:%S%z")
    except (KeyError, ValueError):
        return None
    return (b - a).total_seconds()


def compare_minutes(out: Path, records: list[dict]) -> float:
    """Wall minutes of a compare's own work: its runs, start to finish, summed (resumed sessions count
    what they ran), and its tuning fits; loading the model and writing the report are left out."""
    from adaptlab.compare.tuning import load_tuning

    total = sum(t.get("seconds", 0.0) for t in load_tuning(out).values())
    total += sum(s for s in map(run_seconds, records) if s is not None)
    return total / 60


def _write_skipped(out: Path, skipped: list[dict]) -> None:
    """Merge this worker's skips with other workers' (a run another worker finished is not skipped)."""
    finished = {f.stem for f in results_dir(out).glob("*.json")}
    merged = {s["id"]: s for s in load_skipped(out) + skipped if s["id"] not in finished}
    atomic_write_json(out / "skipped.json", list(merged.values()))


def _worker_command(argv: list[str]) -> list[str]:
    """This compare command as one worker runs it: ``--workers`` / ``--ray*`` dropped, ``--out``
    made absolute (a worker elsewhere must find the same folder)."""
    import sys

    cleaned: list[str] = []
    it = iter(argv)
    for a in it:
        name = a.split("=", 1)[0]
        if name in ("--workers", "--ray", "--ray-cpus"):
            if "=" not in a:
                next(it, None)
            continue
        if name == "--out":
            value = a.split("=", 1)[1] if "=" in a else next(it, "")
            cleaned += ["--out", str(Path(value).resolve())]
            continue
        cleaned.append(a)
    return [sys.executable, "-m", "adaptlab.cli", *cleaned, "--workers", "1", "--no-progress"]


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_workers(argv: list[str], workers: int) -> int:
    """Run ``workers`` copies of this compare command on one machine, sharing the cores, and wait.

    Every worker takes runs through claims, so they never run the same one; the results folder
    is the one store. On several machines, start the same command on each against a shared
    folder (``--out`` on NFS), or let Ray place the workers (:func:`run_ray_workers`).
    """
    threads = str(max(1, _cores() // workers))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "ADAPTLAB_THREADS": threads}
    procs = [subprocess.Popen(_worker_command(argv), env=env) for _ in range(workers)]
    return max(p.wait() for p in procs)


def run_ray_workers(argv: list[str], workers: int, address: str, cpus: int | None = None) -> int:
    """The same workers as :func:`run_workers`, placed by Ray: ``workers`` tasks of ``cpus`` CPUs
    each, anywhere in the cluster at ``address`` ("local" starts a Ray on this machine). Each task
    runs this compare command as one worker; the claims and the results folder do the rest, so
    ``--out`` must be storage every node sees, and every node needs this environment (same
    Python path, or a Ray ``runtime_env``). Why Ray only places processes: a run is minutes of
    one process's work and its results are files, so Ray's object store has nothing to carry.
    """
    try:
        import ray
    except ImportError:
        raise ValueError("--ray: ray is not installed (pip install 'ray>=2.9')") from None
    cpus = cpus or max(1, _cores() // workers)
    started = not ray.is_initialized()
    if started:
        ray.init(address=None if address == "local" else address, num_cpus=_cores() if address == "local" else None,
                 include_dashboard=False, log_to_driver=True, configure_logging=False)
    env = {"OMP_NUM_THREADS": str(cpus), "ADAPTLAB_THREADS": str(cpus)}

    @ray.remote(num_cpus=cpus, max_retries=0)
    def worker(cmd: list[str], extra_env: dict) -> int:
        return subprocess.run(cmd, env={**os.environ, **extra_env}).returncode

    try:
        codes = ray.get([worker.remote(_worker_command(argv), env) for _ in range(workers)])
    finally:
        if started:
            ray.shutdown()
    return max(codes)


def _best(records: list[dict]) -> str | None:
    if not records:
        return None
    r = max(records, key=lambda r: r["eval"]["quality"])
    return f"{r['run']['id']} {r['eval']['quality']:.3f}"
