"""A compare run as a typed record: its spec, what fitting took, what scoring measured, its cost and
artifact, and where it ran. On disk it stays the JSON a compare has always written (``results/<run
id>.json``, sections run/train/eval/cost/meta and the per-row ``predictions``), read back through
:meth:`RunRecord.load` alone.

The compare core reads runs through the fields and properties here (``rec.strategy``,
``rec.quality``, ``rec.fit_seconds``); the sections stay reachable by name (``rec["eval"]``) for
the report's tables, which show what a run measured section by section, and for records written
before a field existed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

SECTIONS = ("run", "train", "eval", "cost", "meta")


@dataclass(frozen=True)
class RunSpec:
    strategy: str
    train_size: int
    seed: int

    @property
    def id(self) -> str:
        return f"{self.strategy}-n{self.train_size}-s{self.seed}"


@dataclass
class RunRecord:
    run: dict  # spec and settings: id, strategy, kind, train_size, seed, epochs, ...
    train: dict = field(default_factory=dict)  # fitting: seconds, peak memory, trainable params, steps, ...
    eval: dict = field(default_factory=dict)  # scoring: quality, metric, test metrics, seconds, rows, ...
    cost: dict = field(default_factory=dict)  # artifact bytes and whether kept, USD per 1M predictions
    meta: dict = field(default_factory=dict)  # versions, commit, machine, data, model, worker, times
    predictions: list | None = None  # each scored test row's output and metric (paired statistics)
    extra: dict = field(default_factory=dict)  # any other top-level key, kept as written

    # -------------------------------------------------------------- on disk
    @classmethod
    def of(cls, data) -> RunRecord:
        """A record from its JSON form (a record is returned as it is)."""
        if isinstance(data, RunRecord):
            return data
        if not isinstance(data, dict) or not isinstance(data.get("run"), dict):
            raise ValueError("a run record needs a 'run' section")
        rest = {k: v for k, v in data.items() if k not in SECTIONS and k != "predictions"}
        return cls(
            data["run"],
            data.get("train") or {},
            data.get("eval") or {},
            data.get("cost") or {},
            data.get("meta") or {},
            data.get("predictions"),
            rest,
        )

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        return cls.of(json.loads(Path(path).read_text()))

    def to_json(self) -> dict:
        out = {
            "run": self.run,
            "train": self.train,
            "eval": self.eval,
            "cost": self.cost,
            "meta": self.meta,
            **self.extra,
        }
        if self.predictions is not None:
            out["predictions"] = self.predictions
        return out

    # -------------------------------------------------------------- sections by name
    def __getitem__(self, key: str):
        if key in SECTIONS:
            return getattr(self, key)
        if key == "predictions" and self.predictions is not None:
            return self.predictions
        return self.extra[key]

    def __setitem__(self, key: str, value) -> None:
        if key in SECTIONS or key == "predictions":
            setattr(self, key, value)
        else:
            self.extra[key] = value

    def get(self, key: str, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    # -------------------------------------------------------------- the spec
    @property
    def id(self) -> str:
        return self.run["id"]

    @property
    def spec(self) -> RunSpec:
        return RunSpec(self.strategy, self.train_size, self.seed)

    @property
    def strategy(self) -> str:
        """The candidate: a strategy, or STRATEGY@BASE / STRATEGY@ENDPOINT."""
        return self.run["strategy"]

    @property
    def kind(self) -> str:
        return self.run.get("kind", "gradient")

    @property
    def train_size(self) -> int:
        return self.run["train_size"]

    @property
    def reads_rows_at_most(self) -> int | None:
        """The most train rows the fit could depend on, as its strategy declared (None: all)."""
        return self.train.get("reads_rows_at_most")

    @property
    def seed(self) -> int:
        return self.run.get("seed", 0)

    @property
    def endpoint(self) -> str | None:
        return self.run.get("endpoint")

    # -------------------------------------------------------------- timings
    @property
    def fit_seconds(self) -> float | None:
        return self.train.get("seconds")

    @property
    def score_seconds(self) -> float | None:
        return self.eval.get("seconds")

    @property
    def scored_rows(self) -> int:
        return self.eval.get("scored_examples") or 0

    # -------------------------------------------------------------- evaluation
    @property
    def quality(self) -> float:
        return self.eval["quality"]

    @property
    def metric(self) -> str:
        return self.eval["metric"]

    @property
    def test(self) -> dict:
        return self.eval.get("test") or {}

    def ranked_quality(self, metric: str | None) -> float:
        """The quality the ranking uses: macro-F1 when ``metric`` says so, else the run's own metric."""
        return self.test["macro_f1"] if metric == "macro_f1" else self.quality

    @property
    def screened(self) -> bool:
        return bool(self.eval.get("screened"))

    @property
    def light(self) -> bool:
        return bool(self.eval.get("light"))

    @property
    def baselines(self) -> dict:
        return self.eval.get("baselines") or {}

    # -------------------------------------------------------------- artifact
    @property
    def artifact_bytes(self) -> int:
        return int(self.cost.get("artifact_bytes") or 0)


def records_of(records) -> list[RunRecord]:
    """Records as :class:`RunRecord` (JSON dicts, from tests or older callers, are read once here)."""
    return [RunRecord.of(r) for r in records]
