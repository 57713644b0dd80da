"""What the hard-prompt strategies share: config fields, exemplar selection, calibration, and the
prompt artifact.

Hard-prompt strategies fit by *search*, not gradients (DSPy's ``compile``): ``fit(backend,
train, dev)`` returns a :class:`PromptArtifact`, a JSON file with the template, exemplars,
calibration vector, backend fingerprint and metrics. No weight of the model changes, so the
same strategies run on an API-only model through :class:`adaptlab.backends.OpenAIBackend`.

Contextual calibration (Zhao et al. 2021, "Calibrate Before Use"): the label distribution the
prompt gives to content-free inputs ("N/A", "", "[MASK]") measures the prompt's own bias;
dividing by it (``W = diag(p_cf)^-1``, ``b = 0``) removes it. In log space:
``calibrated = log_softmax(scores) - log p_cf``.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from adaptlab.backends.base import Backend, BackendError, as_backend
from adaptlab.data.loading import DataError, Example, TaskData
from adaptlab.data.splits import subsample
from adaptlab.evaluation.metrics import classification_metrics
from adaptlab.models.base import check_fingerprint
from adaptlab.prompts import DEFAULT_TEMPLATE, PromptTemplate, load_template
from adaptlab.utils import atomic_write_json, package_versions

CONTENT_FREE = ["N/A", "", "[MASK]"]


@dataclass
class PromptConfig:
    """Fields every hard-prompt strategy config has."""

    template: str | None = field(default=None, metadata={
        "help": "Built-in template name, a template file (.json/.txt), or an inline string with {text} "
                "(default: the task type's default built-in)."})
    calibrate: bool = field(default=False, metadata={
        "help": "Contextual calibration of label scores with content-free inputs (classification)."})
    content_free: list[str] = field(default_factory=lambda: list(CONTENT_FREE), metadata={
        "help": "Content-free inputs for calibration."})
    dev_limit: int = field(default=200, metadata={"help": "Dev examples scored for the artifact's metrics (0: none)."})
    seed: int = field(default=0, metadata={"help": "Seed for exemplar sampling and order."})

    def __post_init__(self):
        if self.calibrate and not self.content_free:
            raise ValueError("prompt config: calibrate=True needs at least one content_free input")
        if self.dev_limit < 0:
            raise ValueError(f"prompt config: dev_limit={self.dev_limit}: must be >= 0")
        if self.template is not None and not isinstance(self.template, str):
            raise ValueError("prompt config: template must be a string")

    def template_for(self, task: str) -> PromptTemplate:
        return load_template(self.template or DEFAULT_TEMPLATE[task], task)


# ---------------------------------------------------------------------- exemplar selection
def select_random(train: TaskData, k: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    return rng.sample(train.examples, min(k, len(train.examples)))


def select_balanced(train: TaskData, k: int, seed: int) -> list[Example]:
    """Round-robin over classes (class order and members shuffled by seed), then shuffled."""
    rng = random.Random(seed)
    by_class: dict[str, list[Example]] = {}
    for ex in train.examples:
        by_class.setdefault(ex.label, []).append(ex)
    classes = sorted(by_class)
    rng.shuffle(classes)
    for c in classes:
        rng.shuffle(by_class[c])
    out: list[Example] = []
    depth = 0
    while len(out) < min(k, len(train.examples)):
        for c in classes:
            if depth < len(by_class[c]) and len(out) < k:
                out.append(by_class[c][depth])
        depth += 1
    rng.shuffle(out)
    return out


def pairs(examples: list[Example]) -> list[tuple[str, str]]:
    return [(ex.text, ex.label) for ex in examples]


# ---------------------------------------------------------------------- the artifact
class PromptArtifact:
    """A hard prompt: template + exemplars (fixed, or nearest neighbours from a pool) + calibration.

    ``exemplars`` are shown in every prompt; an exemplar whose input equals the evaluated input is
    swapped for one from ``reserve``, so an example is never its own exemplar. With
    ``selection == "nearest"`` each input gets the ``k`` most similar ``pool`` items instead.
    """

    def __init__(self, strategy: str, backend: Backend, config, template: PromptTemplate, task: str,
                 labels: list[str] | None, exemplars: list[tuple[str, str]] | None = None,
                 reserve: list[tuple[str, str]] | None = None, selection: str = "fixed", k: int = 0,
                 pool: list[tuple[str, str]] | None = None, pool_embeddings: torch.Tensor | None = None,
                 calibration: list[float] | None = None, metrics: dict | None = None, trace: list | None = None,
                 decoding: dict | None = None, fallback_label: str | None = None):
        self.strategy = strategy
        self.backend = backend
        self.config = config
        self.template = template
        self.task = task
        self.labels = labels
        self.exemplars = list(exemplars or [])
        self.reserve = list(reserve or [])
        self.selection = selection
        self.k = k
        self.pool = list(pool or [])
        self.pool_embeddings = pool_embeddings
        self.calibration = calibration
        self.metrics = dict(metrics or {})
        self.trace = list(trace or [])
        self.decoding = decoding or {"max_new_tokens": 64, "num_beams": 1}
        self.fallback_label = fallback_label or (labels[0] if labels else None)
        self.last_unparsed = 0

    @property
    def base(self):  # the loaded base model when local (for callers that share it)
        return getattr(self.backend, "base", None)

    # -------------------------------------------------------------- prompts
    def exemplars_for(self, texts: list[str]) -> list[list[tuple[str, str]]]:
        if self.selection == "nearest":
            if not self.pool:
                return [[] for _ in texts]
            q = self.backend.embed(texts)                                  # (N, D)
            sims = q @ self.pool_embeddings.T                              # (N, P)
            out = []
            for i, t in enumerate(texts):
                order = sims[i].argsort(descending=True).tolist()
                chosen = [self.pool[j] for j in order if self.pool[j][0] != t][:self.k]
                out.append(chosen[::-1])  # most similar last, next to the query
            return out
        out = []
        for t in texts:
            shown = list(self.exemplars)
            if any(x == t for x, _ in shown):
                spare = [r for r in self.reserve if r[0] != t and r not in shown]
                shown = [ex if ex[0] != t else (spare.pop(0) if spare else None) for ex in shown]
                shown = [ex for ex in shown if ex is not None]
            out.append(shown)
        return out

    def prompts(self, texts: list[str]) -> list[str]:
        labels = self.labels if self.task == "classification" else None
        return [self.template.render(t, labels, ex) for t, ex in zip(texts, self.exemplars_for(texts))]

    # -------------------------------------------------------------- inference
    def raw_scores(self, texts: list[str]) -> torch.Tensor:
        """(N, L) label log-probabilities from the backend, before calibration."""
        if self.task != "classification":
            raise ValueError("label scores need a classification artifact")
        return self.backend.score(self.prompts(texts), self.template.label_texts(self.labels))

    def calibrate(self, raw: torch.Tensor) -> torch.Tensor:
        if self.calibration is None:
            return raw
        p_cf = torch.tensor(self.calibration, dtype=raw.dtype)
        return torch.log_softmax(raw, dim=-1) - torch.log(p_cf)

    def scores(self, texts: list[str]) -> torch.Tensor:
        return self.calibrate(self.raw_scores(texts))

    def fit_calibration(self, content_free: list[str]) -> list[float]:
        """Mean label distribution over content-free inputs under this prompt: p_cf (L,)."""
        raw = self.raw_scores(content_free)
        p = torch.softmax(raw.double(), dim=-1).mean(0)
        self.calibration = [float(v) for v in p.clamp_min(1e-12)]
        return self.calibration

    def predict(self, texts: list[str]) -> list[str]:
        """Labels (always from the label set) or generated text."""
        if self.task == "generation":
            return self.backend.generate(self.prompts(texts), max_new_tokens=self.decoding["max_new_tokens"],
                                         num_beams=self.decoding["num_beams"])
        if self.backend.supports_scores:
            if self.calibration is None:  # the argmax alone: the backend may skip labels that cannot win
                best = self.backend.best(self.prompts(texts), self.template.label_texts(self.labels))
            else:
                best = self.scores(texts).argmax(dim=1).tolist()
            self.last_unparsed = 0
            return [self.labels[b] for b in best]
        idx = self.backend.choose(self.prompts(texts), self.labels)
        self.last_unparsed = sum(i < 0 for i in idx)
        return [self.labels[i] if i >= 0 else self.fallback_label for i in idx]

    def evaluate(self, data: TaskData) -> dict:
        if data.task != self.task:
            raise DataError(f"{data.source}: task {data.task} but the artifact is for {self.task}")
        t0 = time.perf_counter()
        texts = [ex.text for ex in data.examples]
        if self.task == "generation":
            from adaptlab.evaluation.generation import generation_metrics, references_by_input

            inputs, refs = references_by_input(data.examples)
            out = generation_metrics(self.predict(inputs), refs)
            texts = inputs
        else:
            pred = self.predict(texts)
            out = classification_metrics([ex.label for ex in data.examples], pred, self.labels)
            out["unparsed"] = self.last_unparsed
        seconds = time.perf_counter() - t0
        out["examples_per_s"] = out["n"] / seconds if seconds else float("inf")
        out["prompt_tokens"] = self.prompt_tokens(texts[:64])
        return out

    def prompt_tokens(self, texts: list[str]) -> float:
        """Mean prompt tokens per request (the recurring cost of exemplars), over ``texts``."""
        if not texts:
            return 0.0
        ps = self.prompts(texts)
        return sum(self.backend.count_tokens(p) for p in ps) / len(ps)

    # -------------------------------------------------------------- persistence
    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        from adaptlab.strategies.base import ARTIFACT_FILE
        from adaptlab.strategies.registry import get_strategy

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.selection == "nearest" and self.pool_embeddings is not None:
            save_file({"pool_embeddings": self.pool_embeddings.contiguous()}, str(folder / "pool_embeddings.safetensors"))
        meta = {
            "format": 1,
            "strategy": self.strategy,
            "kind": get_strategy(self.strategy).kind,
            "strategy_config": dataclasses.asdict(self.config),
            "template": dataclasses.asdict(self.template),
            "task": self.task,
            "labels": self.labels,
            "prompt": {"selection": self.selection, "k": self.k, "exemplars": self.exemplars,
                       "reserve": self.reserve, "pool": self.pool, "calibration": self.calibration,
                       "fallback_label": self.fallback_label},
            "metrics": self.metrics,
            "trace": self.trace,
            "decoding": self.decoding,
            "base_model": {"name": self.backend.name, "fingerprint": self.backend.fingerprint},
            "versions": package_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_json(folder / ARTIFACT_FILE, meta)
        return folder

    @classmethod
    def from_meta(cls, folder: Path, meta: dict, backend) -> "PromptArtifact":
        from safetensors.torch import load_file

        from adaptlab.strategies.base import ArtifactError
        from adaptlab.strategies.registry import make_config

        backend = as_backend(backend)
        check_fingerprint(meta["base_model"]["fingerprint"], backend.fingerprint, f"artifact {folder}")
        try:
            p = meta["prompt"]
            config = make_config(meta["strategy"], **meta["strategy_config"])
            emb = None
            if p["selection"] == "nearest":
                emb_path = folder / "pool_embeddings.safetensors"
                if not emb_path.exists():
                    raise ArtifactError(f"{folder}: nearest-neighbour prompt without pool_embeddings.safetensors")
                emb = load_file(str(emb_path))["pool_embeddings"]
            return cls(meta["strategy"], backend, config, PromptTemplate(**meta["template"]), meta["task"],
                       meta["labels"], [tuple(e) for e in p["exemplars"]], [tuple(e) for e in p["reserve"]],
                       p["selection"], p["k"], [tuple(e) for e in p["pool"]], emb, p["calibration"],
                       meta.get("metrics"), meta.get("trace"), meta.get("decoding"), p.get("fallback_label"))
        except (KeyError, TypeError) as e:
            raise ArtifactError(f"{folder}: malformed prompt artifact: {e}") from None


# ---------------------------------------------------------------------- shared fit steps
def check_task_data(train: TaskData, config) -> None:
    if not len(train):
        raise DataError(f"{train.source}: no training examples")
    if config.calibrate and train.task != "classification":
        raise ValueError("calibrate=True applies to classification tasks only")


def majority_label(train: TaskData) -> str | None:
    if train.task != "classification":
        return None
    counts: dict[str, int] = {}
    for ex in train.examples:
        counts[ex.label] = counts.get(ex.label, 0) + 1
    return max(train.labels, key=lambda lab: counts.get(lab, 0))


def decoding_for(train: TaskData) -> dict | None:
    if train.task != "generation":
        return None
    longest = max(len(ex.label.split()) for ex in train.examples)
    return {"max_new_tokens": min(256, int(longest * 2) + 8), "num_beams": 1}


def finish(artifact: PromptArtifact, dev: TaskData | None, config) -> PromptArtifact:
    """Calibrate (when asked) and record dev metrics on up to ``dev_limit`` examples."""
    if config.calibrate:
        if not artifact.backend.supports_scores:
            raise BackendError(f"{artifact.backend.name}: calibration needs label log-probabilities, "
                               "which this endpoint does not return")
        artifact.fit_calibration(list(config.content_free))
    if dev is not None and len(dev) and config.dev_limit:
        part = subsample(dev, n=config.dev_limit, seed=config.seed) if len(dev) > config.dev_limit else dev
        artifact.metrics["dev"] = artifact.evaluate(part)
    return artifact


def load_prompt_artifact(folder: Path, backend) -> PromptArtifact:
    meta = json.loads((Path(folder) / "adaptlab_artifact.json").read_text())
    return PromptArtifact.from_meta(Path(folder), meta, backend)
