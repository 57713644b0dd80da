from adaptlab.strategies.registry import register_strategy
from adaptlab.strategies.zero_shot.config import ZeroShotConfig
from adaptlab.strategies.zero_shot.strategy import ZeroShotStrategy

register_strategy(
    "zero_shot",
    ZeroShotConfig,
    ZeroShotStrategy,
    "prompt",
    "Instruction template, no exemplars (built-in or user templates)",
    uses_train_data=False,
    exemplars=False,
)
