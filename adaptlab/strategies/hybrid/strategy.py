"""Hybrid: fine-tune (LoRA or full), freeze the result, then either train a soft prompt on top of
it (``stage2=soft_prompt``) or put k train exemplars in its prompt (``stage2=few_shot``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from adaptlab.evaluation.scoring import DecoderLM
from adaptlab.strategies.base import Artifact
from adaptlab.strategies.full.config import FullConfig
from adaptlab.strategies.full.strategy import FullStrategy
from adaptlab.strategies.gradient import GradientStrategy, init_words
from adaptlab.strategies.lora.strategy import LoraStrategy
from adaptlab.strategies.soft_prompt.strategy import SoftPromptModule, initial_prompt, load_prompt, save_prompt
from adaptlab.training.config import TrainConfig


def _inner_model(stage1):
    """The HF model the soft prompt runs through: LoRA-wrapped base (claimed) or the full copy."""
    return stage1.hf_model()


class HybridModule(torch.nn.Module, DecoderLM):
    def __init__(self, stage1: torch.nn.Module, prompt_init: torch.Tensor):
        super().__init__()
        self.stage1 = stage1
        for p in stage1.parameters():
            p.requires_grad_(False)
        if hasattr(stage1, "frozen"):
            stage1.frozen = True
        self.prompt = SoftPromptModule(lambda: _inner_model(self.stage1), prompt_init)

    @property
    def n_virtual(self) -> int:
        return self.prompt.n_virtual

    def hf_model(self):
        return self.prompt.hf_model()

    def hidden(self, input_ids, attention_mask):
        return self.prompt.hidden(input_ids, attention_mask)

    def start(self, input_ids, attention_mask):
        return self.prompt.start(input_ids, attention_mask)


class HybridStrategy(GradientStrategy):
    name = "hybrid"
    default_lr = 1e-3  # stage 1; stage 2 uses config.prompt_lr

    def _stage1(self) -> GradientStrategy:
        if self.config.stage1 == "lora":
            return LoraStrategy(self.config.lora_config())
        return FullStrategy(FullConfig(template=self.config.template))

    def fit(self, base, train_data, dev=None, train_config: TrainConfig | None = None, run_dir=None,
            resume: bool = False, progress: bool = True) -> Artifact:
        cfg = train_config or TrainConfig()
        run_dir = Path(run_dir) if run_dir is not None else None
        first = self._stage1()
        art1 = first.fit(base, train_data, dev, cfg, run_dir / "stage1" if run_dir else None, resume, progress)
        if self.config.stage2 == "few_shot":
            return self._few_shot(base, art1, train_data, dev, cfg)
        torch.manual_seed(cfg.seed + 1)
        init = initial_prompt(base.model, base.tokenizer, self.config.n_tokens, self.config.init, init_words(train_data))
        module = HybridModule(art1.module, init)
        cfg2 = dataclasses.replace(cfg, lr=self.config.prompt_lr)
        artifact = Artifact(self.name, base, module, self.config, self.config.template_for(train_data.task, self.name),
                            train_data.task, art1.labels, cfg.to_dict(), decoding=art1.decoding)
        res2 = self.train_module(module, base, train_data, dev, cfg2, artifact, run_dir / "stage2" if run_dir else None,
                                 resume, progress)
        s1 = art1.metrics["train"]
        s2 = res2.to_dict()
        artifact.metrics["train"] = {
            **s2, "train_seconds": s1["train_seconds"] + s2["train_seconds"], "steps": s1["steps"] + s2["steps"],
            "peak_rss_bytes": max(s1["peak_rss_bytes"], s2["peak_rss_bytes"]),
            "trainable_params": s1["trainable_params"] + s2["trainable_params"], "stage1": s1, "stage2": s2,
        }
        return artifact

    def _few_shot(self, base, art1: Artifact, train_data, dev, cfg) -> Artifact:
        """The fine-tuned model with k exemplars fixed in its prompt (braces escaped: they are data)."""
        from adaptlab.prompts import PromptTemplate
        from adaptlab.strategies.prompting import select_balanced, select_random

        clf = train_data.task == "classification"
        chosen = (select_balanced if clf else select_random)(train_data, self.config.k, cfg.seed)
        frame = self.config.template_for(train_data.task, self.name)
        shots = "".join(PromptTemplate(frame.name, "{text}", example_format=_example_format(frame.template))
                        .render_example(ex.text, ex.label, clf) for ex in chosen)
        template = PromptTemplate(f"{frame.name}+{len(chosen)}-shot",
                                  shots.replace("{", "{{").replace("}", "}}") + frame.template, frame.label_prefix)
        artifact = Artifact(self.name, base, art1.module, self.config, template, train_data.task, art1.labels,
                            cfg.to_dict(), decoding=art1.decoding)
        artifact.metrics["train"] = {**art1.metrics["train"], "stage1": art1.metrics["train"],
                                     "stage2": {"few_shot": len(chosen), "exemplars": [[e.text, e.label] for e in chosen]}}
        if dev is not None and len(dev) and clf:
            from adaptlab.data.splits import subsample

            part = subsample(dev, n=cfg.dev_limit, seed=cfg.seed) if len(dev) > cfg.dev_limit else dev
            artifact.metrics["train"]["stage2"]["dev_accuracy"] = artifact.evaluate(part)["accuracy"]
        return artifact

    @classmethod
    def _stage1_cls(cls, config):
        return LoraStrategy if config.stage1 == "lora" else FullStrategy

    @classmethod
    def save_module(cls, module, config, base, folder: Path) -> None:
        (folder / "stage1").mkdir(parents=True, exist_ok=True)
        inner_cfg = config.lora_config() if config.stage1 == "lora" else FullConfig(template=config.template)
        if config.stage2 == "few_shot":  # the exemplars live in the artifact's template
            cls._stage1_cls(config).save_module(module, inner_cfg, base, folder / "stage1")
            return
        cls._stage1_cls(config).save_module(module.stage1, inner_cfg, base, folder / "stage1")
        save_prompt(module.prompt, folder / "prompt", _inner_model(module.stage1), base.name)

    @classmethod
    def load_module(cls, config, base, folder: Path) -> HybridModule:
        inner_cfg = config.lora_config() if config.stage1 == "lora" else FullConfig(template=config.template)
        stage1 = cls._stage1_cls(config).load_module(inner_cfg, base, folder / "stage1")
        if config.stage2 == "few_shot":
            return stage1
        return HybridModule(stage1, load_prompt(folder / "prompt"))


def _example_format(frame: str) -> str:
    """An exemplar in the trained frame: ``Text: {text}\nCategory:`` -> ``Text: {text}\nCategory: {label}\n\n``."""
    return frame.replace("{input}", "{text}") + " {label}\n\n"
