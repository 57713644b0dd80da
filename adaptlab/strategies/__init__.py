"""Strategies, one folder each (config.py, strategy.py, __init__.py registers it)."""

from adaptlab.strategies import few_shot, full, gepa, hybrid, lora, prefix, prompt_search, soft_prompt, zero_shot  # noqa: F401  (registration)
from adaptlab.strategies.base import Artifact, ArtifactError
from adaptlab.strategies.registry import get_strategy, list_strategies, make_config, register_strategy

__all__ = ["Artifact", "ArtifactError", "get_strategy", "list_strategies", "make_config", "register_strategy"]
