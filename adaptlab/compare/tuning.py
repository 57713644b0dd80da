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

import json
import time
from dataclasses import dataclass
from pathlib import Path

from adaptlab.compare.baselines import imbalanced
from adaptlab.compare.config import CompareConfig
from adaptlab.compare.summary import best_per_strategy
from adaptlab.strategies.registry import get_strategy
from adaptlab.utils import atomic_write_json

TUNING_SHARE = 0.25  # of --budget at most: the race needs the rest


@dataclass(frozen=True)
class TuneSpec:
    strategy: str
    train_size: int
    variant: int          # 0: the defaults (with the user's --set)
    settings: tuple       # sorted (key, value) pairs: the run's full settings

    seed = 0              # one seed: the variants are compared on the same train subset

    @property
    def id(self) -> str:
        return f"{self.strategy}-n{self.train_size}-s0-t{self.variant}"


def tuning_dir(out: Path) -> Path:
    return Path(out) / "results" / "tuning"


def tune_plan(cfg: CompareConfig, specs: list) -> list[TuneSpec]:
    """The variants to fit: per strategy with a search, its defaults and each variant that changes
    no key the user set, at the strategy's smallest train size."""
    out = []
    for name in cfg.strategies:
        search = get_strategy(name).search
        sizes = [s.train_size for s in specs if s.strategy == name and s.train_size]
        if not search or not sizes:
            continue
        user = dict(cfg.strategy_settings.get(name, {}))
        variants = [{}] + [v for v in search if not set(v) & set(user)]
        if len(variants) < 2:
            continue
        for i, v in enumerate(variants):
            out.append(TuneSpec(name, min(sizes), i, tuple(sorted({**user, **v}.items()))))
    return out


def load_tuning(out: Path) -> dict[str, dict]:
    recs = {}
    for f in sorted(tuning_dir(out).glob("*.json")):
        try:
            recs[f.stem] = json.loads(f.read_text())
        except json.JSONDecodeError:
            continue  # re-run
    return recs


def kept(records: list[dict]) -> dict[str, dict]:
    """Each strategy's kept variant among its fitted ones: the best dev quality (ties: the earlier
    variant, the defaults first)."""
    return best_per_strategy(records, lambda r: (r["dev"]["quality"], -r["run"]["variant"]))


def chosen(plan: list[TuneSpec], records: dict[str, dict]) -> dict[str, dict]:
    """Each tuned strategy's settings: its kept variant among the planned ones fitted."""
    best = kept([records[t.id] for t in plan if t.id in records])
    return {s: dict(r["run"]["settings"]) for s, r in best.items()}


def run_tuning(cfg: CompareConfig, ctx, specs: list, out: Path, *, spent, log, claim=None, release=None,
               claimed=None) -> dict[str, dict]:
    """Fit and score on dev every planned variant not yet stored (within the budget: ``spent()`` gives
    the seconds used so far); returns the settings each strategy's measured runs will use.

    ``claim(id) -> bool`` / ``release(id)`` / ``claimed(id) -> bool`` share the variants between
    workers (the grid's claim files); a worker then waits for the variants others are fitting, so
    that every worker carries up the same choice."""
    from adaptlab.compare.measure import fit_run
    from adaptlab.data.splits import subsample

    plan = tune_plan(cfg, specs)
    records = load_tuning(out)
    dev = ctx.splits.dev
    if cfg.dev_limit and len(dev) > cfg.dev_limit:
        dev = subsample(dev, n=cfg.dev_limit, seed=0)
    for t in plan:
        if t.id in records:
            continue
        guess = _guess(records, t)
        if cfg.budget_seconds is not None and spent() + guess > TUNING_SHARE * cfg.budget_seconds:
            log(f"  tuning: {t.id} skipped, {guess:.0f} s would not fit {100 * TUNING_SHARE:.0f}% of the budget")
            continue
        if claim is not None and not claim(t.id):
            continue  # another worker fits it
        log(f"  tuning: {t.id} {dict(t.settings) or 'defaults'}")
        t0 = time.perf_counter()
        try:
            art, _, info, _ = fit_run(t, cfg, ctx, progress=False, settings=dict(t.settings))
        finally:
            if release is not None:
                release(t.id)
        m = art.evaluate(dev)
        quality = m.get("accuracy", m.get("rouge_l"))
        if ctx.baselines and "macro_f1" in m and imbalanced(ctx.baselines):
            quality = m["macro_f1"]
        rec = {"run": {"id": t.id, "strategy": t.strategy, "train_size": t.train_size, "variant": t.variant,
                       "settings": dict(t.settings)},
               "dev": {"quality": quality, "n": len(dev), **{k: v for k, v in m.items() if isinstance(v, float)}},
               "train": info, "seconds": time.perf_counter() - t0}
        atomic_write_json(tuning_dir(out) / f"{t.id}.json", rec)
        records[t.id] = rec
    for _ in range(720):  # variants other workers are fitting (up to an hour)
        records = load_tuning(out)
        if not any(t.id not in records and claimed is not None and claimed(t.id) for t in plan):
            break
        time.sleep(5)
    return chosen(plan, records)


def _guess(records: dict, t: TuneSpec) -> float:
    """Seconds a variant will take: the mean of this strategy's fitted variants (60 s before any)."""
    mine = [r["seconds"] for r in records.values() if r["run"]["strategy"] == t.strategy]
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
        rows.append([s, str(r["run"]["train_size"]), "defaults" if r["run"]["variant"] == 0 else str(r["run"]["variant"]),
                     ", ".join(f"{k}={v}" for k, v in r["run"]["settings"].items()) or "-",
                     f"{r['dev']['quality']:.3f}", f"{r['train']['seconds']:.0f}",
                     "yes" if best[s] is r else ""])
    return cols, rows
