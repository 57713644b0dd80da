from __future__ import annotations

from dataclasses import dataclass

from adaptlab.strategies.prompting import PromptConfig


@dataclass
class ZeroShotConfig(PromptConfig):
    """An instruction template filled per example; nothing else is searched."""
