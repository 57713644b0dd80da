from adaptlab.strategies.registry import register_strategy
from adaptlab.strategies.soft_prompt.config import SoftPromptConfig
from adaptlab.strategies.soft_prompt.strategy import SoftPromptStrategy

register_strategy(
    "soft_prompt",
    SoftPromptConfig,
    SoftPromptStrategy,
    "gradient",
    "learned virtual tokens prepended to the input (prompt tuning)",
    search=({"lr": 1e-1}, {"n_tokens": 8}),
    family="learned_prompt",
)
