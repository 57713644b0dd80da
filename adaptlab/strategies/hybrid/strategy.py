"""Hybrid: fine-tune (LoRA or full), freeze the result, then either train a soft prompt on top of
it (``stage2=soft_prompt``) or put k train exemplars in its prompt (``stage2=few_shot``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from adaptlab.data.splits import dev_part
from adaptlab.models.adaptation import AdapterModule, Contribution
from adaptlab.prompts import PromptTemplate
from adaptlab.strategies.full.config import FullConfig
from adaptlab.strategies.full.strategy import FullStrategy
from adaptlab.strategies.gradient import GradientStrategy, WeightsArtifact, base_of, init_words
from adaptlab.strategies.lora.strategy import LoraStrategy
from adaptlab.strategies.prompting import select_balanced, select_random
from adaptlab.strategies.soft_prompt.strategy import initial_prompt, load_prompt, save_prompt
from adaptlab.training.config import TrainConfig


class HybridModule(AdapterModule):
    """A frozen stage-1 adaptation (LoRA or full) with a trained soft prompt in front of it."""

    def __init__(self, stage1: AdapterModule, prompt_init: torch.Tensor):
        super().__init__(stage1.base_model)
        self.stage1 = stage1
        for p in stage1.parameters():
            p.requires_grad_(False)
        self.prompt = torch.nn.Parameter(prompt_init.clone())  # (P, H)

    def train(self, mode: bool = True):
        super().train(mode)
        self.stage1.eval()  # frozen: no dropout in it while the prompt trains
        return self

    def contribution(self) -> Contribution:
        return dataclasses.replace(self.stage1.contribution(), soft=self.prompt)


class HybridStrategy(GradientStrategy):
    name = "hybrid"
    default_lr = 1e-3  # stage 1; stage 2 uses config.prompt_lr

    def _stage1(self) -> GradientStrategy:
        return self._stage1_cls(self.config)(self._stage1_config(self.config))

    @staticmethod
    def _stage1_cls(config):
        return LoraStrategy if config.stage1 == "lora" else FullStrategy

    @staticmethod
    def _stage1_config(config):
        return (
            config.lora_config()
            if config.stage1 == "lora"
            else FullConfig(template=config.template, prompt_format=config.prompt_format)
        )

    def adapt(self, model, train_data, dev, train_config, run_dir, resume, progress) -> WeightsArtifact:
        base = base_of(model, self.name)
        cfg = train_config or TrainConfig()
        art1 = self._stage1().fit(
            base,
            train_data,
            dev,
            cfg,
            run_dir=run_dir / "stage1" if run_dir else None,
            resume=resume,
            progress=progress,
        )
        if self.config.stage2 == "few_shot":
            return self._few_shot(base, art1, train_data, dev, cfg)
        torch.manual_seed(cfg.seed + 1)
        init = initial_prompt(
            base.model, base.tokenizer, self.config.n_tokens, self.config.init, init_words(train_data)
        )
        module = HybridModule(art1.module, init.to(base.device))
        artifact = WeightsArtifact(
            self.name,
            base,
            module,
            self.config,
            dataclasses.replace(art1.template, name=self.name),
            train_data.task,
            art1.labels,
            cfg.to_dict(),
            decoding=art1.decoding,
        )
        res2 = self.train_module(
            artifact,
            train_data,
            dev,
            dataclasses.replace(cfg, lr=self.config.prompt_lr),
            run_dir / "stage2" if run_dir else None,
            resume,
            progress,
        )
        s1, s2 = art1.metrics["train"], res2.to_dict()
        artifact.metrics["train"] = {
            **s2,
            "train_seconds": s1["train_seconds"] + s2["train_seconds"],
            "steps": s1["steps"] + s2["steps"],
            "peak_rss_bytes": max(s1["peak_rss_bytes"], s2["peak_rss_bytes"]),
            "trainable_params": s1["trainable_params"] + s2["trainable_params"],
            "stage1": s1,
            "stage2": s2,
        }
        return artifact

    def _few_shot(self, base, art1: WeightsArtifact, train_data, dev, cfg) -> WeightsArtifact:
        """The fine-tuned model with k exemplars fixed in its prompt (braces escaped: they are data)."""
        clf = train_data.spec.closed_labels
        chosen = (select_balanced if clf else select_random)(train_data, self.config.k, cfg.seed)
        frame = dataclasses.replace(
            art1.template, name=self.name
        )  # stage 1's frame, in a chat turn where stage 1 trained in one
        shots = "".join(
            PromptTemplate(frame.name, "{text}", example_format=_example_format(frame.template)).render_example(
                ex.text, ex.label, clf
            )
            for ex in chosen
        )
        template = dataclasses.replace(
            frame,
            name=f"{frame.name}+{len(chosen)}-shot",
            template=shots.replace("{", "{{").replace("}", "}}") + frame.template,
        )
        artifact = WeightsArtifact(
            self.name,
            base,
            art1.module,
            self.config,
            template,
            train_data.task,
            art1.labels,
            cfg.to_dict(),
            decoding=art1.decoding,
        )
        artifact.metrics["train"] = {
            **art1.metrics["train"],
            "stage1": art1.metrics["train"],
            "stage2": {"few_shot": len(chosen), "exemplars": [[e.text, e.label] for e in chosen]},
        }
        part = dev_part(dev, cfg.dev_limit, cfg.seed)
        if part is not None and clf:
            artifact.metrics["train"]["stage2"]["dev_accuracy"] = artifact.evaluate(part)["accuracy"]
        return artifact

    @classmethod
    def save_module(cls, module, config, base, folder: Path) -> dict | None:
        stage1 = module if config.stage2 == "few_shot" else module.stage1  # few-shot exemplars live in the template
        inner = cls._stage1_cls(config).save_module(stage1, cls._stage1_config(config), base, folder / "stage1")
        if config.stage2 == "soft_prompt":
            save_prompt(module.prompt, folder / "prompt", base.model, base.name)
        if inner is None:
            return None
        return {"dir": "stage1", "drops": "the stage-2 soft prompt" if config.stage2 == "soft_prompt" else None}

    @classmethod
    def load_module(cls, config, base, folder: Path) -> AdapterModule:
        stage1 = cls._stage1_cls(config).load_module(cls._stage1_config(config), base, folder / "stage1")
        if config.stage2 == "few_shot":
            return stage1
        return HybridModule(stage1, load_prompt(folder / "prompt"))


def _example_format(frame: str) -> str:
    """An exemplar in the trained frame: ``Text: {text}\nCategory:`` -> ``Text: {text}\nCategory: {label}\n\n``."""
    return frame.replace("{input}", "{text}") + " {label}\n\n"
