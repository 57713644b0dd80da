"""The strategy protocol and the adaptation protocol every artifact implements.

Every strategy does ``fit(model, train, dev, train_config, *, run_dir, resume, progress) ->
Artifact`` (DSPy's one ``compile`` for every optimizer): hard-prompt strategies fit by search,
gradient strategies through the one training loop, and callers never branch on which.

An :class:`Artifact` is a fitted adaptation. What it contributes to a forward pass is all that
evaluation, serving, export and compare read (the *adaptation protocol*):

- ``prompts(texts)``: the prompt text of each input (template, instruction, exemplars);
- ``contribution()``: virtual tokens, per-layer keys/values, LoRA deltas or weights of its own
  (:class:`adaptlab.models.adaptation.Contribution`; empty for a hard prompt);
- ``calibrate(raw)``: the label-score correction (identity unless calibrated);
- ``labels``, ``label_texts()``, ``task``, ``decoding``.

Inference, evaluation, saved metadata and decoding defaults live here once. An artifact folder
holds ``adaptlab_artifact.json`` (strategy and training configs, template, labels, metrics,
base-model fingerprint, package versions) and, for weights, safetensors files in PEFT's format
where PEFT has one. Loading checks the fingerprint and refuses pickled weights.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import ClassVar

import torch

from adaptlab.data.loading import DataError, TaskData
from adaptlab.models.adaptation import Contribution
from adaptlab.prompts import PromptTemplate
from adaptlab.strategies.registry import fitting_strategies, get_strategy
from adaptlab.tasks.base import get_task
from adaptlab.utils import atomic_write_json, package_versions

ARTIFACT_FILE = "adaptlab_artifact.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt", ".pickle")
DEFAULT_DECODING = {"max_new_tokens": 64, "num_beams": 1}


# The prediction for an answer that names none of the labels: it equals no gold label, so it scores
# as wrong in accuracy and macro-F1 (and the report counts it per candidate).
NO_LABEL = "(an answer that names none of the labels)"


class ArtifactError(ValueError):
    """An artifact folder is missing, malformed, unsafe, or made for another base model."""


def read_artifact_meta(folder: str | Path) -> dict:
    """``adaptlab_artifact.json`` of an artifact folder, after refusing pickled files anywhere in it.

    The one check every reader of artifact folders shares (loading, the registry, export).
    """
    folder = Path(folder)
    meta_path = folder / ARTIFACT_FILE
    if not meta_path.is_file():
        raise ArtifactError(f"{folder}: not an adaptlab artifact (no {ARTIFACT_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{meta_path}:{e.lineno}: malformed JSON: {e.msg}") from None
    except UnicodeDecodeError:
        raise ArtifactError(f"{meta_path}: not UTF-8 text") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{meta_path}: expected a JSON object")
    unsafe = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if unsafe:
        raise ArtifactError(f"{folder}: refusing pickled weights ({', '.join(unsafe)}); only safetensors load")
    return meta


def artifact_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def default_decoding(train: TaskData, count_tokens) -> dict | None:
    """The task type's decoding defaults for adaptations trained on ``train`` (one rule for every
    strategy; None when answers are scored, not decoded)."""
    return get_task(train.task).default_decoding(train, count_tokens)


class Artifact:
    """A fitted adaptation that runs on a backend (the local base model, or an HTTP endpoint).

    Subclasses: :class:`adaptlab.strategies.gradient.WeightsArtifact` (trained parameters) and
    :class:`adaptlab.strategies.prompting.PromptArtifact` (a hard prompt).
    """

    kind: ClassVar[str] = ""

    def __init__(
        self,
        strategy: str,
        backend,
        config,
        template: PromptTemplate,
        task: str,
        labels: list[str] | None,
        metrics: dict | None = None,
        decoding: dict | None = None,
        train_config: dict | None = None,
    ):
        self.strategy = strategy
        self.backend = backend
        self.config = config
        self.template = template
        self.task = task
        self.spec = get_task(task)  # the task type: what a row is, how it is evaluated
        self.labels = labels
        self.metrics = dict(metrics or {})
        self.decoding = decoding or dict(DEFAULT_DECODING)
        self.train_config = train_config
        self.last_unparsed, self.last_unparsed_rows = 0, []
        # How its training rows were made (adaptlab.data.named.recipe_for) and where it came from
        # (adaptlab improve: parent version, rows added, feedback used); saved with it.
        self.recipe: dict | None = None
        self.lineage: dict | None = None

    # -------------------------------------------------------------- the adaptation protocol
    def prompts(self, texts: list[str]) -> list[str]:
        if self.spec.conversation:  # each text is a conversation (JSON); the model's chat template renders it
            return [self.template.render(self.backend.render_chat(json.loads(t))) for t in texts]
        labels = self.labels if self.spec.closed_labels else None
        return [self.in_turn(self.template.render(t, labels)) for t in texts]

    def in_turn(self, prompt: str) -> str:
        """A single-input prompt as the model gets it: one user turn in its chat template when the
        template says so (``prompt_format``), else as it is."""
        if not self.template.chat_turn:
            return prompt
        return self.backend.render_chat([{"role": "user", "content": prompt}])

    def contribution(self) -> Contribution:
        return Contribution()

    @property
    def calibrated(self) -> bool:
        return False

    def calibrate(self, raw: torch.Tensor) -> torch.Tensor:
        return raw

    @property
    def label_set(self) -> list[str] | None:
        """The labels answers are chosen from; None when the task's answers are free text."""
        return self.labels if self.spec.closed_labels else None

    def label_texts(self) -> list[str] | None:
        return self.template.label_texts(self.labels) if self.spec.closed_labels else None

    # -------------------------------------------------------------- inference
    def raw_scores(self, texts: list[str]) -> torch.Tensor:
        """(N, L) label log-probabilities from the backend, before calibration."""
        if not self.spec.closed_labels:
            raise ValueError(f"label scores need a task with a label set, not {self.task}")
        return self.backend.score(self.prompts(texts), self.label_texts())

    def scores(self, texts: list[str]) -> torch.Tensor:
        return self.calibrate(self.raw_scores(texts))

    def generate(
        self,
        texts: list[str],
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        sampling=None,
        stop: list[str] | None = None,
    ) -> list[str]:
        """Generated text per input; ``sampling`` (:class:`adaptlab.models.decoding.Sampling`,
        default greedy) and ``stop`` texts go to the backend."""
        stop = stop if stop is not None else self.decoding.get("stop")  # the artifact's own answer end, if any
        extra = {k: v for k, v in (("sampling", sampling), ("stop", stop)) if v is not None}
        return self.backend.generate(
            self.prompts(texts),
            max_new_tokens=max_new_tokens or self.decoding["max_new_tokens"],
            num_beams=num_beams or self.decoding.get("num_beams", 1),
            **extra,
        )

    def predict(self, texts: list[str]) -> list[str]:
        """Labels (always from the label set) or generated text."""
        if not self.spec.closed_labels:
            return self.generate(texts)
        self.last_unparsed, self.last_unparsed_rows = 0, []
        if self.backend.supports_scores:
            if not self.calibrated:  # the argmax alone: the backend may skip labels that cannot win
                best = self.backend.best(self.prompts(texts), self.label_texts())
            else:
                best = self.scores(texts).argmax(dim=1).tolist()
            return [self.labels[b] for b in best]
        idx = self.backend.choose(self.prompts(texts), self.labels)
        self.last_unparsed_rows = [j for j, i in enumerate(idx) if i < 0]  # answers that named no label
        self.last_unparsed = len(self.last_unparsed_rows)
        # An answer that names no label is wrong, never the majority class or the first label: a model
        # that fails must not read as one that guesses the commonest class (the committed hosted runs
        # had 184 of 200 prompt-search answers name no label). Counted in ``last_unparsed``.
        return [self.labels[i] if i >= 0 else NO_LABEL for i in idx]

    def evaluate(self, data: TaskData, rows: bool = False) -> dict:
        """The task type's metrics (:meth:`adaptlab.tasks.base.TaskSpec.evaluate`; classification:
        accuracy, macro-F1; generation and chat: ROUGE-L, exact match, chrF, embedding similarity and
        the task's own checks, :mod:`adaptlab.evaluation.text_metrics`). Every task:
        examples/s and the mean prompt tokens per request (virtual tokens included). ``rows``: also
        each input's output and metric (``out["rows"]``), for galleries and paired comparisons."""
        if data.task != self.task:
            raise DataError(f"{data.source}: task {data.task} but the artifact is for {self.task}")
        t0 = time.perf_counter()
        out, detail, texts = self.spec.evaluate(self, data)
        seconds = time.perf_counter() - t0
        out["examples_per_s"] = out["n"] / seconds if seconds else float("inf")
        out["prompt_tokens"] = self.prompt_tokens(texts[:64])
        if rows:
            out["rows"] = detail
        return out

    def prompt_tokens(self, texts: list[str]) -> float:
        """Mean prompt tokens per request over ``texts``: the text's and the virtual tokens."""
        if not texts:
            return 0.0
        ps = self.prompts(texts)
        return sum(self.backend.count_tokens(p) for p in ps) / len(ps) + self.contribution().n_virtual

    # -------------------------------------------------------------- persistence
    def base_identity(self) -> dict:
        return {"name": self.backend.name, "fingerprint": self.backend.fingerprint}

    def save_payload(self, folder: Path) -> dict:
        """Write the kind's own files into ``folder``; return the kind's own metadata fields."""
        raise NotImplementedError

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        payload = self.save_payload(folder)
        meta = {
            "format": 1,
            "strategy": self.strategy,
            "kind": self.kind,
            "strategy_config": dataclasses.asdict(self.config),
            "train_config": self.train_config,
            "template": dataclasses.asdict(self.template),
            "task": self.task,
            "labels": self.labels,
            "metrics": self.metrics,
            "decoding": self.decoding,
            "artifact_bytes": artifact_bytes(folder),
            "base_model": self.base_identity(),
            "versions": package_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "recipe": self.recipe,
            "lineage": self.lineage,
            **payload,
        }
        atomic_write_json(folder / ARTIFACT_FILE, meta)  # written last: its presence marks a complete folder
        return folder

    @classmethod
    def from_meta(cls, folder: Path, meta: dict, model) -> Artifact:
        raise NotImplementedError

    @staticmethod
    def load(folder: str | Path, model) -> Artifact:
        """Load an artifact folder onto ``model`` (a loaded base model, or a backend for hard prompts)."""
        folder = Path(folder)
        meta = read_artifact_meta(folder)
        try:
            spec = get_strategy(meta["strategy"])
        except (KeyError, ValueError) as e:
            raise ArtifactError(f"{folder}: {e}") from None
        art = spec.strategy_cls.artifact_cls.from_meta(folder, meta, model)
        art.recipe, art.lineage = meta.get("recipe"), meta.get("lineage")
        return art


class Strategy:
    """Base of every strategy: one ``fit`` that validates, times and measures, around ``adapt``."""

    name: ClassVar[str]
    artifact_cls: ClassVar[type[Artifact]]

    def __init__(self, config):
        self.config = config

    def adapt(
        self,
        model,
        train: TaskData,
        dev: TaskData | None,
        train_config,
        run_dir: Path | None,
        resume: bool,
        progress: bool,
    ) -> Artifact:
        raise NotImplementedError

    @classmethod
    def planned_calls(cls, config) -> int | None:
        """Model calls a fit makes regardless of the data (a search budget), for cost estimates."""
        return None

    @classmethod
    def planned_extra_work(
        cls, config, task: str, train_rows: int | None = None, dev_rows: int | None = None
    ) -> tuple[int, int]:
        """Beyond its planned calls, what a fit's scoring costs, for cost estimates: (prompt starts it
        encodes that no other scored row shares, e.g. each candidate prompt of a search once per
        scoring slice; rows it scores against every label rather than searching for the best one's,
        e.g. a bootstrap or a calibration). (0, 0) for most strategies. ``train_rows``, ``dev_rows``:
        the splits' sizes where known."""
        return 0, 0

    @classmethod
    def reads_rows_at_most(cls, config) -> int | None:
        """The most train rows a fit can depend on, whatever the train size (None: all of them).

        A strategy that reads a fixed number of rows drawn at random (few-shot's exemplars) gives the
        same distribution of quality from any train set at least that large: the compare predicts it
        flat past the sizes it was measured at, with its seed noise as the band, instead of
        extrapolating a learning curve it does not have."""
        return None

    def fit(
        self,
        model,
        train: TaskData,
        dev: TaskData | None = None,
        train_config=None,
        *,
        run_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = True,
    ) -> Artifact:
        """Adapt ``model`` (a base model, or a backend for hard prompts) to ``train``; select on ``dev``.

        ``metrics["train"]`` of the result always has ``train_seconds``, ``peak_rss_bytes``,
        ``trainable_params``, ``steps`` and ``model_calls`` (None where not counted).
        """
        from adaptlab.training.loop import PeakRSS

        if not len(train):
            raise DataError(f"{train.source}: no training examples")
        if not get_strategy(self.name).supports(train.task):
            raise DataError(
                f"{train.source}: {self.name} does not fit {train.task} data; strategies that do: "
                f"{', '.join(fitting_strategies(train.task))}"
            )
        t0 = time.perf_counter()
        with PeakRSS() as rss:
            art = self.adapt(
                model, train, dev, train_config, Path(run_dir) if run_dir is not None else None, resume, progress
            )
        tr = art.metrics.setdefault("train", {})
        tr.setdefault("train_seconds", time.perf_counter() - t0)
        tr["peak_rss_bytes"] = max(tr.get("peak_rss_bytes") or 0, rss.peak)
        for key, default in (
            ("trainable_params", 0),
            ("steps", 0),
            ("model_calls", None),
            ("examples_per_s", None),
            ("stopped_early", False),
        ):
            tr.setdefault(key, default)
        return art


def freeze(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def count_trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
