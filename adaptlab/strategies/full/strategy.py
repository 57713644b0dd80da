"""Full fine-tuning: every weight of a private copy of the base model is trained."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from adaptlab.models.adaptation import AdapterModule, Contribution
from adaptlab.strategies.gradient import GradientStrategy


class FullModule(AdapterModule):
    """Weights of its own: its contribution to a forward pass is the whole model."""

    def __init__(self, model: torch.nn.Module):
        super().__init__(None)  # runs on its own weights, never on the shared base
        self.model = model

    def contribution(self) -> Contribution:
        return Contribution(model=self.model)


def private_copy(base) -> torch.nn.Module:
    """A copy of the base weights to train or load into (the shared base is never changed)."""
    return copy.deepcopy(base.model)


class FullStrategy(GradientStrategy):
    name = "full"
    default_lr = 2e-5

    def build(self, base, train_data, template):
        model = private_copy(base)
        for p in model.parameters():
            p.requires_grad_(True)
        return FullModule(model)

    @classmethod
    def save_module(cls, module, config, base, folder: Path) -> dict | None:
        folder.mkdir(parents=True, exist_ok=True)
        save_model(module.model, str(folder / "model.safetensors"))  # handles the tied embedding
        return None  # weights, not an adapter: exported merged

    @classmethod
    def load_module(cls, config, base, folder: Path):
        model = private_copy(base)
        load_model(model, str(folder / "model.safetensors"), strict=True)
        for p in model.parameters():
            p.requires_grad_(False)
        return FullModule(model)
