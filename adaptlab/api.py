"""adaptlab from Python: the calls the command line is a thin layer over.

    import adaptlab

    result = adaptlab.compare("tickets.csv", out="runs/tickets", budget="15m")
    print(result.recommendation)               # the answer, with its reasons
    result.to_pandas()                         # one row per run (pandas, where installed)

    art = adaptlab.train("lora", "tickets.csv", out="artifacts/lora", train_size=256)
    model = adaptlab.load("artifacts/lora")    # or a registry reference: "tickets@prod"
    model.classify(["Where is my parcel?"])

Every call is resumable: a compare re-run on the same ``out`` goes on from the runs it finished, a
gradient ``train`` with ``resume=True`` from its last checkpoint; progress shows as rich bars, in a
notebook as in a terminal. Settings are the config classes' fields
(:class:`adaptlab.compare.CompareConfig`, :class:`adaptlab.training.TrainConfig`), so a notebook, a
YAML file and the command line share one set of names, defaults and checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptlab.data.loading import DataError

__all__ = ["Adapted", "CompareResult", "compare", "load", "train"]


# ------------------------------------------------------------------ compare
@dataclass
class CompareResult:
    """A finished (or budget-ended) compare: its runs, ranking and recommendation, read from ``out``.

    ``CompareResult.open(out)`` reads any compare folder, also one run from the command line."""

    out: Path
    config: Any                      # the CompareConfig it ran with
    runs: list                       # RunRecord per finished run (spec, timings, evaluation, cost)
    recommendation: Any              # adaptlab.compare.recommend.Recommendation
    skipped: list = field(default_factory=list)   # runs the budget left out, with why

    @classmethod
    def open(cls, out: str | Path) -> CompareResult:
        from adaptlab.compare import CompareConfig, load_results
        from adaptlab.compare.recommend import constraints_for, recommend
        from adaptlab.compare.store import load_skipped

        out = Path(out)
        if not (out / "compare.json").exists():
            raise DataError(f"{out}: not a compare folder (no compare.json)")
        cfg = CompareConfig.load(out / "compare.json")
        runs = load_results(out)
        return cls(out, cfg, runs, recommend(runs, constraints_for(cfg)), load_skipped(out))

    # -------------------------------------------------------------- the answer
    @property
    def winner(self) -> str | None:
        """The recommended candidate (``strategy`` or ``strategy@where``); None if nothing ran."""
        return self.recommendation.winner

    @property
    def decision(self) -> str | None:
        """The race's last word: decided, or why not (adaptive compares), as the report says it."""
        race = self.out / "race.json"
        if not race.exists():
            return None
        return json.loads(race.read_text()).get("decision")

    @property
    def ranking(self) -> list[dict]:
        """The candidates at the target size, best first: strategy, train_size, quality (measured or
        predicted, with its band), cost and size columns, and the rule that placed it if one did."""
        return self.recommendation.ranked

    @property
    def reasons(self) -> list[str]:
        return self.recommendation.reasons

    @property
    def report_html(self) -> Path:
        return self.out / "report" / "report.html"

    @property
    def report_md(self) -> Path:
        return self.out / "report" / "report.md"

    def curves(self) -> dict[str, list[tuple[int, float]]]:
        """Each candidate's learning curve as measured: [(train size, mean quality over seeds)]."""
        by: dict[str, dict[int, list[float]]] = {}
        for r in self.runs:
            if r.quality is not None:
                by.setdefault(r.strategy, {}).setdefault(r.train_size, []).append(r.quality)
        return {s: sorted((n, sum(q) / len(q)) for n, q in sizes.items()) for s, sizes in sorted(by.items())}

    def table(self) -> list[dict]:
        """One flat dict per run: the columns of :meth:`to_pandas`."""
        rows = []
        for r in self.runs:
            ev, tr = r.eval, r.train
            rows.append({"run": r.id, "strategy": r.strategy, "train_size": r.train_size, "seed": r.seed,
                         "metric": ev.get("metric"), "quality": r.quality, "test_n": ev.get("n"),
                         "fit_seconds": r.fit_seconds, "peak_rss_gb": (tr.get("peak_rss_bytes") or 0) / 2**30,
                         "trainable_params": tr.get("trainable_params"),
                         "artifact_bytes": r.cost.get("artifact_bytes"), "usd_per_1m": r.cost.get("usd_per_1m"),
                         "prompt_tokens": ev.get("prompt_tokens"), "examples_per_s": ev.get("examples_per_s")})
        return rows

    def to_pandas(self):
        """The runs as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("CompareResult.to_pandas() needs pandas (pip install pandas); "
                              "CompareResult.table() gives the same rows as dicts") from None
        return pd.DataFrame(self.table())

    def __str__(self) -> str:
        decision = self.decision
        return self.recommendation.to_markdown() + (f"\n\n{decision}" if decision else "")

    def _repr_markdown_(self) -> str:  # Jupyter shows the answer, not the dataclass
        return str(self)


def compare_config(data: str | None = None, config=None, budget: str | float | None = None, **settings):
    """A :class:`~adaptlab.compare.CompareConfig` from a saved/YAML file or object, then ``data``,
    ``budget`` and any other field given here (these override the file's)."""
    from adaptlab.compare import CompareConfig, parse_budget
    from adaptlab.compare.config import from_mapping, read_config_file

    base: dict = {}
    if isinstance(config, CompareConfig):
        base = config.to_dict()
    elif isinstance(config, dict):
        base = dict(config)
    elif config is not None:
        base = read_config_file(Path(config))
    given = dict(settings)
    if data is not None:
        given["data"] = str(data)
    if budget is not None:
        given["budget_seconds"] = parse_budget(budget) if isinstance(budget, str) else float(budget)
        given.setdefault("adaptive", base.get("adaptive", True) if "budget_seconds" in base else True)
    merged = {**base, **given}
    if "data" not in merged:
        raise DataError("compare: data is required (a file, a folder of split files or a dataset name)")
    return from_mapping(merged, str(config) if config is not None and not isinstance(config, dict | CompareConfig)
                        else "compare()")


def compare(data: str | None = None, *, out: str | Path, config=None, budget: str | float | None = None,
            progress: bool = True, workers: int = 1, **settings) -> CompareResult:
    """Run (or resume) a compare of every candidate on ``data``; write its report; return its result.

    ``config``: a YAML or JSON file (a run folder's ``compare.json`` re-runs that compare), a dict or a
    :class:`~adaptlab.compare.CompareConfig`; ``data``, ``budget`` (``"20m"``, ``"2h"`` or seconds) and
    ``settings`` (any CompareConfig field: ``strategies=["zero_shot", "lora"]``, ``train_sizes=[64,
    256]``, ``model="smollm2-135m-instruct"``, ``strategy_settings={"lora": {"r": 16}}``, ...)
    override it. Re-running with the same ``out`` resumes: finished runs are not run again."""
    from adaptlab.compare import run_compare
    from adaptlab.compare.recommend import constraints_for
    from adaptlab.compare.report import build_report

    cfg = compare_config(data, config, budget, **settings)
    out = Path(out)
    if workers < 1:
        raise DataError(f"workers={workers}: must be >= 1")
    if workers > 1:
        from adaptlab.compare.grid import run_workers, save_config

        save_config(cfg, out)
        code = run_workers(out, workers)
        if code != 0:
            raise DataError(f"a compare worker failed (exit {code}); call compare() again to resume")
    else:
        run_compare(cfg, out, progress=progress)
    build_report(out, constraints_for(cfg))
    return CompareResult.open(out)


# ------------------------------------------------------------------ train
def train(strategy: str, data: str = "demo", *, out: str | Path, model: str | None = None, backend=None,
          settings: dict | None = None, train_size: int | None = None, seed: int = 0, resume: bool = False,
          data_dir: str | Path | None = None, columns: dict[str, str] | None = None, device: str = "auto",
          evaluate: bool = True, progress: bool = True, **train_settings):
    """Fit one strategy on ``data``'s train split, score it on the test split, save it in ``out``.

    ``settings``: the strategy's own config fields (``{"r": 16}`` for LoRA); ``train_settings``:
    :class:`~adaptlab.training.TrainConfig` fields (``epochs``, ``lr``, ``batch_size``, ``max_steps``,
    ...). ``backend``: a loaded backend to fit on (an endpoint for prompt strategies); else ``model``
    (default Gemma 3 270M) is loaded. Returns the artifact (``.metrics``, ``.predict``, ``.save``)."""
    from adaptlab.data.named import load_task, recipe_for
    from adaptlab.data.splits import subsample
    from adaptlab.strategies import get_strategy, make_config
    from adaptlab.training import TrainConfig
    from adaptlab.training.distributed import is_main

    spec = get_strategy(strategy)
    config = make_config(strategy, **(settings or {}))
    cfg = TrainConfig(seed=seed, **train_settings)
    splits = load_task(data, data_dir_override=data_dir, seed=seed, columns=columns)
    train_part = subsample(splits.train, n=train_size, seed=seed) if train_size else splits.train
    if backend is None:
        backend = _local_backend(model, device)
    out = Path(out)
    # A prompt search shows a spinner; a gradient strategy's loop shows its own progress bars.
    with _status(progress and spec.kind == "prompt", f"{strategy}: fitting"):
        art = spec.strategy_cls(config).fit(backend, train_part, splits.dev, cfg, run_dir=out / "run", resume=resume)
    if not is_main():  # under torchrun: rank 0 evaluates and saves; the others are done
        return art
    if evaluate:
        with _status(progress, f"evaluating on {len(splits.test)} test examples"):
            art.metrics["test"] = art.evaluate(splits.test)
    art.recipe = recipe_for(data, data_dir, seed, train_size, seed, train_part, columns=columns)
    art.save(out)
    return art


def _status(show: bool, text: str):
    """A rich spinner (terminal or notebook) while ``show``; nothing otherwise."""
    import contextlib

    if not show:
        return contextlib.nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(text)


def _local_backend(model: str | None, device: str = "auto"):
    from adaptlab.backends import LocalBackend
    from adaptlab.models.base import DEFAULT_MODEL, load_base, resolve_device

    return LocalBackend(load_base(model or DEFAULT_MODEL, device=resolve_device(device)))


# ------------------------------------------------------------------ load
class Adapted:
    """An adaptation loaded on its base model: ``classify``, ``generate``, ``chat`` (and the artifact
    itself as ``.artifact``)."""

    def __init__(self, artifact, source: str):
        self.artifact = artifact
        self.source = source

    @property
    def task(self) -> str:
        return self.artifact.task

    @property
    def labels(self) -> list[str] | None:
        return self.artifact.label_set

    @property
    def metrics(self) -> dict:
        return self.artifact.metrics

    def _inputs(self, texts) -> tuple[list[str], bool]:
        one = isinstance(texts, str)
        items = [texts] if one else list(texts)
        if self.artifact.spec.conversation:  # a chat adaptation takes a user turn as a one-turn conversation
            items = [json.dumps([{"role": "user", "content": t}]) for t in items]
        return items, one

    def classify(self, texts: str | list[str]) -> str | list[str]:
        """The label of each text (one text: one label), from the adaptation's label set."""
        if self.labels is None:
            raise ValueError(f"{self.source}: a {self.task} adaptation has no label set; use generate()")
        items, one = self._inputs(texts)
        out = self.artifact.predict(items)
        return out[0] if one else out

    def scores(self, texts: list[str]) -> list[dict[str, float]]:
        """Each text's probability per label (calibrated where the adaptation is)."""
        if self.labels is None:
            raise ValueError(f"{self.source}: a {self.task} adaptation has no label set")
        items, _ = self._inputs(texts)
        probs = self.artifact.scores(items).softmax(dim=1).tolist()
        return [dict(zip(self.labels, p, strict=True)) for p in probs]

    def generate(self, texts: str | list[str], max_new_tokens: int | None = None,
                 temperature: float = 0.0, seed: int = 0) -> str | list[str]:
        """Generated text for each input (greedy unless ``temperature`` > 0)."""
        from adaptlab.models.decoding import Sampling

        items, one = self._inputs(texts)
        sampling = Sampling(temperature=temperature, seed=seed) if temperature > 0 else None
        out = self.artifact.generate(items, max_new_tokens=max_new_tokens, sampling=sampling)
        return out[0] if one else out

    def chat(self, messages: list[dict], max_new_tokens: int | None = None) -> str:
        """The assistant's next turn for an OpenAI-style list of ``{"role", "content"}`` messages. An
        adaptation for single inputs answers the last user turn (as the server's chat route does)."""
        from adaptlab.data.records import check_conversation

        if self.artifact.spec.conversation:
            check_conversation(messages, "messages", final_assistant=False)
            return self.artifact.generate([json.dumps(messages)], max_new_tokens=max_new_tokens)[0]
        users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        if not users or not isinstance(users[-1], str):
            raise ValueError("messages: no user turn to answer")
        if self.labels is not None:
            return self.artifact.predict([users[-1]])[0]
        return self.artifact.generate([users[-1]], max_new_tokens=max_new_tokens)[0]

    def __repr__(self) -> str:
        return f"Adapted({self.artifact.strategy} {self.task} from {self.source})"


def load(ref: str | Path, *, registry: str | Path | None = None, model=None, device: str = "auto") -> Adapted:
    """An adaptation by artifact folder (``train``'s ``out``, a compare's ``artifacts/RUN``) or by
    registry reference (``task``, ``task@3``, ``task@prod``), on its own base model (``model``: a
    loaded base or backend to use instead, e.g. one shared by several adaptations)."""
    from adaptlab.strategies.base import Artifact, read_artifact_meta

    folder = Path(ref)
    if not (folder / "adaptlab_artifact.json").exists():
        from adaptlab.registry import Registry

        entry = Registry(registry, read_only=True).resolve(str(ref))
        folder = entry.path
    meta = read_artifact_meta(folder)
    if model is None:
        model = _local_backend(meta["base_model"]["name"], device).model
    return Adapted(Artifact.load(folder, model), str(ref))
