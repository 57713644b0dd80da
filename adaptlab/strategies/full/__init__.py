from adaptlab.strategies.full.config import FullConfig
from adaptlab.strategies.full.strategy import FullStrategy
from adaptlab.strategies.registry import register_strategy

register_strategy(
    "full",
    FullConfig,
    FullStrategy,
    "gradient",
    "full fine-tuning of every weight",
    default_epochs=1.0,
    search=({"lr": 5e-6}, {"lr": 1e-4}),
    family="weights",
    weight_grad_cost=2.0,
)
