"""Soft prompt tuning (Lester et al. 2021): learned virtual tokens before the input embeddings.

Hand-written rather than PEFT's PromptTuning model because PEFT's forward computes logits at
every position, virtual tokens included; here the body runs on ``[prompt; input]`` embeddings
(:class:`adaptlab.models.adaptation.AdaptedLM`) and only label positions are projected. The saved files are PEFT's format
(``adapter_config.json`` + ``adapter_model.safetensors`` with ``prompt_embeddings``), so
``PeftModel.from_pretrained`` loads them (tested).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from adaptlab.models.adaptation import AdapterModule, Contribution
from adaptlab.prompts import verbalize
from adaptlab.strategies.gradient import GradientStrategy, init_words


class SoftPromptModule(AdapterModule):
    """(P, H) virtual-token embeddings put before the input embeddings of ``model``."""

    def __init__(self, model: torch.nn.Module, init: torch.Tensor):
        super().__init__(model)
        self.prompt = torch.nn.Parameter(init.clone())  # (P, H), in the (scaled) embedding space

    def contribution(self) -> Contribution:
        return Contribution(soft=self.prompt)


def initial_prompt(model, tokenizer, n_tokens: int, init: str, labels: list[str]) -> torch.Tensor:
    emb = model.get_input_embeddings()
    vocab = emb.weight.shape[0]
    with torch.no_grad():
        if init == "labels":
            ids = [
                i for label in labels for i in tokenizer(" " + verbalize(label), add_special_tokens=False)["input_ids"]
            ]
            ids = (ids * (n_tokens // max(1, len(ids)) + 1))[:n_tokens]
        elif init == "vocab":  # a seeded sample of ordinary tokens (ids past the specials)
            ids = torch.randint(min(4, vocab - 1), min(vocab, 5000), (n_tokens,)).tolist()
        else:
            ids = None
        if ids is not None:
            return emb(torch.tensor(ids, device=emb.weight.device)).detach().float()
        ref = emb(torch.arange(min(vocab, 1000), device=emb.weight.device))
        return torch.randn(n_tokens, ref.shape[-1], device=ref.device) * ref.float().std()


def peft_prompt_config(n_tokens: int, model, base_name: str):
    from peft import PromptTuningConfig

    c = model.config
    return PromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=n_tokens,
        token_dim=c.hidden_size,
        num_transformer_submodules=1,
        num_attention_heads=c.num_attention_heads,
        num_layers=c.num_hidden_layers,
        base_model_name_or_path=base_name,
    )


def save_prompt(prompt: torch.Tensor, folder: Path, model, base_name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"prompt_embeddings": prompt.detach().contiguous()}, folder / "adapter_model.safetensors")
    cfg = peft_prompt_config(prompt.shape[0], model, base_name)
    cfg.inference_mode = True
    cfg.save_pretrained(folder)


def load_prompt(folder: Path) -> torch.Tensor:
    return load_file(folder / "adapter_model.safetensors")["prompt_embeddings"]


class SoftPromptStrategy(GradientStrategy):
    name = "soft_prompt"
    default_lr = 3e-2  # prompt embeddings need a far larger step than weights (Lester et al. use 0.3)

    def build(self, base, train_data, template):
        init = initial_prompt(
            base.model, base.tokenizer, self.config.n_tokens, self.config.init, init_words(train_data)
        )
        return SoftPromptModule(base.model, init)

    @classmethod
    def save_module(cls, module, config, base, folder: Path) -> dict:
        save_prompt(module.prompt, folder, base.model, base.name)
        return {"dir": ".", "drops": None}

    @classmethod
    def load_module(cls, config, base, folder: Path):
        return SoftPromptModule(base.model, load_prompt(folder))
