"""What every gradient strategy shares: fit through the one loop, exclusive use of the base model.

LoRA injects layers into the shared base model in place (that is how PEFT works and it avoids a
1 GB copy per run). So that two adaptations never act at once, the base model has one *owner*:
a module claims the base before each forward pass, and a LoRA module that loses it takes its
layers out (``unload``) and puts them back when it is used again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from adaptlab.data.loading import DataError, TaskData
from adaptlab.data.splits import subsample
from adaptlab.evaluation.metrics import accuracy
from adaptlab.models.base import BaseModel
from adaptlab.prompts import PromptTemplate
from adaptlab.strategies.base import Artifact
from adaptlab.training.batching import encode
from adaptlab.training.config import TrainConfig
from adaptlab.training.loop import train

TRAIN_TEMPLATE = "Text: {text}\nCategory:"


@dataclass
class GradientConfig:
    """Fields every gradient strategy config has."""

    template: str = field(default=TRAIN_TEMPLATE, metadata={"help": "Prompt around each input; {text} is the input."})

    def __post_init__(self):
        PromptTemplate("config", self.template)  # raises TemplateError on unknown placeholders


def claim(base: BaseModel, owner) -> None:
    """Make ``owner`` the only adaptation acting on ``base.model``; None releases it."""
    current = getattr(base.model, "_adaptlab_owner", None)
    if current is owner:
        return
    if current is not None and hasattr(current, "detach_from_base"):
        current.detach_from_base()
    object.__setattr__(base.model, "_adaptlab_owner", owner)
    if owner is not None and hasattr(owner, "attach_to_base"):
        owner.attach_to_base()


def release(base: BaseModel) -> None:
    claim(base, None)


class GradientStrategy:
    """Base of the gradient strategies: subclasses build, save and load their module."""

    name: ClassVar[str]
    default_lr: ClassVar[float]

    def __init__(self, config):
        self.config = config

    # Subclasses implement these three.
    def build(self, base: BaseModel, train_data: TaskData, template: PromptTemplate) -> torch.nn.Module:
        raise NotImplementedError

    @classmethod
    def save_module(cls, module, config, base: BaseModel, folder: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load_module(cls, config, base: BaseModel, folder: Path) -> torch.nn.Module:
        raise NotImplementedError

    def fit(self, base: BaseModel, train_data: TaskData, dev: TaskData | None = None,
            train_config: TrainConfig | None = None, run_dir: str | Path | None = None,
            resume: bool = False, progress: bool = True) -> Artifact:
        cfg = train_config or TrainConfig()
        if cfg.lr is None:
            cfg = dataclasses.replace(cfg, lr=self.default_lr)
        if train_data.task != "classification":
            raise DataError(f"{train_data.source}: gradient strategies train classification tasks so far; "
                            "generation decoding is not built yet")
        template = PromptTemplate(self.name, self.config.template)
        torch.manual_seed(cfg.seed)  # the module's initialisation is part of the run's seed
        module = self.build(base, train_data, template)
        artifact = Artifact(self.name, base, module, self.config, template, train_data.task, train_data.labels,
                            cfg.to_dict())
        result = self.train_module(module, base, train_data, dev, cfg, artifact, run_dir, resume, progress)
        artifact.metrics["train"] = result.to_dict()
        return artifact

    @staticmethod
    def train_module(module, base, train_data, dev, cfg, artifact, run_dir, resume, progress):
        items = encode(base.tokenizer, train_data, artifact.template, cfg.max_length)
        evaluate = None
        if dev is not None and len(dev):
            dev_part = subsample(dev, n=cfg.dev_limit, seed=cfg.seed) if len(dev) > cfg.dev_limit else dev
            gold = [ex.label for ex in dev_part.examples]

            def evaluate() -> float:
                return accuracy(gold, artifact.predict([ex.text for ex in dev_part.examples]))
        pad = base.tokenizer.pad_token_id if base.tokenizer.pad_token_id is not None else 0
        return train(module, items, cfg, pad, evaluate, run_dir, resume, progress)
