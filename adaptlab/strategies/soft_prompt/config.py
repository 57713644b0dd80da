from __future__ import annotations

from dataclasses import dataclass, field

from adaptlab.strategies.gradient import GradientConfig

INITS = ("labels", "vocab", "random")


@dataclass
class SoftPromptConfig(GradientConfig):
    n_tokens: int = field(default=20, metadata={"help": "Number of learned virtual tokens."})
    init: str = field(default="labels", metadata={"help": "labels (label-word embeddings), vocab or random."})

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.n_tokens, int) or self.n_tokens < 1:
            raise ValueError(f"soft_prompt config: n_tokens={self.n_tokens!r}: must be a positive integer")
        if self.init not in INITS:
            raise ValueError(f"soft_prompt config: init={self.init!r}: use one of {', '.join(INITS)}")
