from __future__ import annotations

from dataclasses import dataclass, field

from adaptlab.strategies.prompting import PromptConfig

SELECTIONS = ("random", "balanced", "nearest")


@dataclass
class FewShotConfig(PromptConfig):
    k: int = field(default=4, metadata={"help": "Exemplars per prompt."})
    selection: str = field(
        default="balanced",
        metadata={
            "help": "random | balanced (round-robin over classes) | nearest (most similar train inputs, "
            "by mean-pooled base-model hidden states or the endpoint's /v1/embeddings)."
        },
    )
    pool_size: int = field(default=1000, metadata={"help": "nearest: train examples kept as the exemplar pool."})

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"few_shot config: k={self.k!r}: must be a positive integer")
        if self.selection not in SELECTIONS:
            raise ValueError(f"few_shot config: selection={self.selection!r}: must be one of {', '.join(SELECTIONS)}")
        if self.pool_size < self.k:
            raise ValueError(f"few_shot config: pool_size={self.pool_size} is smaller than k={self.k}")
