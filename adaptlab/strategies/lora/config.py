from __future__ import annotations

from dataclasses import dataclass, field

from adaptlab.strategies.gradient import GradientConfig

# Projection names of Gemma / LLaMA-style decoders that LoRA can target.
KNOWN_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraConfig(GradientConfig):
    r: int = field(default=8, metadata={"help": "LoRA rank."})
    alpha: float = field(default=16.0, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata={"help": f"Modules to adapt, from {', '.join(KNOWN_TARGETS)}."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"lora config: r={self.r!r}: rank must be a positive integer")
        if self.alpha <= 0:
            raise ValueError(f"lora config: alpha={self.alpha!r}: must be > 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora config: dropout={self.dropout!r}: must be in [0, 1)")
        if not self.target_modules:
            raise ValueError("lora config: target_modules is empty")
        unknown = [t for t in self.target_modules if t not in KNOWN_TARGETS]
        if unknown:
            raise ValueError(
                f"lora config: unknown target module(s) {', '.join(unknown)}; known: {', '.join(KNOWN_TARGETS)}"
            )
