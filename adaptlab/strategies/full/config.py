from __future__ import annotations

from dataclasses import dataclass

from adaptlab.strategies.gradient import GradientConfig


@dataclass
class FullConfig(GradientConfig):
    """Full fine-tuning has no structural knobs: every weight of a private copy is trained."""
