from adaptlab.strategies.lora.config import LoraConfig
from adaptlab.strategies.lora.strategy import LoraStrategy
from adaptlab.strategies.registry import register_strategy

register_strategy(
    "lora",
    LoraConfig,
    LoraStrategy,
    "gradient",
    "LoRA adapters on attention projections (PEFT file format)",
    search=({"lr": 3e-4}, {"lr": 3e-3}, {"r": 16}),
)
