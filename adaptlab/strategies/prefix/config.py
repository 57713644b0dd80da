from __future__ import annotations

from dataclasses import dataclass, field

from adaptlab.strategies.gradient import GradientConfig


@dataclass
class PrefixConfig(GradientConfig):
    n_tokens: int = field(default=16, metadata={"help": "Prefix length (virtual key/value positions per layer)."})
    reparam: bool = field(
        default=False, metadata={"help": "Train through an MLP reparameterisation (P-tuning v2 / Li & Liang)."}
    )
    reparam_hidden: int = field(default=256, metadata={"help": "Hidden width of the reparameterisation MLP."})

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.n_tokens, int) or self.n_tokens < 1:
            raise ValueError(f"prefix config: n_tokens={self.n_tokens!r}: must be a positive integer")
        if not isinstance(self.reparam_hidden, int) or self.reparam_hidden < 1:
            raise ValueError(f"prefix config: reparam_hidden={self.reparam_hidden!r}: must be a positive integer")
