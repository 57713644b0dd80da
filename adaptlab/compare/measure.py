"""One run of the grid: fit a strategy on a train subset, then measure it every way the report needs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from adaptlab.compare.config import CompareConfig
from adaptlab.data.loading import TaskData
from adaptlab.data.named import TaskSplits, load_task
from adaptlab.data.splits import subsample
from adaptlab.evaluation.cost import cost_per_million
from adaptlab.strategies.registry import get_strategy, make_config


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
    from adaptlab.evaluation.forgetting import base_reference
    from adaptlab.models.base import load_base, resolve_device

    splits = load_task(cfg.data, data_dir_override=cfg.data_dir)
    test = subsample(splits.test, n=cfg.test_limit, seed=0) if cfg.test_limit and cfg.test_limit < len(splits.test) \
        else splits.test
    base = load_base(cfg.model, device=resolve_device(cfg.device))
    before = base_reference(base) if cfg.forgetting else None
    labels = splits.train.labels if splits.task == "classification" else None
    return Context(base, splits, test, labels, before)


def _quality(m: dict) -> float:
    return m["accuracy"] if "accuracy" in m else m["rouge_l"]


def run_one(spec, cfg: CompareConfig, ctx: Context, out: Path, progress: bool = True) -> dict:
    from adaptlab.evaluation.forgetting import forgetting
    from adaptlab.evaluation.fragility import fragility
    from adaptlab.strategies.base import artifact_bytes
    from adaptlab.strategies.gradient import release
    from adaptlab.training import TrainConfig

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    sp = get_strategy(spec.strategy)
    settings = dict(cfg.strategy_settings.get(spec.strategy, {}))
    train = ctx.splits.train
    if spec.train_size and spec.train_size < len(train):
        train = subsample(train, n=spec.train_size, seed=spec.seed)
    epochs = float(cfg.strategy_epochs.get(spec.strategy, cfg.epochs))
    t0 = time.perf_counter()
    if sp.kind == "prompt":
        from adaptlab.backends import LocalBackend

        release(ctx.base)
        backend = LocalBackend(ctx.base)
        from adaptlab.training.loop import PeakRSS

        config = make_config(spec.strategy, **{"seed": spec.seed, "dev_limit": 0, **settings})
        with PeakRSS() as rss:
            art = sp.strategy_cls(config).fit(backend, train, ctx.splits.dev)
        fit_seconds = time.perf_counter() - t0
        train_info = {"seconds": fit_seconds, "model_calls": backend.calls, "trainable_params": 0,
                      "peak_rss_bytes": rss.peak, "examples_per_s": None, "stopped_early": False, "steps": 0}
    else:
        config = make_config(spec.strategy, **settings)
        tc = TrainConfig(epochs=epochs, seed=spec.seed, dev_limit=cfg.dev_limit, checkpoint_every=0,
                         eval_every=cfg.eval_every, patience=cfg.patience)
        art = sp.strategy_cls(config).fit(ctx.base, train, ctx.splits.dev, tc, progress=progress)
        tr = art.metrics["train"]
        train_info = {"seconds": tr["train_seconds"], "trainable_params": tr["trainable_params"],
                      "peak_rss_bytes": tr["peak_rss_bytes"], "examples_per_s": tr["examples_per_s"],
                      "stopped_early": tr.get("stopped_early", False), "best_step": tr.get("best_step"),
                      "steps": tr.get("steps"), "best_dev": tr.get("best_dev"),
                      "initial_loss": tr.get("initial_loss"), "final_loss": tr.get("final_loss")}
    # Quality on the held-out test split (never used for selection).
    t1 = time.perf_counter()
    test_m = art.evaluate(ctx.test)
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
    folder = Path(out) / "artifacts" / spec.id
    art.save(folder)
    size = artifact_bytes(folder)
    from adaptlab.compare.grid import prune_artifact

    kept = prune_artifact(folder, cfg.keep_artifacts, size)
    ex_s = test_m["examples_per_s"]
    prompt_tokens = test_m.get("prompt_tokens")
    if prompt_tokens is None:
        prompt_tokens = _prompt_tokens(art, ctx)
    q = _quality(test_m)
    record = {
        "run": {"id": spec.id, "strategy": spec.strategy, "kind": sp.kind, "train_size": spec.train_size,
                "seed": spec.seed, "epochs": epochs if sp.kind == "gradient" else None, "settings": settings},
        "train": train_info,
        "eval": {"quality": q, "metric": "accuracy" if "accuracy" in test_m else "rouge_l", "test": test_m,
                 "test_examples": len(ctx.test), "train_quality": _quality(train_m) if train_m else None,
                 "overfit_gap": (_quality(train_m) - q) if train_m else None, "examples_per_s": ex_s,
                 "prompt_tokens": prompt_tokens, "seconds": eval_seconds, "scored_examples": scored,
                 "fragility": frag, "forgetting": forget},
        "cost": {"artifact_bytes": size, "artifact_kept": kept,
                 **cost_per_million(ex_s, prompt_tokens, cfg.price_per_hour)},
        "meta": {"started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
    }
    release(ctx.base)
    return record


def _prompt_tokens(art, ctx: Context) -> float:
    texts = [ex.text for ex in ctx.test.examples[:64]]
    labels = art.labels if art.task == "classification" else None
    tok = ctx.base.tokenizer
    prompts = [art.template.render(t, labels) for t in texts]
    return sum(len(tok(p)["input_ids"]) for p in prompts) / max(1, len(prompts)) + getattr(art.module, "n_virtual", 0)
