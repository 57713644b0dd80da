"""What every gradient strategy shares: its config fields, fitting through the one loop, and the
artifact of trained parameters.

A gradient strategy builds an :class:`~adaptlab.models.adaptation.AdapterModule` (its trainable
parameters, held apart from the shared base model) and says how to save and load it. The loop
trains it; the artifact runs it on the base model through the same local backend every
strategy uses. Nothing here, or in any strategy, changes the base model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from adaptlab.backends.local import LocalBackend
from adaptlab.data.loading import TaskData
from adaptlab.data.splits import dev_part
from adaptlab.models.adaptation import Contribution
from adaptlab.models.runtime import has_chat_template, pad_id, target_token_logprobs
from adaptlab.models.types import BaseModel, check_fingerprint
from adaptlab.prompts import PROMPT_FORMAT_HELP, PromptTemplate, check_prompt_format, use_chat_turn
from adaptlab.strategies.base import Artifact, ArtifactError, Strategy, default_decoding
from adaptlab.strategies.registry import get_strategy, make_config
from adaptlab.tasks.base import get_task
from adaptlab.training.batching import collate, encode
from adaptlab.training.config import TrainConfig
from adaptlab.training.loop import train


@dataclass
class GradientConfig:
    """Fields every gradient strategy config has."""

    template: str | None = field(
        default=None,
        metadata={"help": "Prompt around each input; {text} is the input (default: a short frame for the task type)."},
    )
    prompt_format: str = field(default="auto", metadata={"help": PROMPT_FORMAT_HELP})

    def __post_init__(self):
        check_prompt_format(self.prompt_format, f"{type(self).__name__}")
        if self.template is not None:
            PromptTemplate("config", self.template)  # raises TemplateError on unknown placeholders

    def template_for(self, task: str, name: str, base: BaseModel) -> PromptTemplate:
        # Trained strategies need no instruction: the task type's short frame keeps prompts (and
        # inference cost) small (TaskSpec.train_frame).
        template = PromptTemplate(name, self.template or get_task(task).train_frame)
        return use_chat_turn(template, self.prompt_format, task, has_chat_template(base.tokenizer))


def base_of(model, strategy: str) -> BaseModel:
    """The local base model behind ``model`` (a base model, or a local backend)."""
    base = model if isinstance(model, BaseModel) else getattr(model, "base", None)
    if not isinstance(base, BaseModel):
        raise TypeError(f"{strategy} trains weights: it needs a local base model, not {type(model).__name__}")
    return base


class WeightsArtifact(Artifact):
    """Trained parameters (``module``) on a base model; runs through a local backend over them."""

    kind = "gradient"

    def __init__(
        self,
        strategy: str,
        base: BaseModel,
        module: torch.nn.Module,
        config,
        template: PromptTemplate,
        task: str,
        labels: list[str] | None,
        train_config: dict | None = None,
        metrics: dict | None = None,
        decoding: dict | None = None,
    ):
        backend = LocalBackend(base, module, batch_size=32, generate_batch_size=8)
        super().__init__(strategy, backend, config, template, task, labels, metrics, decoding, train_config)
        self.base = base
        self.module = module

    def contribution(self) -> Contribution:
        return self.module.contribution()

    def base_identity(self) -> dict:
        return {"name": self.base.name, "fingerprint": self.base.fingerprint}

    def save_payload(self, folder: Path) -> dict:
        peft = get_strategy(self.strategy).strategy_cls.save_module(self.module, self.config, self.base, folder)
        return {"peft": peft}

    @classmethod
    def from_meta(cls, folder: Path, meta: dict, model) -> WeightsArtifact:
        base = base_of(model, meta.get("strategy", "this artifact"))
        check_fingerprint(meta["base_model"]["fingerprint"], base.fingerprint, f"artifact {folder}")
        try:
            config = make_config(meta["strategy"], **meta["strategy_config"])
            template = PromptTemplate(**meta["template"])
        except (KeyError, TypeError) as e:
            raise ArtifactError(f"{folder}: malformed artifact metadata: {e}") from None
        module = get_strategy(meta["strategy"]).strategy_cls.load_module(config, base, folder)
        module = module.to(base.device).eval()  # no dropout at use
        return cls(
            meta["strategy"],
            base,
            module,
            config,
            template,
            meta["task"],
            meta["labels"],
            meta.get("train_config"),
            meta.get("metrics"),
            meta.get("decoding"),
        )


class GradientStrategy(Strategy):
    """Base of the gradient strategies: subclasses build, save and load their adapter module."""

    default_lr: ClassVar[float]
    artifact_cls = WeightsArtifact

    # Subclasses implement these three.
    def build(self, base: BaseModel, train_data: TaskData, template: PromptTemplate) -> torch.nn.Module:
        raise NotImplementedError

    @classmethod
    def save_module(cls, module, config, base: BaseModel, folder: Path) -> dict | None:
        """Write the module's files; return where its PEFT adapter files are (``{"dir": ...,
        "drops": what a PEFT export leaves out or None}``), or None when it has no PEFT form."""
        raise NotImplementedError

    @classmethod
    def load_module(cls, config, base: BaseModel, folder: Path) -> torch.nn.Module:
        raise NotImplementedError

    def train_config(self, train_config: TrainConfig | None) -> TrainConfig:
        cfg = train_config or TrainConfig()
        return cfg if cfg.lr is not None else dataclasses.replace(cfg, lr=self.default_lr)

    def adapt(self, model, train_data, dev, train_config, run_dir, resume, progress) -> WeightsArtifact:
        base = base_of(model, self.name)
        cfg = self.train_config(train_config)
        template = self.config.template_for(train_data.task, self.name, base)
        torch.manual_seed(cfg.seed)  # the module's initialisation is part of the run's seed
        module = self.build(base, train_data, template).to(base.device)  # new parameters live with the model
        artifact = WeightsArtifact(
            self.name,
            base,
            module,
            self.config,
            template,
            train_data.task,
            train_data.label_set,
            cfg.to_dict(),
            decoding=default_decoding(train_data, _target_tokens(base)),
        )
        result = self.train_module(artifact, train_data, dev, cfg, run_dir, resume, progress)
        artifact.metrics["train"] = result.to_dict()
        return artifact

    @staticmethod
    def train_module(artifact: WeightsArtifact, train_data, dev, cfg: TrainConfig, run_dir, resume, progress):
        """Train ``artifact.module`` on ``train_data`` with its task type's loss, early-stopping on
        ``dev``: the task's metric where answers are scored (accuracy, preference accuracy), else minus
        the mean target-token NLL (cheap: no decoding per evaluation)."""
        base, module, spec = artifact.base, artifact.module, train_data.spec
        items = encode(base.tokenizer, train_data, artifact.template, cfg.max_length)
        part = dev_part(dev, cfg.dev_limit, cfg.seed)
        evaluate = None
        if part is not None and spec.dev_by_metric:

            def dev_metric() -> float:
                return spec.evaluate(artifact, part)[0][spec.metric]

            evaluate = dev_metric
        elif part is not None:
            dev_items = encode(base.tokenizer, part, artifact.template, cfg.max_length)

            def dev_minus_nll() -> float:
                return -mean_target_nll(module, dev_items, base.tokenizer)

            evaluate = dev_minus_nll
        return train(
            module,
            items,
            cfg,
            pad_id(base.tokenizer),
            evaluate,
            run_dir,
            resume,
            progress,
            objective=spec.objective(cfg, items),
            reference=base.model,
        )


def _target_tokens(base: BaseModel):
    return lambda text: len(base.tokenizer(text, add_special_tokens=False)["input_ids"])


@torch.no_grad()
def mean_target_nll(module, items, tokenizer, batch_size: int = 16) -> float:
    pad = pad_id(tokenizer)
    total, n = 0.0, 0
    for s in range(0, len(items), batch_size):
        b = collate(items[s : s + batch_size], pad)
        _, logp = target_token_logprobs(module, b["input_ids"], b["attention_mask"], b["target_mask"])
        total -= logp.sum().item()
        n += logp.numel()
    return total / max(1, n)


def init_words(data: TaskData) -> list[str]:
    """Text whose embeddings seed soft prompts and prefixes: label names, or a few targets."""
    return data.labels if data.spec.closed_labels else [ex.label for ex in data.examples[:4]]
