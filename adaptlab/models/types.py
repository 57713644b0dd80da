"""What every layer may know about a base model: the loaded model, its identity, its errors.

Kept apart from loading (:mod:`adaptlab.models.base`) so that the tiny test model and the
runtime can build and check base models without importing the loader.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch


class ModelError(RuntimeError):
    """A base model cannot be loaded; the message says which and why."""


class FingerprintMismatch(ModelError):
    """An artifact or cache entry was made for a different base model."""


class ChatTemplateError(ValueError):
    """The model's chat template refused a conversation (some templates raise on a ``system`` turn
    or on roles that do not alternate); the message is the template's own."""


@dataclass
class BaseModel:
    """A causal LM, its tokenizer and the identity of the weights it came from."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    fingerprint: str
    path: Path | None = None  # cache folder or local folder the weights were read from
    meta: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def config(self):
        return self.model.config


def make_fingerprint(source_sha256: str, dtype: str) -> str:
    return hashlib.sha256(f"{source_sha256}:{dtype}".encode()).hexdigest()


def check_fingerprint(expected: str, actual: str, what: str) -> None:
    """Refuse to combine things made for different base models."""
    if expected != actual:
        raise FingerprintMismatch(
            f"{what} was made for base model {expected[:12]} but the loaded base model is {actual[:12]}; "
            "load the base model it was trained on"
        )
