"""One run of the grid: fit a strategy on a train subset, then measure it every way the report needs."""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from adaptlab.compare.config import CompareConfig
from adaptlab.data.loading import TaskData
from adaptlab.data.named import TaskSplits, load_task
from adaptlab.data.splits import subsample
from adaptlab.evaluation.consistency import consistency
from adaptlab.evaluation.cost import cost_per_million
from adaptlab.evaluation.forgetting import base_reference, forgetting
from adaptlab.evaluation.fragility import fragility
from adaptlab.models.base import load_base, resolve_device
from adaptlab.strategies.base import artifact_bytes
from adaptlab.strategies.registry import get_strategy, make_config
from adaptlab.training import TrainConfig


@dataclass
class Context:
    base: object
    splits: TaskSplits
    test: TaskData
    labels: list[str] | None
    forgetting_before: dict | None

    @property
    def n_eval(self) -> int:
        return len(self.test)


def prepare(cfg: CompareConfig) -> Context:
    splits = load_task(cfg.data, data_dir_override=cfg.data_dir)
    test = subsample(splits.test, n=cfg.test_limit, seed=0) if cfg.test_limit and cfg.test_limit < len(splits.test) \
        else splits.test
    base = load_base(cfg.model, device=resolve_device(cfg.device))
    before = base_reference(base) if cfg.forgetting else None
    labels = splits.train.labels if splits.task == "classification" else None
    return Context(base, splits, test, labels, before)


def _quality(m: dict) -> float:
    return m["accuracy"] if "accuracy" in m else m["rouge_l"]


def prune_artifact(folder: Path, policy: str, size: int) -> bool:
    """Keep or delete a run's artifact folder; returns whether it was kept."""
    keep = policy == "all" or (policy == "small" and size < 100e6)
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return keep


def fit_run(spec, cfg: CompareConfig, ctx: Context, progress: bool):
    """Fit ``spec``'s strategy on its train subset: (artifact, train subset, train record, settings)."""
    sp = get_strategy(spec.strategy)
    settings = dict(cfg.strategy_settings.get(spec.strategy, {}))
    train = ctx.splits.train
    if spec.train_size and spec.train_size < len(train):
        train = subsample(train, n=spec.train_size, seed=spec.seed)
    # A seed and no dev metrics for the strategies whose config has them (the grid measures on test).
    fields = {f.name for f in dataclasses.fields(sp.config_cls)}
    own = {k: v for k, v in (("seed", spec.seed), ("dev_limit", 0)) if k in fields}
    config = make_config(spec.strategy, **{**own, **settings})
    tc = TrainConfig(epochs=cfg.epochs_for(spec.strategy), seed=spec.seed, dev_limit=cfg.dev_limit,
                     checkpoint_every=0, eval_every=cfg.eval_every, patience=cfg.patience)
    art = sp.strategy_cls(config).fit(ctx.base, train, ctx.splits.dev, tc, progress=progress)
    tr = art.metrics["train"]
    info = {"seconds": tr["train_seconds"], "model_calls": tr.get("model_calls"),
            "trainable_params": tr["trainable_params"], "peak_rss_bytes": tr["peak_rss_bytes"],
            "examples_per_s": tr.get("examples_per_s"), "stopped_early": tr.get("stopped_early", False),
            "steps": tr.get("steps", 0)}
    for key in ("best_step", "best_dev", "initial_loss", "final_loss"):
        if key in tr:
            info[key] = tr[key]
    return art, train, info, settings


def measure_quality(art, spec, cfg: CompareConfig, ctx: Context, train) -> dict:
    """Test quality, the train-set gap, fragility and forgetting of a fitted artifact."""
    t1 = time.perf_counter()
    test_m = art.evaluate(ctx.test, rows=True)
    rows = test_m.pop("rows")
    eval_seconds = time.perf_counter() - t1
    scored = len(ctx.test)
    # Overfitting: the same metric on (up to fragility_examples) training examples.
    train_part = subsample(train, n=min(len(train), max(16, cfg.fragility_examples)), seed=spec.seed) \
        if len(train) > 16 else train
    train_m = art.evaluate(train_part) if spec.train_size else None
    scored += len(train_part) if train_m else 0
    frag = None
    if cfg.fragility_k and cfg.fragility_examples:
        part = subsample(ctx.test, n=min(cfg.fragility_examples, len(ctx.test)), seed=0)
        t2 = time.perf_counter()
        frag = fragility(art, part, k=cfg.fragility_k, seed=spec.seed)
        eval_seconds += time.perf_counter() - t2
        scored += len(part) * (1 + len(frag["paraphrases"]) + len(frag["perturbations"]))
    forget = forgetting(art, ctx.base, ctx.forgetting_before) if cfg.forgetting else None
    steady = None
    if cfg.consistency_examples:
        part = subsample(ctx.test, n=min(cfg.consistency_examples, len(ctx.test)), seed=0)
        t3 = time.perf_counter()
        steady = consistency(art, part, cfg.consistency_samples, cfg.consistency_temperature, seed=spec.seed)
        eval_seconds += time.perf_counter() - t3
        scored += len(part) * (cfg.consistency_samples if ctx.splits.task != "classification" else 1)
    q = _quality(test_m)
    return {"quality": q, "metric": "accuracy" if "accuracy" in test_m else "rouge_l", "test": test_m,
            "test_examples": len(ctx.test), "train_quality": _quality(train_m) if train_m else None,
            "overfit_gap": (_quality(train_m) - q) if train_m else None, "examples_per_s": test_m["examples_per_s"],
            "prompt_tokens": test_m["prompt_tokens"], "seconds": eval_seconds, "scored_examples": scored,
            "fragility": frag, "forgetting": forget, "consistency": steady, "rows": rows}


def run_one(spec, cfg: CompareConfig, ctx: Context, out: Path, progress: bool = True) -> dict:
    """Fit, measure, save (and prune) one run; the record the results folder keeps for it."""
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    sp = get_strategy(spec.strategy)
    art, train, train_info, settings = fit_run(spec, cfg, ctx, progress)
    ev = measure_quality(art, spec, cfg, ctx, train)
    predictions = ev.pop("rows")  # every test row's output and metric: galleries, paired comparisons
    folder = Path(out) / "artifacts" / spec.id
    art.save(folder)
    size = artifact_bytes(folder)
    kept = prune_artifact(folder, cfg.keep_artifacts, size)
    return {
        "run": {"id": spec.id, "strategy": spec.strategy, "kind": sp.kind, "train_size": spec.train_size,
                "seed": spec.seed, "epochs": cfg.epochs_for(spec.strategy) if sp.kind == "gradient" else None,
                "settings": settings},
        "train": train_info,
        "eval": ev,
        "cost": {"artifact_bytes": size, "artifact_kept": kept,
                 **cost_per_million(ev["examples_per_s"], ev["prompt_tokens"], cfg.price_per_hour)},
        "meta": {"started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "predictions": predictions,
    }
