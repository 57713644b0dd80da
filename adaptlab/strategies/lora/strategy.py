"""LoRA: low-rank deltas on the base model's projections, applied around each forward pass.

The deltas are parameters of :class:`LoraModule`, added to the target linears' outputs by hooks
that exist only during a forward pass (:mod:`adaptlab.models.adaptation`); the base model is
never wrapped or changed. The files are PEFT's own (``adapter_config.json`` +
``adapter_model.safetensors`` with ``base_model.model.<module>.lora_A.weight`` keys), so
``PeftModel.from_pretrained``, vLLM and others load them (tested).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from adaptlab.models.adaptation import AdapterModule, Contribution, LoraDelta
from adaptlab.models.types import BaseModel
from adaptlab.strategies.gradient import GradientStrategy

PEFT_PREFIX = "base_model.model."
WEIGHTS = "adapter_model.safetensors"


def lora_targets(model: torch.nn.Module, target_modules: list[str], where: str) -> list[str]:
    """Names of the linear layers of ``model`` whose last name part is one of ``target_modules``."""
    names = [
        n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in target_modules
    ]
    missing = [t for t in target_modules if not any(n.rsplit(".", 1)[-1] == t for n in names)]
    if missing:
        raise ValueError(f"lora: target module(s) {', '.join(missing)} not found in {where}")
    return names


def _key(name: str) -> str:
    return name.replace(".", "__")  # parameter names cannot hold dots


class LoraModule(AdapterModule):
    """A (r, in) and B (out, r) per target linear; B starts at zero, so training starts at the base."""

    def __init__(self, base_model: torch.nn.Module, cfg, targets: list[str]):
        super().__init__(base_model)
        self.cfg = cfg
        self.targets = list(targets)
        self.lora_A = torch.nn.ParameterDict()
        self.lora_B = torch.nn.ParameterDict()
        for name in self.targets:
            lin = base_model.get_submodule(name)
            a = torch.empty(cfg.r, lin.in_features)
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # PEFT's default initialisation
            self.lora_A[_key(name)] = torch.nn.Parameter(a)
            self.lora_B[_key(name)] = torch.nn.Parameter(torch.zeros(lin.out_features, cfg.r))

    @property
    def scale(self) -> float:
        return self.cfg.alpha / self.cfg.r

    def contribution(self) -> Contribution:
        p = self.cfg.dropout if self.training else 0.0
        return Contribution(
            lora={n: LoraDelta(self.lora_A[_key(n)], self.lora_B[_key(n)], self.scale, p) for n in self.targets}
        )

    def peft_state(self) -> dict[str, torch.Tensor]:
        out = {}
        for n in self.targets:
            out[f"{PEFT_PREFIX}{n}.lora_A.weight"] = self.lora_A[_key(n)].detach().contiguous()
            out[f"{PEFT_PREFIX}{n}.lora_B.weight"] = self.lora_B[_key(n)].detach().contiguous()
        return out

    @classmethod
    def from_peft_state(cls, base: BaseModel, cfg, state: dict[str, torch.Tensor], where: str) -> LoraModule:
        parts: dict[str, dict] = {}
        for key, value in state.items():
            name = key.removeprefix(PEFT_PREFIX)
            for part in ("lora_A", "lora_B"):
                if name.endswith(f".{part}.weight"):
                    parts.setdefault(name[: -len(f".{part}.weight")], {})[part] = value
        expected = lora_targets(base.model, list(cfg.target_modules), base.name)
        if sorted(parts) != sorted(expected) or any(len(p) != 2 for p in parts.values()):
            raise ValueError(f"{where}: LoRA weights do not match the config's target modules on {base.name}")
        module = cls(base.model, cfg, expected)
        with torch.no_grad():
            for n in expected:
                a, b = module.lora_A[_key(n)], module.lora_B[_key(n)]
                if parts[n]["lora_A"].shape != a.shape or parts[n]["lora_B"].shape != b.shape:
                    raise ValueError(f"{where}: LoRA weights of {n} have the wrong shape for rank {cfg.r}")
                a.copy_(parts[n]["lora_A"])
                b.copy_(parts[n]["lora_B"])
        return module


def peft_lora_config(cfg, base: BaseModel):
    from peft import LoraConfig as PeftLoraConfig

    c = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=str(base.path) if base.path is not None else base.name,
    )
    c.inference_mode = True
    return c


class LoraStrategy(GradientStrategy):
    name = "lora"
    default_lr = 1e-3

    def build(self, base, train_data, template):
        return LoraModule(
            base.model, self.config, lora_targets(base.model, list(self.config.target_modules), base.name)
        )

    @classmethod
    def save_module(cls, module: LoraModule, config, base, folder: Path) -> dict:
        folder.mkdir(parents=True, exist_ok=True)
        save_file(module.peft_state(), str(folder / WEIGHTS))
        peft_lora_config(config, base).save_pretrained(str(folder))
        return {"dir": ".", "drops": None}

    @classmethod
    def load_module(cls, config, base, folder: Path) -> LoraModule:
        return LoraModule.from_peft_state(base, config, load_file(str(folder / WEIGHTS)), str(folder))
