"""How a gradient strategy is trained (one config shared by every strategy; litgpt's TrainArgs).

What is adapted lives in each strategy's own config; this is only the optimisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class TrainConfig:
    """The optimisation. A field whose metadata has ``cli`` is an option of ``adaptlab train`` as it
    is (its type, default and help from here; ``cli`` is True or the option's flags)."""

    lr: float | None = field(
        default=None, metadata={"cli": True, "help": "Peak AdamW learning rate (default: the strategy's own)."}
    )
    epochs: float = field(
        default=1.0, metadata={"cli": True, "help": "Passes over the train split (fractions allowed)."}
    )
    max_steps: int | None = field(
        default=None, metadata={"cli": True, "help": "Stop after this many optimizer steps (overrides epochs)."}
    )
    batch_size: int = field(default=8, metadata={"cli": True, "help": "Examples per micro-batch."})
    grad_accum: int = field(default=1, metadata={"cli": True, "help": "Micro-batches per optimizer step."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Fraction of steps with linear warm-up."})
    schedule: str = field(default="cosine", metadata={"help": "cosine, linear or constant after warm-up."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    max_length: int = field(default=256, metadata={"help": "Truncate prompt+target to this many tokens."})
    eval_every: int = field(default=0, metadata={"help": "Evaluate on dev every N steps (0: once per epoch)."})
    dev_limit: int = field(default=200, metadata={"help": "Dev examples used for early stopping (stratified sample)."})
    patience: int = field(
        default=0, metadata={"cli": True, "help": "Stop after N evaluations without dev improvement (0: never)."}
    )
    checkpoint_every: int = field(
        default=50, metadata={"help": "Write a resumable checkpoint every N steps (0: never)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for batch order, dropout and initialisation."})
    bucket_size: int = field(
        default=64, metadata={"help": "Examples per length bucket before batching (1: no bucketing)."}
    )
    precision: str = field(
        default="auto",
        metadata={
            "cli": True,
            "help": "auto (bf16 autocast on a GPU that supports it, else "
            "fp32), fp32, or bf16 (autocast; slow on most CPUs).",
        },
    )
    preference_loss: str = field(
        default="auto",
        metadata={
            "cli": True,
            "help": "Preference data: dpo (pairs), kto (pairs or "
            "unpaired rows), or auto (dpo when every row is a pair).",
        },
    )
    beta: float = field(
        default=0.1,
        metadata={
            "cli": True,
            "help": "Preference data: how far from the base model the loss lets "
            "the adaptation move (DPO's and KTO's beta).",
        },
    )
    fsdp: bool = field(
        default=False,
        metadata={
            "cli": ("--fsdp",),
            "help": "Under torchrun: shard full fine-tuning's weights, gradients and "
            "optimizer state over the ranks (FSDP2) instead of replicating them.",
        },
    )

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"train config: {name}={getattr(self, name)!r}: {why}")

        if self.lr is not None and not self.lr > 0:
            bad("lr", "must be > 0")
        if self.max_steps is None and not self.epochs > 0:
            bad("epochs", "must be > 0")
        if self.max_steps is not None and self.max_steps < 1:
            bad("max_steps", "must be >= 1")
        for name in ("batch_size", "grad_accum", "max_length", "dev_limit", "bucket_size"):
            if getattr(self, name) < 1:
                bad(name, "must be >= 1")
        for name in ("eval_every", "patience", "checkpoint_every"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        if not 0 <= self.warmup_ratio < 1:
            bad("warmup_ratio", "must be in [0, 1)")
        if self.schedule not in ("cosine", "linear", "constant"):
            bad("schedule", "must be cosine, linear or constant")
        if self.precision not in ("auto", "fp32", "bf16"):
            bad("precision", "must be auto, fp32 or bf16")
        if self.preference_loss not in ("auto", "dpo", "kto"):
            bad("preference_loss", "must be auto, dpo or kto")
        if not self.beta > 0:
            bad("beta", "must be > 0")
        if self.max_grad_norm < 0 or self.weight_decay < 0:
            bad("max_grad_norm" if self.max_grad_norm < 0 else "weight_decay", "must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"train config: unknown key(s) {', '.join(unknown)}")
        return cls(**d)


def autocast_for(precision: str, device) -> tuple[str, bool]:
    """(device type, bf16 autocast on?) for a training device; fp32 weights stay the master copy."""
    import torch

    kind = torch.device(device).type
    if precision == "bf16":
        return kind, True
    if precision == "auto" and kind == "cuda":
        return kind, bool(torch.cuda.is_bf16_supported())
    return kind, False
