"""Full fine-tuning: every weight of a private copy of the base model is trained."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from adaptlab.evaluation.scoring import DecoderLM
from adaptlab.strategies.gradient import GradientStrategy, release


class FullModule(torch.nn.Module, DecoderLM):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def hf_model(self):
        return self.model


def private_copy(base) -> torch.nn.Module:
    release(base)  # never copy someone's injected LoRA layers along with the weights
    model = copy.deepcopy(base.model)
    object.__setattr__(model, "_adaptlab_owner", None)
    return model


class FullStrategy(GradientStrategy):
    name = "full"
    default_lr = 2e-5

    def build(self, base, train_data, template):
        model = private_copy(base)
        for p in model.parameters():
            p.requires_grad_(True)
        return FullModule(model)

    @classmethod
    def save_module(cls, module, config, base, folder: Path) -> None:
        save_model(module.model, str(folder / "model.safetensors"))  # handles the tied embedding

    @classmethod
    def load_module(cls, config, base, folder: Path):
        model = private_copy(base)
        missing, unexpected = load_model(model, str(folder / "model.safetensors"), strict=True)
        for p in model.parameters():
            p.requires_grad_(False)
        return FullModule(model)
