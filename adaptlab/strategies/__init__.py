"""Strategies, one folder each (config.py, strategy.py, __init__.py registers it)."""

from adaptlab.strategies import full, hybrid, lora, prefix, soft_prompt  # noqa: F401  (registration)
from adaptlab.strategies.base import Artifact, ArtifactError
from adaptlab.strategies.registry import get_strategy, list_strategies, make_config, register_strategy

__all__ = ["Artifact", "ArtifactError", "get_strategy", "list_strategies", "make_config", "register_strategy"]
