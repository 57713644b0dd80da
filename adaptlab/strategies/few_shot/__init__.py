from adaptlab.strategies.few_shot.config import FewShotConfig
from adaptlab.strategies.few_shot.strategy import FewShotStrategy
from adaptlab.strategies.registry import register_strategy

register_strategy(
    "few_shot",
    FewShotConfig,
    FewShotStrategy,
    "prompt",
    "k exemplars in the prompt: random, class-balanced or nearest-neighbour",
    search=({"k": 8}, {"selection": "nearest"}),
)
