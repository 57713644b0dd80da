from __future__ import annotations

from dataclasses import dataclass, field

from adaptlab.strategies.gradient import GradientConfig
from adaptlab.strategies.lora.config import LoraConfig
from adaptlab.strategies.soft_prompt.config import SoftPromptConfig

STAGE1 = ("lora", "full")
STAGE2 = ("soft_prompt", "few_shot")


@dataclass
class HybridConfig(GradientConfig):
    stage1: str = field(default="lora", metadata={"help": "First stage: lora or full fine-tuning."})
    r: int = field(default=8, metadata={"help": "LoRA rank of stage 1."})
    alpha: float = field(default=16.0, metadata={"help": "LoRA alpha of stage 1."})
    dropout: float = field(default=0.05, metadata={"help": "LoRA dropout of stage 1."})
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], metadata={"help": "LoRA targets of stage 1."}
    )
    n_tokens: int = field(default=20, metadata={"help": "Virtual tokens of the stage-2 soft prompt."})
    init: str = field(default="labels", metadata={"help": "Soft prompt init: labels, vocab or random."})
    prompt_lr: float = field(default=3e-2, metadata={"help": "Learning rate of the stage-2 soft prompt."})
    stage2: str = field(
        default="soft_prompt",
        metadata={
            "help": "Second stage: soft_prompt (trained on the frozen stage-1 model) or few_shot (k class-balanced "
            "train exemplars put in the fine-tuned model's prompt)."
        },
    )
    k: int = field(default=4, metadata={"help": "stage2=few_shot: exemplars in the prompt."})

    def __post_init__(self):
        super().__post_init__()
        if self.stage1 not in STAGE1:
            raise ValueError(f"hybrid config: stage1={self.stage1!r}: use one of {', '.join(STAGE1)}")
        if self.stage2 not in STAGE2:
            raise ValueError(f"hybrid config: stage2={self.stage2!r}: use one of {', '.join(STAGE2)}")
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"hybrid config: k={self.k!r}: must be a positive integer")
        if not self.prompt_lr > 0:
            raise ValueError(f"hybrid config: prompt_lr={self.prompt_lr!r}: must be > 0")
        self.lora_config()  # validates the LoRA fields
        self.prompt_config()  # validates the soft-prompt fields

    def lora_config(self) -> LoraConfig:
        return LoraConfig(
            template=self.template,
            prompt_format=self.prompt_format,
            r=self.r,
            alpha=self.alpha,
            dropout=self.dropout,
            target_modules=list(self.target_modules),
        )

    def prompt_config(self) -> SoftPromptConfig:
        return SoftPromptConfig(
            template=self.template, prompt_format=self.prompt_format, n_tokens=self.n_tokens, init=self.init
        )
