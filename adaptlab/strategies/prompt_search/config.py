from __future__ import annotations

from dataclasses import dataclass, field

from adaptlab.strategies.prompting import PromptConfig


@dataclass
class PromptSearchConfig(PromptConfig):
    budget_calls: int = field(
        default=1500,
        metadata={
            "help": "Most model calls the search may make (one per prompt scored; calibration and bootstrap count)."
        },
    )
    instructions: list[str] = field(
        default_factory=list, metadata={"help": "Extra instruction candidates ({labels} is filled in)."}
    )
    instructions_file: str | None = field(
        default=None, metadata={"help": "A text file with one instruction candidate per line."}
    )
    builtin_instructions: bool = field(default=True, metadata={"help": "Also search the built-in paraphrases."})
    k: int = field(default=4, metadata={"help": "Exemplars per candidate exemplar set (0: zero-shot only)."})
    exemplar_sets: int = field(default=3, metadata={"help": "Random class-balanced exemplar sets to try."})
    zero_shot_candidate: bool = field(default=True, metadata={"help": "Also try each instruction with no exemplars."})
    bootstrap: int = field(
        default=64,
        metadata={
            "help": "Train examples scored to bootstrap an exemplar set from those the model gets right with "
            "confidence (DSPy BootstrapFewShot); 0: off."
        },
    )
    first_round: int = field(
        default=16,
        metadata={"help": "Dev examples per candidate in the first successive-halving round (doubles each round)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.budget_calls < 1:
            raise ValueError(f"prompt_search config: budget_calls={self.budget_calls}: must be >= 1")
        if self.k < 0 or self.exemplar_sets < 0 or self.bootstrap < 0:
            raise ValueError("prompt_search config: k, exemplar_sets and bootstrap must be >= 0")
        if self.first_round < 1:
            raise ValueError(f"prompt_search config: first_round={self.first_round}: must be >= 1")
        if not self.builtin_instructions and not self.instructions and not self.instructions_file:
            raise ValueError(
                "prompt_search config: no instruction candidates (builtin_instructions is off "
                "and no instructions were given)"
            )
        if any(not isinstance(i, str) or not i.strip() for i in self.instructions):
            raise ValueError("prompt_search config: instructions must be non-empty strings")
