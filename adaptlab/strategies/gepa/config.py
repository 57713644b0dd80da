from __future__ import annotations

from dataclasses import dataclass, field

from adaptlab.strategies.prompting import PromptConfig


@dataclass
class GepaConfig(PromptConfig):
    proposer: str = field(
        default="self",
        metadata={
            "help": "The LM that reads failures and proposes instructions: an endpoint NAME (--endpoints, or "
            "--proposer NAME=URL,...), or 'self' (the model being prompted)."
        },
    )
    budget_calls: int = field(
        default=400,
        metadata={
            "help": "Most calls of the search: the prompted model's (one per example scored, calibration counts) "
            "plus the proposer's (one per proposal). Never exceeded."
        },
    )
    proposer_tokens: int = field(
        default=0,
        metadata={
            "help": "Most tokens (prompt + completion) the proposer may use (0: no limit apart from budget_calls)."
        },
    )
    proposer_max_tokens: int = field(default=256, metadata={"help": "Most tokens of one proposal."})
    minibatch: int = field(
        default=4, metadata={"help": "Train examples a proposal reflects on (and is first tried on) per iteration."}
    )
    val_examples: int = field(
        default=32, metadata={"help": "Dev examples every accepted candidate is scored on (GEPA's Pareto set)."}
    )
    k: int = field(
        default=4,
        metadata={
            "help": "Exemplars shown; they evolve too: a mutation of the exemplar component takes in examples "
            "the prompt got wrong, with their right answers (0: instructions only)."
        },
    )
    metric: str = field(
        default="auto",
        metadata={
            "help": "Classification: what a row scores: accuracy (1 if right), balanced (right rows weighted by "
            "their class's rarity in train, so answering the majority class is not a winning prompt), or "
            "auto (balanced when train is imbalanced, as the compare then ranks by macro-F1)."
        },
    )
    instruction: str | None = field(
        default=None, metadata={"help": "The seed instruction (default: the template's own; {labels} is filled in)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.proposer, str) or not self.proposer.strip():
            raise ValueError("gepa config: proposer must be an endpoint name or 'self'")
        for name in ("budget_calls", "minibatch", "val_examples", "proposer_max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"gepa config: {name}={getattr(self, name)}: must be >= 1")
        if self.proposer_tokens < 0 or self.k < 0:
            raise ValueError("gepa config: proposer_tokens and k must be >= 0")
        if self.metric not in ("auto", "accuracy", "balanced"):
            raise ValueError(f"gepa config: metric={self.metric!r}: auto, accuracy or balanced")
        if self.instruction is not None and not self.instruction.strip():
            raise ValueError("gepa config: instruction must be non-empty when given")
