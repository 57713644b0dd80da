from adaptlab.strategies.hybrid.config import HybridConfig
from adaptlab.strategies.hybrid.strategy import HybridStrategy
from adaptlab.strategies.registry import register_strategy

register_strategy(
    "hybrid",
    HybridConfig,
    HybridStrategy,
    "gradient",
    "fine-tune (LoRA or full), then a soft prompt on the frozen result",
    stacks=True,
)
