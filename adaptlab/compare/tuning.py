"""Fair strategies: a few variants of each strategy, chosen on dev at the smallest size, carried up.

A strategy can lose a comparison by its defaults alone: full fine-tuning at an adapter's step size,
a soft prompt too short for the task. Each registered strategy names a few variants
(``StrategySpec.search``: a learning rate either side of its default, a LoRA rank, a prompt length,
k and the selection for few-shot); ``--tune`` fits each at the smallest train size, scores it on
the dev split (never on test), and every later run of that strategy uses the best. Keys the user
set with ``--set`` are not searched. The tuning runs are stored apart from the measured runs
(``results/tuning/``), resume like them, count against the budget, and the report shows what was
tried and what was kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from adaptlab.compare.baselines import imbalanced
from adaptlab.compare.config import CompareConfig
from adaptlab.compare.store import claim, claimed, load_tuning, release_claim, tuning_dir
from adaptlab.compare.summary import best_per_strategy
from adaptlab.strategies.registry import get_strategy
from adaptlab.utils import atomic_write_json

TUNING_SHARE = 0.25  # of --budget at most: the race needs the rest


@dataclass(frozen=True)
class TuneSpec:
    strategy: str
    train_size: int
    variant: int  # 0: the defaults (with the user's --set)
    settings: tuple  # sorted (key, value) pairs: the run's full settings

    seed = 0  # one seed: the variants are compared on the same train subset

    @property
    def id(self) -> str:
        return f"{self.strategy}-n{self.train_size}-s0-t{self.variant}"


def tune_plan(cfg: CompareConfig, specs: list) -> list[TuneSpec]:
    """The variants to fit: per strategy with a search, its defaults and each variant that changes
    no key the user set, at the strategy's smallest train size."""
    out = []
    for name in cfg.strategies:
        search = get_strategy(name).search
        sizes = [s.train_size for s in specs if s.strategy == name and s.train_size]
        if not search or not sizes:
            continue
        user = cfg.settings_for(name)
        variants = [{}] + [v for v in search if not set(v) & set(user)]
        if len(variants) < 2:
            continue
        for i, v in enumerate(variants):
            out.append(TuneSpec(name, min(sizes), i, tuple(sorted({**user, **v}.items()))))
    return out


def kept(records: list[dict]) -> dict[str, dict]:
    """Each strategy's kept variant among its fitted ones: the best dev quality (ties: the earlier
    variant, the defaults first); a variant cut by its time limit is never kept."""
    return best_per_strategy(
        [r for r in records if not r.get("cut")], lambda r: (r["dev"]["quality"], -r["run"]["variant"])
    )


def chosen(plan: list[TuneSpec], records: dict[str, dict]) -> dict[str, dict]:
    """Each tuned strategy's settings: its kept variant among the planned ones fitted."""
    best = kept([records[t.id] for t in plan if t.id in records])
    return {s: dict(r["run"]["settings"]) for s, r in best.items()}


def ordered_plan(plan: list[TuneSpec], order: list[str] | None) -> list[TuneSpec]:
    """The variants in the order they are fitted: strategies by ``order`` (the compare's: cheapest
    first look first, so that a tight budget tunes as many candidates as it can), each strategy's
    variants as registered."""
    if not order:
        return plan
    rank = {s: i for i, s in enumerate(order)}
    return sorted(plan, key=lambda t: (rank.get(t.strategy, len(rank)), t.variant))


@dataclass
class TuningBudget:
    """What tuning may spend, as the compare that runs it sees it."""

    spent: Callable[[], float]  # seconds the compare has used so far
    allowance: Callable[[], float | None] = lambda: None  # seconds tuning may use; asked before each variant
    estimate: object = None  # a variant's seconds (:class:`adaptlab.compare.costs.Estimator`)
    order: list[str] | None = None  # the strategies' order (cheapest first look first)
    log: Callable[[str], None] = field(default=lambda message: None)
    shared: bool = True  # share variants with other workers through the run folder


def run_tuning(cfg: CompareConfig, ctx, specs: list, out: Path, budget: TuningBudget) -> dict[str, dict]:
    """Fit and score on dev every planned variant not yet stored, within ``budget.allowance()``
    seconds (asked before each variant, so that what the variants measure can shrink it); returns
    the settings each strategy's measured runs will use.

    Scaled to the budget: variants go in ``budget.order`` and each is estimated from its token
    counts; once one does not fit what is left of the allowance, no later one runs, so a tight budget
    tunes fewer variants rather than a scattering. A variant still running when the allowance ends
    is cut by measured time and recorded as cut (never kept).

    With ``budget.shared``, variants are claimed in the run folder like runs, so several workers
    share them; a worker then waits for the variants others are fitting, so that every worker
    carries up the same choice."""
    from adaptlab.compare.measure import fit_run
    from adaptlab.data.splits import subsample
    from adaptlab.utils import TimeUp, time_limit

    spent, log, estimate = budget.spent, budget.log, budget.estimate
    order, shared = budget.order, budget.shared

    plan = ordered_plan(tune_plan(cfg, specs), order)
    records = load_tuning(out)
    dev = ctx.splits.dev
    if cfg.dev_limit and len(dev) > cfg.dev_limit:
        dev = subsample(dev, n=cfg.dev_limit, seed=0)
    full = False
    for t in plan:
        if t.id in records:
            continue
        if full:
            continue
        # Asked again before every variant: the variants fitted so far re-estimate the runs the
        # allowance must leave room for.
        cap = budget.allowance()
        guess = (
            estimate.seconds(t.strategy, t.train_size, len(dev), settings=dict(t.settings))
            if estimate is not None
            else _guess(records, t)
        )
        if cap is not None and spent() + guess > cap:
            rest = [x.id for x in plan if x.id not in records and x is not t]
            log(
                f"  tuning: {t.id} not fitted: estimated {guess:.0f} s, {max(0.0, cap - spent()):.0f} s "
                f"of the tuning allowance left ({cap:.0f} s); nor the {len(rest)} variant(s) after it"
            )
            full = True
            continue
        if shared and not claim(out, t.id):
            continue  # another worker fits it
        log(f"  tuning: {t.id} {dict(t.settings) or 'defaults'}")
        t0 = time.perf_counter()
        try:
            with time_limit(None if cap is None else cap - spent()):
                art, _, info, _ = fit_run(t, cfg, ctx, progress=False, settings=dict(t.settings))
                m = art.evaluate(dev)
        except TimeUp:
            took = time.perf_counter() - t0
            log(f"  tuning: {t.id} cut after {took:.0f} s (estimated {guess:.0f} s): the tuning allowance ended")
            rec = {
                "run": _run_of(t),
                "cut": True,
                "dev": {"quality": None, "n": len(dev)},
                "train": {"seconds": took},
                "seconds": took,
                "estimate_s": guess,
            }
            atomic_write_json(tuning_dir(out) / f"{t.id}.json", rec)
            records[t.id] = rec
            full = True
            continue
        finally:
            if shared:
                release_claim(out, t.id)
        quality = m[ctx.test.spec.metric]
        if ctx.baselines and "macro_f1" in m and imbalanced(ctx.baselines):
            quality = m["macro_f1"]
        rec = {
            "run": _run_of(t),
            "dev": {"quality": quality, "n": len(dev), **{k: v for k, v in m.items() if isinstance(v, float)}},
            "train": info,
            "seconds": time.perf_counter() - t0,
            "estimate_s": guess,
        }
        if estimate is not None:
            estimate.observe(rec)
        atomic_write_json(tuning_dir(out) / f"{t.id}.json", rec)
        records[t.id] = rec
    for _ in range(720):  # variants other workers are fitting (up to an hour)
        records = load_tuning(out)
        if not (shared and any(t.id not in records and claimed(out, t.id) for t in plan)):
            break
        time.sleep(5)
    return chosen(plan, records)


def _run_of(t: TuneSpec) -> dict:
    return {
        "id": t.id,
        "strategy": t.strategy,
        "train_size": t.train_size,
        "variant": t.variant,
        "settings": dict(t.settings),
    }


def _guess(records: dict, t: TuneSpec) -> float:
    """Seconds a variant will take: the mean of this strategy's fitted variants (60 s before any)."""
    mine = [r["seconds"] for r in records.values() if r["run"]["strategy"] == t.strategy and not r.get("cut")]
    return sum(mine) / len(mine) if mine else 60.0


def tuning_rows(out: Path) -> tuple[list[str], list[list[str]]]:
    """What was tried and what was kept, for the report."""
    recs = list(load_tuning(out).values())
    if not recs:
        return [], []
    best = kept(recs)
    cols = ["strategy", "train size", "variant", "settings", "dev quality", "fit s", "kept"]
    rows = []
    for r in sorted(recs, key=lambda r: (r["run"]["strategy"], r["run"]["variant"])):
        s = r["run"]["strategy"]
        rows.append(
            [
                s,
                str(r["run"]["train_size"]),
                "defaults" if r["run"]["variant"] == 0 else str(r["run"]["variant"]),
                ", ".join(f"{k}={v}" for k, v in r["run"]["settings"].items()) or "-",
                "cut (time limit)" if r.get("cut") else f"{r['dev']['quality']:.3f}",
                f"{r['train']['seconds']:.0f}",
                "yes" if best.get(s) is r else "",
            ]
        )
    return cols, rows
