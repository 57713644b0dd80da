from adaptlab.strategies.gepa.config import GepaConfig
from adaptlab.strategies.gepa.strategy import GepaStrategy
from adaptlab.strategies.registry import register_strategy

register_strategy(
    "gepa",
    GepaConfig,
    GepaStrategy,
    "prompt",
    "An LM proposes and evolves instructions and exemplars from failures (GEPA), under a call budget",
    by_default=False,
)
