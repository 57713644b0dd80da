"""A compare from Python: :func:`compare` runs (or resumes) one and returns a :class:`CompareResult`,
the runs, ranking, recommendation and report paths as objects. ``adaptlab.compare(...)`` and
``adaptlab.api.compare`` are this function; the command line's ``compare`` runs the same steps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptlab.data.loading import DataError


@dataclass
class CompareResult:
    """A finished (or budget-ended) compare: its runs, ranking and recommendation, read from ``out``.

    ``CompareResult.open(out)`` reads any compare folder, also one run from the command line."""

    out: Path
    config: Any  # the CompareConfig it ran with
    runs: list  # RunRecord per finished run (spec, timings, evaluation, cost)
    recommendation: Any  # adaptlab.compare.recommend.Recommendation
    skipped: list = field(default_factory=list)  # runs the budget left out, with why

    @classmethod
    def open(cls, out: str | Path) -> CompareResult:
        from adaptlab.compare.config import CompareConfig
        from adaptlab.compare.recommend import constraints_for, recommend
        from adaptlab.compare.store import load_results, load_skipped

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
    def artifact(self) -> Path:
        """The recommended run's artifact folder, to register or serve (``adaptlab registry register``
        takes it, or this compare's folder). Errors name what is missing: nothing recommended, or an
        artifact the compare did not keep (``keep_artifacts``)."""
        from adaptlab.strategies.base import ARTIFACT_FILE

        if not self.recommendation.ranked:
            raise DataError(f"{self.out}: nothing is recommended (no run meets the constraints)")
        top = self.recommendation.ranked[0]
        runs = sorted(
            (r for r in self.runs if r.strategy == top["strategy"] and r.train_size == top["train_size"]),
            key=lambda r: -(r.quality or 0.0),
        )
        for r in runs:
            folder = self.out / "artifacts" / r.id
            if (folder / ARTIFACT_FILE).exists():
                return folder
        ids = ", ".join(r.id for r in runs) or f"{top['strategy']} at {top['train_size']}"
        raise DataError(
            f"{self.out}: the recommended run ({ids}) kept no artifact (keep_artifacts="
            f"{self.config.keep_artifacts!r}; model copies over 100 MB are dropped by 'small'): train it with "
            f"`adaptlab train {top['strategy']}`"
        )

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
            rows.append(
                {
                    "run": r.id,
                    "strategy": r.strategy,
                    "train_size": r.train_size,
                    "seed": r.seed,
                    "metric": ev.get("metric"),
                    "quality": r.quality,
                    "test_n": ev.get("test_examples"),  # the test rows this run was scored on
                    "fit_seconds": r.fit_seconds,
                    "peak_rss_gb": (tr.get("peak_rss_bytes") or 0) / 2**30,
                    "trainable_params": tr.get("trainable_params"),
                    "artifact_bytes": r.cost.get("artifact_bytes"),
                    "usd_per_1m": r.cost.get("usd_per_1m"),
                    "prompt_tokens": ev.get("prompt_tokens"),
                    "examples_per_s": ev.get("examples_per_s"),
                }
            )
        return rows

    def to_pandas(self):
        """The runs as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "CompareResult.to_pandas() needs pandas (pip install pandas); "
                "CompareResult.table() gives the same rows as dicts"
            ) from None
        return pd.DataFrame(self.table())

    def __str__(self) -> str:
        decision = self.decision
        return self.recommendation.to_markdown() + (f"\n\n{decision}" if decision else "")

    def _repr_markdown_(self) -> str:  # Jupyter shows the answer, not the dataclass
        return str(self)


def compare_config(data: str | None = None, config=None, budget: str | float | None = None, **settings):
    """A :class:`~adaptlab.compare.CompareConfig` from a saved/YAML file or object, then ``data``,
    ``budget`` and any other field given here (these override the file's)."""
    from adaptlab.compare.config import CompareConfig, from_mapping, parse_budget, read_config_file

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
        base.pop("budget", None)  # a file's spelling of the same setting
    merged = {**base, **given}
    if "data" not in merged:
        raise DataError("compare: data is required (a file, a folder of split files or a dataset name)")
    return from_mapping(
        merged, str(config) if config is not None and not isinstance(config, dict | CompareConfig) else "compare()"
    )


def compare(
    data: str | None = None,
    *,
    out: str | Path,
    config=None,
    budget: str | float | None = None,
    progress: bool = True,
    workers: int = 1,
    **settings,
) -> CompareResult:
    """Run (or resume) a compare of every candidate on ``data``; write its report; return its result.

    ``config``: a YAML or JSON file (a run folder's ``compare.json`` re-runs that compare), a dict or a
    :class:`~adaptlab.compare.CompareConfig`; ``data``, ``budget`` (``"20m"``, ``"2h"`` or seconds) and
    ``settings`` (any CompareConfig field: ``strategies=[...]`` (see ``adaptlab strategies``),
    ``train_sizes=[64, 256]``, ``model="smollm2-135m-instruct"``, ``strategy_settings={STRATEGY:
    {KEY: VALUE}}``, ...)
    override it. Re-running with the same ``out`` resumes: finished runs are not run again."""
    cfg = compare_config(data, config, budget, **settings)
    return run(cfg, out, progress=progress, workers=workers)


def run(
    cfg,
    out: str | Path,
    *,
    progress: bool = True,
    workers: int = 1,
    ray: str | None = None,
    ray_cpus: int | None = None,
) -> CompareResult:
    """Run (or resume) the compare ``cfg`` in ``out``: in this process, or in ``workers`` processes
    (here, or placed by Ray at address ``ray``) that start from ``out/compare.json``; then write its
    report. The command line's ``compare`` is this call plus its printing."""
    from adaptlab.compare.grid import run_compare
    from adaptlab.compare.recommend import constraints_for
    from adaptlab.compare.report import build_report
    from adaptlab.compare.store import load_results, load_skipped, minutes

    out = Path(out)
    if workers < 1:
        raise DataError(f"--workers {workers}: must be >= 1")
    if ray_cpus is not None and ray_cpus < 1:
        raise DataError(f"--ray-cpus {ray_cpus}: must be >= 1")
    if workers > 1 or ray:
        from adaptlab.compare.grid import run_ray_workers, run_workers, save_config

        save_config(cfg, out)  # every worker starts from this file
        code = run_ray_workers(out, workers, ray, ray_cpus) if ray else run_workers(out, workers)
        if code != 0:
            raise DataError(f"a compare worker failed (exit {code}); run the same compare again to resume")
        result = {"skipped": load_skipped(out), "results": load_results(out)}
    else:
        result = run_compare(cfg, out, progress=progress)
    if not result["results"] and result["skipped"]:
        cheapest = min(x["estimate_s"] for x in result["skipped"])
        budget = minutes(cfg.budget_seconds) if cfg.budget_seconds else "none"
        raise DataError(
            f"--budget {budget}: all {len(result['skipped'])} runs were estimated over it (the "
            f"cheapest at {cheapest:.0f} s); raise the budget"
        )
    build_report(out, constraints_for(cfg))
    return CompareResult.open(out)
