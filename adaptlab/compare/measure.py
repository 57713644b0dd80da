"""One run of the grid: fit a strategy on a train subset, then measure it every way the report needs."""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from adaptlab.compare.config import CompareConfig
from adaptlab.data.loading import TaskData
from adaptlab.data.named import TaskSplits, load_task, recipe_for
from adaptlab.data.splits import subsample
from adaptlab.evaluation.consistency import consistency
from adaptlab.evaluation.cost import cost_per_million
from adaptlab.evaluation.forgetting import base_reference, forgetting
from adaptlab.evaluation.fragility import fragility
from adaptlab.models.base import load_base, resolve_device
from adaptlab.strategies.base import artifact_bytes
from adaptlab.strategies.registry import get_strategy, make_config, split_lr
from adaptlab.training import TrainConfig


@dataclass
class Context:
    splits: TaskSplits
    test: TaskData
    labels: list[str] | None
    # Per local base (--model a,b; the first is the primary one): the loaded model, forgetting's
    # reference measurement (empty when forgetting is off), the token counts of the rows
    # (compare.costs.Profile).
    bases: dict
    references: dict
    profiles: dict
    baselines: dict | None = None  # classification: majority class and chance on the test rows
    screen: TaskData | None = None  # the nested subsample of test that screening runs score
    probe_gflops: float = 0.0  # the machine's matrix-product speed, measured once
    endpoints: dict = dataclasses.field(default_factory=dict)  # name -> (EndpointSpec, its backend)

    @property
    def base(self):
        """The primary base model."""
        return next(iter(self.bases.values()))

    @property
    def profile(self):
        """The primary base's profile of the rows."""
        return next(iter(self.profiles.values()))

    @property
    def n_eval(self) -> int:
        return len(self.test)

    @property
    def n_screen(self) -> int:
        return len(self.screen) if self.screen is not None else len(self.test)


def prepare(cfg: CompareConfig) -> Context:
    splits = load_task(cfg.data, data_dir_override=cfg.data_dir, columns=cfg.columns or None)
    test = (
        subsample(splits.test, n=cfg.test_limit, seed=0)
        if cfg.test_limit and cfg.test_limit < len(splits.test)
        else splits.test
    )
    bases = {m: load_base(m, device=resolve_device(cfg.device)) for m in cfg.models}
    refs = {m: base_reference(b) for m, b in bases.items()} if cfg.forgetting else {}
    labels = splits.train.label_set
    floor = splits.train.spec.baselines(splits.train, test)
    from adaptlab.compare.costs import profile, screen_rows
    from adaptlab.utils import speed_probe

    n_screen = screen_rows(splits.task, len(test), confidence=cfg.confidence)
    screen = subsample(test, n=n_screen, seed=0) if n_screen < len(test) else test
    probe = speed_probe()
    profiles = {m: profile(b, splits, test, probe) for m, b in bases.items()}
    return Context(splits, test, labels, bases, refs, profiles, floor, screen, probe, endpoints=open_endpoints(cfg))


def open_endpoints(cfg: CompareConfig) -> dict:
    """Each endpoint the compare names, checked before any run starts (reachable, key accepted,
    model served; :func:`adaptlab.backends.endpoints.preflight`), sharing one response cache."""
    if not cfg.endpoints and not cfg.proposer_endpoints:
        return {}
    from adaptlab.backends.endpoints import EndpointSpec, ResponseCache, preflight, register_open

    cache = ResponseCache(cfg.response_cache) if cfg.response_cache else None
    out = {}
    for e in cfg.endpoints + cfg.proposer_endpoints:
        spec = EndpointSpec(**e)
        backend = spec.backend(cache)
        preflight(spec, backend)
        out[spec.name] = (spec, backend)
        register_open(spec, backend)  # where a strategy's proposer finds it by name
    return out


def model_of(strategy: str, cfg: CompareConfig, ctx: Context):
    """What a candidate's run fits on: the endpoint it names, or its local base model."""
    where = cfg.endpoint_of(strategy)
    return ctx.endpoints[where][1] if where else ctx.bases[cfg.base_of(strategy)]


def _quality(m: dict, data) -> float:
    """The task type's ranking metric (accuracy, ROUGE-L, preference accuracy, ...)."""
    return m[data.spec.metric]


def prune_artifact(folder: Path, policy: str, size: int) -> bool:
    """Keep or delete a run's artifact folder; returns whether it was kept."""
    keep = policy == "all" or (policy == "small" and size < 100e6)
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return keep


def train_subset(spec, ctx: Context) -> TaskData:
    """The train examples ``spec``'s run fits on (nested per seed, as the learning curves need)."""
    train = ctx.splits.train
    if spec.train_size and spec.train_size < len(train):
        train = subsample(train, n=spec.train_size, seed=spec.seed)
    return train


def fit_run(
    spec, cfg: CompareConfig, ctx: Context, progress: bool, settings: dict | None = None, log_dir: Path | None = None
):
    """Fit ``spec``'s strategy on its train subset: (artifact, train subset, train record, settings)."""
    sp = get_strategy(spec.strategy)
    settings = dict(cfg.settings_for(spec.strategy) if settings is None else settings)
    if cfg.proposer and "proposer" in {f.name for f in dataclasses.fields(sp.config_cls)}:
        settings.setdefault("proposer", cfg.proposer)  # --proposer: the LM a proposing strategy asks
    train = train_subset(spec, ctx)
    # A seed and no dev metrics for the strategies whose config has them (the grid measures on test).
    fields = {f.name for f in dataclasses.fields(sp.config_cls)}
    own = {k: v for k, v in (("seed", spec.seed), ("dev_limit", 0)) if k in fields}
    config_settings, lr = split_lr(spec.strategy, settings)
    config = make_config(spec.strategy, **{**own, **config_settings})
    tc = TrainConfig(
        epochs=cfg.epochs_for(spec.strategy),
        seed=spec.seed,
        dev_limit=cfg.dev_limit,
        checkpoint_every=0,
        eval_every=cfg.eval_every,
        patience=cfg.patience,
        lr=lr,
    )
    art = sp.strategy_cls(config).fit(
        model_of(spec.strategy, cfg, ctx), train, ctx.splits.dev, tc, progress=progress, run_dir=log_dir
    )
    tr = art.metrics["train"]
    info = {
        "seconds": tr["train_seconds"],
        "model_calls": tr.get("model_calls"),
        "trainable_params": tr["trainable_params"],
        "peak_rss_bytes": tr["peak_rss_bytes"],
        "examples_per_s": tr.get("examples_per_s"),
        "stopped_early": tr.get("stopped_early", False),
        "steps": tr.get("steps", 0),
    }
    for key in ("best_step", "best_dev", "initial_loss", "final_loss", "proposer"):
        if key in tr:
            info[key] = tr[key]
    cap = sp.strategy_cls.reads_rows_at_most(config)
    if cap is not None:
        info["reads_rows_at_most"] = cap
    return art, train, info, settings


def full_row_ids(test: TaskData, part: TaskData) -> list[int]:
    """Each row ``part.evaluate(rows=True)`` gives, as its id in ``test``'s own rows: the example's
    index for classification, the input's first-seen index for generation and chat (rows are per
    distinct input there). Screened runs keep the full test set's ids, so their rows pair with the
    finalists' on the rows both scored."""
    at = {key: i for i, key in enumerate(test.spec.row_keys(test))}
    return [at[key] for key in test.spec.row_keys(part)]


def measure_quality(
    art, spec, cfg: CompareConfig, ctx: Context, train, light: bool = False, screened: bool = False
) -> dict:
    """Test quality, the train-set gap, fragility and forgetting of a fitted artifact (``light``: test
    quality only, for the adaptive compare's runs; :func:`finalize` adds the rest to the ones it
    recommends). ``screened``: scored on the screening subsample of the test rows only
    (``ctx.screen``), row ids kept as in the full test set."""
    t1 = time.perf_counter()
    rows_in = ctx.screen if screened and ctx.screen is not None else ctx.test
    where = cfg.endpoint_of(spec.strategy)
    before = ctx.endpoints[where][1].usage() if where else None
    test_m = art.evaluate(rows_in, rows=True)
    rows = test_m.pop("rows")
    if rows_in is not ctx.test:
        for row, i in zip(rows, full_row_ids(ctx.test, rows_in)):
            row["id"] = i
    q = _quality(test_m, ctx.test)
    ev = {
        "quality": q,
        "metric": ctx.test.spec.metric,
        "test": test_m,
        "test_examples": len(rows_in),
        "train_quality": None,
        "overfit_gap": None,
        "examples_per_s": test_m["examples_per_s"],
        "prompt_tokens": test_m["prompt_tokens"],
        "seconds": time.perf_counter() - t1,
        "scored_examples": len(rows_in),
        "fragility": None,
        "forgetting": None,
        "consistency": None,
        "rows": rows,
        "baselines": ctx.baselines,
        "light": light,
        "screened": rows_in is not ctx.test,
        "endpoint": endpoint_usage(*ctx.endpoints[where], before, len(rows_in)) if where else None,
    }
    if not light:
        add_extras(ev, art, spec, cfg, ctx, train)
    return ev


def add_extras(ev: dict, art, spec, cfg: CompareConfig, ctx: Context, train) -> None:
    """:func:`measure_extras`, and for a hosted candidate what its calls (fragility's paraphrases,
    consistency's samples, the train-test gap) used at the endpoint, kept apart from the test
    scoring's (``ev["endpoint_extras"]``) so the report's spend counts every call."""
    where = cfg.endpoint_of(spec.strategy)
    if where is None:
        return measure_extras(ev, art, spec, cfg, ctx, train)
    from adaptlab.backends.endpoints import spend

    espec, backend = ctx.endpoints[where]
    before = backend.usage()
    measure_extras(ev, art, spec, cfg, ctx, train)
    ev["endpoint_extras"] = spend(espec, backend, before)


def endpoint_usage(espec, backend, before: dict, n: int) -> dict:
    """What scoring ``n`` test rows on an endpoint used: calls, tokens, dollars (paid now, and what
    the same calls cost uncached), latency, and the price of one prediction at the endpoint's prices."""
    from adaptlab.backends.endpoints import latency, spend

    used = {**spend(espec, backend, before), **latency(backend, before)}
    used.update(
        predictions=n,
        prompt_tokens_per_prediction=used["tokens_prompt"] / max(n, 1),
        completion_tokens_per_prediction=used["tokens_completion"] / max(n, 1),
        usd_per_1m=used["uncached_cost_usd"] / max(n, 1) * 1e6,
        price_in=espec.price_in,
        price_out=espec.price_out,
        concurrency=espec.concurrency,
    )
    return used


def cost_of(ev: dict, cfg: CompareConfig) -> dict:
    """Cost per 1M predictions: machine time at ``price_per_hour`` for a local run, the endpoint's
    token prices for a hosted one (the tokens its answers reported, per prediction)."""
    e = ev.get("endpoint")
    if e is None:
        return {**cost_per_million(ev["examples_per_s"], ev["prompt_tokens"], cfg.price_per_hour), "pricing": "machine"}
    return {
        "usd_per_1m": e["usd_per_1m"],
        "machine_hours_per_1m": 0.0,
        "prompt_tokens_per_1m": e["prompt_tokens_per_prediction"] * 1e6,
        "price_per_hour": None,
        "pricing": "tokens",
    }


LATENCY_ROWS = 5


def local_latency(art, test: TaskData, n: int = LATENCY_ROWS) -> dict:
    """p50/p95 seconds of answering one request alone with a local artifact (``n`` test rows, one at a
    time, as a server with no other traffic would), to set beside an endpoint's measured latency."""
    from adaptlab.backends.endpoints import latency_summary

    xs = []
    for ex in subsample(test, n=min(n, len(test)), seed=1).examples:
        t0 = time.perf_counter()
        art.evaluate(test.with_examples([ex]))
        xs.append(time.perf_counter() - t0)
    return latency_summary(xs)


def measure_extras(ev: dict, art, spec, cfg: CompareConfig, ctx: Context, train) -> None:
    """What describes the strategy one would deploy, added to a run's eval record ``ev``: the
    train-test gap, fragility, forgetting and consistency under sampling, with the eval seconds and
    scored examples they take."""
    scored, seconds = 0, 0.0
    # Overfitting: the same metric on (up to fragility_examples) training examples.
    train_part = (
        subsample(train, n=min(len(train), max(16, cfg.fragility_examples)), seed=spec.seed)
        if len(train) > 16
        else train
    )
    train_m = art.evaluate(train_part) if spec.train_size else None
    scored += len(train_part) if train_m else 0
    frag = None
    if cfg.fragility_k and cfg.fragility_examples:
        part = subsample(ctx.test, n=min(cfg.fragility_examples, len(ctx.test)), seed=0)
        t2 = time.perf_counter()
        frag = fragility(art, part, k=cfg.fragility_k, seed=spec.seed)
        seconds += time.perf_counter() - t2
        scored += len(part) * (1 + len(frag["paraphrases"]) + len(frag["perturbations"]))
    own = cfg.base_of(spec.strategy)
    forget = forgetting(art, ctx.bases[own], ctx.references[own]) if cfg.forgetting else None
    steady = None
    if cfg.consistency_examples:
        part = subsample(ctx.test, n=min(cfg.consistency_examples, len(ctx.test)), seed=0)
        t3 = time.perf_counter()
        steady = consistency(art, part, cfg.consistency_samples, cfg.consistency_temperature, seed=spec.seed)
        seconds += time.perf_counter() - t3
        scored += len(part) * (cfg.consistency_samples if not ctx.splits.train.spec.closed_labels else 1)
    if cfg.endpoints and cfg.endpoint_of(spec.strategy) is None:  # beside hosted candidates: a request's latency
        t4 = time.perf_counter()
        ev["latency"] = local_latency(art, ctx.test)
        seconds += time.perf_counter() - t4
        scored += LATENCY_ROWS
    ev["seconds"] += seconds
    ev["scored_examples"] += scored
    ev.update(
        train_quality=_quality(train_m, ctx.test) if train_m else None,
        overfit_gap=(_quality(train_m, ctx.test) - ev["quality"]) if train_m else None,
        fragility=frag,
        forgetting=forget,
        consistency=steady,
        light=False,
    )


def load_artifact(rec: dict, cfg: CompareConfig, ctx: Context, out: Path):
    """The kept artifact of the run ``rec``."""
    from adaptlab.strategies.base import Artifact

    return Artifact.load(Path(out) / "artifacts" / rec["run"]["id"], model_of(rec["run"]["strategy"], cfg, ctx))


def rescore_in_full(rec: dict, spec, cfg: CompareConfig, ctx: Context, out: Path, art=None) -> dict:
    """A screened run whose artifact was kept, scored again on every test row (a finalist); ``art``:
    that artifact, when the caller has loaded it."""
    art = art if art is not None else load_artifact(rec, cfg, ctx, out)
    ev = measure_quality(art, spec, cfg, ctx, None, light=True)
    rec["predictions"] = ev.pop("rows")
    rec["eval"].update(ev)
    rec["cost"].update(cost_of(ev, cfg))
    return rec


def finalize(rec: dict, spec, cfg: CompareConfig, ctx: Context, out: Path) -> dict:
    """Add the full measurements to a light run (``spec``) whose artifact was kept (the adaptive
    compare's winner): the artifact is loaded, measured, and the record returned updated."""
    art = load_artifact(rec, cfg, ctx, out)
    if rec["eval"].get("screened"):
        rescore_in_full(rec, spec, cfg, ctx, out, art)
    add_extras(rec["eval"], art, spec, cfg, ctx, train_subset(spec, ctx))
    rec["eval"]["finalized"] = True
    return rec


def run_one(
    spec,
    cfg: CompareConfig,
    ctx: Context,
    out: Path,
    progress: bool = True,
    light: bool = False,
    settings: dict | None = None,
    keep: bool = False,
    log_dir: Path | None = None,
    screened: bool = False,
) -> dict:
    """Fit, measure, save (and prune) one run; the record the results folder keeps for it. With
    ``log_dir`` a gradient strategy logs its steps there as it trains (for a watcher); ``screened``:
    scored on the screening rows only."""
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    sp = get_strategy(spec.strategy)
    where = cfg.endpoint_of(spec.strategy)
    before = ctx.endpoints[where][1].usage() if where else None
    art, train, train_info, settings = fit_run(spec, cfg, ctx, progress, settings, log_dir)
    if where:  # what fitting cost on the endpoint (a prompt search scores dev there)
        from adaptlab.backends.endpoints import spend

        train_info["endpoint"] = spend(ctx.endpoints[where][0], ctx.endpoints[where][1], before)
    ev = measure_quality(art, spec, cfg, ctx, train, light, screened)
    predictions = ev.pop("rows")  # every test row's output and metric: galleries, paired comparisons
    folder = Path(out) / "artifacts" / spec.id
    art.recipe = recipe_for(cfg.data, cfg.data_dir, 0, spec.train_size or None, spec.seed, train, columns=cfg.columns)
    art.save(folder)
    size = artifact_bytes(folder)
    kept = True if keep else prune_artifact(folder, cfg.keep_artifacts, size)  # keep: until finalize
    return {
        "run": {
            "id": spec.id,
            "strategy": spec.strategy,
            "kind": sp.kind,
            "train_size": spec.train_size,
            "endpoint": where,
            "base": None if where else cfg.base_of(spec.strategy),
            "seed": spec.seed,
            "epochs": cfg.epochs_for(spec.strategy) if sp.kind == "gradient" else None,
            "settings": settings,
        },
        "train": train_info,
        "eval": ev,
        "cost": {"artifact_bytes": size, "artifact_kept": kept, **cost_of(ev, cfg)},
        "meta": {"started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "predictions": predictions,
    }
