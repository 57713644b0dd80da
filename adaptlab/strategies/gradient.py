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

from adaptlab.data.loading import TaskData
from adaptlab.data.splits import subsample
from adaptlab.evaluation.metrics import accuracy
from adaptlab.evaluation.scoring import pad_id
from adaptlab.models.base import BaseModel
from adaptlab.prompts import PromptTemplate
from adaptlab.strategies.base import Artifact
from adaptlab.training.batching import encode
from adaptlab.training.config import TrainConfig
from adaptlab.training.loop import train

# Trained strategies need no instruction: a short frame keeps prompts (and inference cost) small.
TRAIN_TEMPLATES = {"classification": "Text: {text}\nCategory:", "generation": "Input: {text}\nOutput:"}


@dataclass
class GradientConfig:
    """Fields every gradient strategy config has."""

    template: str | None = field(default=None, metadata={
        "help": "Prompt around each input; {text} is the input (default: a short frame for the task type)."})

    def __post_init__(self):
        if self.template is not None:
            PromptTemplate("config", self.template)  # raises TemplateError on unknown placeholders

    def template_for(self, task: str, name: str) -> PromptTemplate:
        return PromptTemplate(name, self.template or TRAIN_TEMPLATES[task])


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
        template = self.config.template_for(train_data.task, self.name)
        torch.manual_seed(cfg.seed)  # the module's initialisation is part of the run's seed
        module = self.build(base, train_data, template).to(base.device)  # new parameters live with the model
        artifact = Artifact(self.name, base, module, self.config, template, train_data.task,
                            train_data.labels if train_data.task == "classification" else None, cfg.to_dict(),
                            decoding=default_decoding(base, train_data))
        result = self.train_module(module, base, train_data, dev, cfg, artifact, run_dir, resume, progress)
        artifact.metrics["train"] = result.to_dict()
        return artifact

    @staticmethod
    def train_module(module, base, train_data, dev, cfg, artifact, run_dir, resume, progress):
        items = encode(base.tokenizer, train_data, artifact.template, cfg.max_length)
        evaluate = None
        if dev is not None and len(dev):
            dev_part = subsample(dev, n=cfg.dev_limit, seed=cfg.seed) if len(dev) > cfg.dev_limit else dev
            if train_data.task == "classification":
                gold = [ex.label for ex in dev_part.examples]

                def evaluate() -> float:
                    return accuracy(gold, artifact.predict([ex.text for ex in dev_part.examples]))
            else:
                dev_items = encode(base.tokenizer, dev_part, artifact.template, cfg.max_length)

                def evaluate() -> float:  # minus the mean token NLL: cheap, and no decoding per evaluation
                    return -mean_target_nll(module, dev_items, base.tokenizer)
        pad = pad_id(base.tokenizer)
        return train(module, items, cfg, pad, evaluate, run_dir, resume, progress)


def default_decoding(base: BaseModel, data: TaskData) -> dict | None:
    """Generation: decode up to the longest train target plus a margin."""
    if data.task != "generation":
        return None
    longest = max(len(base.tokenizer(ex.label, add_special_tokens=False)["input_ids"]) for ex in data.examples)
    return {"max_new_tokens": min(256, longest + 8), "num_beams": 1}


@torch.no_grad()
def mean_target_nll(module, items, tokenizer, batch_size: int = 16) -> float:
    from adaptlab.evaluation.scoring import target_token_logprobs
    from adaptlab.training.batching import collate

    pad = pad_id(tokenizer)
    total, n = 0.0, 0
    for s in range(0, len(items), batch_size):
        b = collate(items[s:s + batch_size], pad)
        _, logp = target_token_logprobs(module, b["input_ids"], b["attention_mask"], b["target_mask"])
        total -= logp.sum().item()
        n += logp.numel()
    return total / max(1, n)


def init_words(data: TaskData) -> list[str]:
    """Text whose embeddings seed soft prompts and prefixes: label names, or a few targets."""
    return data.labels if data.task == "classification" else [ex.label for ex in data.examples[:4]]
