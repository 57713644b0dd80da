from adaptlab.strategies.prefix.config import PrefixConfig
from adaptlab.strategies.prefix.strategy import PrefixStrategy
from adaptlab.strategies.registry import register_strategy

register_strategy(
    "prefix",
    PrefixConfig,
    PrefixStrategy,
    "gradient",
    "learned key/value prefixes in every layer (prefix tuning / P-tuning v2)",
    search=({"lr": 3e-3}, {"n_tokens": 8}),
    family="learned_prompt",
)
