"""LoRA through PEFT: the adapter files are PEFT's own, so vLLM and others can serve them."""

from __future__ import annotations

from pathlib import Path

import torch

from adaptlab.evaluation.scoring import DecoderLM
from adaptlab.models.base import BaseModel
from adaptlab.strategies.gradient import GradientStrategy, claim


def _peft_config(cfg):
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                          target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM")


class LoraModule(torch.nn.Module, DecoderLM):
    """LoRA layers injected into the shared base model while this module owns it."""

    def __init__(self, base: BaseModel, cfg, state: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.base_ref = [base]  # a list: the base model is not a submodule of the adapter
        self.cfg = cfg
        self._state = state
        self.peft = None
        self.frozen = False  # set by the hybrid strategy once stage 1 is trained
        claim(base, self)

    def attach_to_base(self):
        from peft import get_peft_model, set_peft_model_state_dict

        base = self.base_ref[0]
        missing = [t for t in self.cfg.target_modules
                   if not any(n.endswith("." + t) for n, _ in base.model.named_modules())]
        if missing:
            raise ValueError(f"lora: target module(s) {', '.join(missing)} not found in {base.name}")
        self.peft = get_peft_model(base.model, _peft_config(self.cfg))
        if self._state is not None:
            set_peft_model_state_dict(self.peft, self._state)
            self._state = None
        if self.frozen:
            for p in self.peft.parameters():
                p.requires_grad_(False)
        self.peft.train(self.training)  # new LoRA layers start in train mode (dropout on)

    def detach_from_base(self):
        from peft.utils import get_peft_model_state_dict

        self._state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.peft).items()}
        self.peft.unload()
        self.peft = None

    @property
    def device(self) -> torch.device:
        return self.base_ref[0].device

    def _active(self):
        claim(self.base_ref[0], self)
        return self.peft

    def hf_model(self):
        return self._active()


class LoraStrategy(GradientStrategy):
    name = "lora"
    default_lr = 1e-3

    def build(self, base, train_data, template):
        return LoraModule(base, self.config)

    @classmethod
    def save_module(cls, module: LoraModule, config, base, folder: Path) -> None:
        module._active().save_pretrained(folder, safe_serialization=True)  # adapter_config.json + safetensors

    @classmethod
    def load_module(cls, config, base, folder: Path) -> LoraModule:
        from peft.utils import load_peft_weights

        state = load_peft_weights(str(folder), device="cpu")
        return LoraModule(base, config, state=state)
