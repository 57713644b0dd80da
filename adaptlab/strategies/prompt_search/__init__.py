from adaptlab.strategies.prompt_search.config import PromptSearchConfig
from adaptlab.strategies.prompt_search.strategy import PromptSearchStrategy
from adaptlab.strategies.registry import register_strategy

register_strategy(
    "prompt_search",
    PromptSearchConfig,
    PromptSearchStrategy,
    "prompt",
    "Search instructions x exemplar sets on dev under a call budget (bootstrap, successive halving)",
)
