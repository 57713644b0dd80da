"""The strategy protocol and self-describing artifacts.

Every strategy does ``fit(base, train, dev) -> Artifact`` and an artifact does ``predict(texts)``
(torchtune's recipe interface, DSPy's ``compile``). A gradient strategy supplies an *adapted
module*: an ``nn.Module`` with ``hidden(input_ids, attention_mask)`` and ``project(hidden)`` whose
trainable parameters are the adaptation; the shared loop trains it and scoring reads from it.

An artifact folder holds weights (safetensors only), ``adaptlab_artifact.json`` (strategy and
training configs, template, labels, metrics, base-model fingerprint, package versions), and for
LoRA / prompt tuning the PEFT files so other tools can load them. Loading checks the fingerprint
and refuses pickled weights.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from adaptlab.data.loading import DataError, TaskData
from adaptlab.evaluation.metrics import classification_metrics
from adaptlab.evaluation.scoring import score_labels
from adaptlab.models.base import BaseModel, check_fingerprint
from adaptlab.prompts import PromptTemplate
from adaptlab.utils import atomic_write_json, package_versions

ARTIFACT_FILE = "adaptlab_artifact.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt", ".pickle")


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
    unsafe = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                    if p.suffix.lower() in PICKLE_SUFFIXES)
    if unsafe:
        raise ArtifactError(f"{folder}: refusing pickled weights ({', '.join(unsafe)}); only safetensors load")
    return meta


def artifact_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


class Artifact:
    """A fitted adaptation: predicts labels, saves itself, loads back onto the same base model."""

    def __init__(self, strategy: str, base: BaseModel, module: torch.nn.Module, config, template: PromptTemplate,
                 task: str, labels: list[str] | None, train_config: dict | None = None,
                 metrics: dict | None = None, decoding: dict | None = None):
        self.strategy = strategy
        self.base = base
        self.module = module
        self.config = config
        self.template = template
        self.task = task
        self.labels = labels
        self.train_config = train_config
        self.metrics = dict(metrics or {})
        self.decoding = decoding or {"max_new_tokens": 64, "num_beams": 1}

    # -------------------------------------------------------------- inference
    @torch.no_grad()
    def scores(self, texts: list[str], batch_size: int = 32, top1: bool = False) -> torch.Tensor:
        """(N, L) log-probabilities of each label after each text's prompt (``top1``: exact for the
        labels that can be the best, -inf for the rest; see :func:`score_labels`)."""
        if self.task != "classification":
            raise ValueError("label scores need a classification artifact")
        self.module.eval()
        prompts = [self.template.render(t, self.labels) for t in texts]
        return score_labels(self.module, self.base.tokenizer, prompts, self.template.label_texts(self.labels),
                            batch_size=batch_size, top1=top1)

    @torch.no_grad()
    def generate(self, texts: list[str], max_new_tokens: int | None = None, num_beams: int | None = None,
                 batch_size: int = 8) -> list[str]:
        from adaptlab.evaluation.generation import generate

        self.module.eval()
        prompts = [self.template.render(t) for t in texts]
        return generate(self.module, self.base.tokenizer, prompts,
                        max_new_tokens=max_new_tokens or self.decoding["max_new_tokens"],
                        num_beams=num_beams or self.decoding["num_beams"], batch_size=batch_size)

    def predict(self, texts: list[str], batch_size: int = 32) -> list[str]:
        """Labels (classification, always one of the label set) or generated text."""
        if self.task == "generation":
            return self.generate(texts)
        best = self.scores(texts, batch_size, top1=True).argmax(dim=1).tolist()
        return [self.labels[b] for b in best]

    def evaluate(self, data: TaskData, batch_size: int = 32) -> dict:
        """Classification: accuracy, macro-F1. Generation: exact match, ROUGE-L (multi-reference)."""
        if data.task != self.task:
            raise DataError(f"{data.source}: task {data.task} but the artifact is for {self.task}")
        t0 = time.perf_counter()
        if self.task == "generation":
            from adaptlab.evaluation.generation import generation_metrics, references_by_input

            inputs, refs = references_by_input(data.examples)
            out = generation_metrics(self.generate(inputs), refs)
        else:
            pred = self.predict([ex.text for ex in data.examples], batch_size)
            out = classification_metrics([ex.label for ex in data.examples], pred, self.labels)
        seconds = time.perf_counter() - t0
        out["examples_per_s"] = out["n"] / seconds if seconds else float("inf")
        return out

    # -------------------------------------------------------------- persistence
    def save(self, folder: str | Path) -> Path:
        from adaptlab.strategies.registry import get_strategy

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        spec = get_strategy(self.strategy)
        spec.strategy_cls.save_module(self.module, self.config, self.base, folder)
        weights_bytes = artifact_bytes(folder)
        meta = {
            "format": 1,
            "strategy": self.strategy,
            "kind": spec.kind,
            "strategy_config": dataclasses.asdict(self.config),
            "train_config": self.train_config,
            "template": dataclasses.asdict(self.template),
            "task": self.task,
            "labels": self.labels,
            "metrics": self.metrics,
            "decoding": self.decoding,
            "artifact_bytes": weights_bytes,
            "base_model": {"name": self.base.name, "fingerprint": self.base.fingerprint},
            "versions": package_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_json(folder / ARTIFACT_FILE, meta)  # written last: its presence marks a complete folder
        return folder

    @classmethod
    def load(cls, folder: str | Path, base: BaseModel) -> "Artifact":
        from adaptlab.strategies.registry import get_strategy, make_config

        folder = Path(folder)
        meta = read_artifact_meta(folder)
        if meta.get("kind") == "prompt":  # a hard prompt: JSON only, runs on any backend with this fingerprint
            from adaptlab.strategies.prompting import PromptArtifact

            return PromptArtifact.from_meta(folder, meta, base)
        check_fingerprint(meta["base_model"]["fingerprint"], base.fingerprint, f"artifact {folder}")
        spec = get_strategy(meta["strategy"])
        config = make_config(meta["strategy"], **meta["strategy_config"])
        module = spec.strategy_cls.load_module(config, base, folder).to(base.device).eval()  # no dropout at use
        return cls(meta["strategy"], base, module, config, PromptTemplate(**meta["template"]), meta["task"],
                   meta["labels"], meta.get("train_config"), meta.get("metrics"), meta.get("decoding"))


def freeze(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def count_trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
