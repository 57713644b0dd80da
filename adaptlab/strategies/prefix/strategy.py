"""Prefix tuning / P-tuning v2: learned key/value prefixes in every attention layer.

The prefixes go in as a pre-filled ``DynamicCache``, so the frozen model attends to them exactly
as to earlier tokens (checked against running real tokens as the prefix). The saved tensor
uses PEFT's prefix-tuning layout, ``(P, layers * 2 * kv_heads * head_dim)`` with key and value
interleaved per layer, after the MLP when ``reparam`` is on (as PEFT saves it), so
``PeftModel.from_pretrained`` loads it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from adaptlab.models.adaptation import AdapterModule, Contribution
from adaptlab.models.arch import arch_facts
from adaptlab.models.runtime import cache_of, decoder
from adaptlab.prompts import verbalize
from adaptlab.strategies.gradient import GradientStrategy, init_words


def kv_shape(config) -> tuple[int, int, int]:
    """(layers, kv_heads, head_dim) of a decoder config."""
    return arch_facts(config).kv_shape


class PrefixModule(AdapterModule):
    """P learned key/value positions in every attention layer of ``model``."""

    def __init__(
        self,
        model: torch.nn.Module,
        flat_init: torch.Tensor | None = None,
        reparam: bool = False,
        embed_init: torch.Tensor | None = None,
        reparam_hidden: int = 256,
    ):
        super().__init__(model)
        self.layers, self.kv_heads, self.head_dim = kv_shape(model.config)
        width = self.layers * 2 * self.kv_heads * self.head_dim
        if reparam:
            self.embedding = torch.nn.Parameter(embed_init.clone())  # (P, H)
            self.mlp = torch.nn.Sequential(
                torch.nn.Linear(embed_init.shape[1], reparam_hidden),
                torch.nn.Tanh(),
                torch.nn.Linear(reparam_hidden, width),
            )
            self.flat = None
        else:
            self.flat = torch.nn.Parameter(flat_init.clone())  # (P, L*2*kv*hd)

    @property
    def n_tokens(self) -> int:
        return (self.flat if self.flat is not None else self.embedding).shape[0]

    def flat_prefix(self) -> torch.Tensor:
        return self.flat if self.flat is not None else self.mlp(self.embedding)

    def contribution(self) -> Contribution:
        P = self.n_tokens
        kv = self.flat_prefix().view(P, self.layers * 2, self.kv_heads, self.head_dim).permute(1, 2, 0, 3)
        return Contribution(prefix=kv)  # (L*2, kv, P, hd)


def cache_to_flat(cache, drop_first: int = 0) -> torch.Tensor:
    """A model's own cache for one sequence -> the flat PEFT layout (P, L*2*kv*hd)."""
    per_layer = []
    for layer in cache.layers:  # keys: (1, kv, T, hd)
        per_layer += [layer.keys[0, :, drop_first:], layer.values[0, :, drop_first:]]
    kv = torch.stack(per_layer)  # (L*2, kv, P, hd)
    return kv.permute(2, 0, 1, 3).reshape(kv.shape[2], -1).float()


@torch.no_grad()
def label_kv_init(base, n_tokens: int, labels: list[str]) -> torch.Tensor:
    """Keys/values the frozen model computes for the label words, cycled to ``n_tokens``.

    Starting from real activations rather than noise is what Li & Liang found stabilises
    prefix tuning.
    """
    tok, model = base.tokenizer, base.model
    ids = [i for label in labels for i in tok(" " + verbalize(label), add_special_tokens=False)["input_ids"]]
    ids = (ids * (n_tokens // max(1, len(ids)) + 1))[:n_tokens]
    out = decoder(model)(input_ids=torch.tensor([[tok.bos_token_id] + ids], device=base.device), use_cache=True)
    return cache_to_flat(cache_of(out), drop_first=1)


class PrefixStrategy(GradientStrategy):
    name = "prefix"
    default_lr = 1e-2

    def build(self, base, train_data, template):
        cfg = self.config
        if cfg.reparam:
            emb = base.model.get_input_embeddings()
            ids = torch.randint(4, min(emb.weight.shape[0], 5000), (cfg.n_tokens,), device=base.device)
            with torch.no_grad():
                init = emb(ids).float()
            return PrefixModule(base.model, reparam=True, embed_init=init, reparam_hidden=cfg.reparam_hidden)
        return PrefixModule(base.model, flat_init=label_kv_init(base, cfg.n_tokens, init_words(train_data)))

    @classmethod
    def save_module(cls, module: PrefixModule, config, base, folder: Path) -> dict:
        from peft import PrefixTuningConfig

        with torch.no_grad():
            flat = module.flat_prefix().detach().contiguous()
        save_file({"prompt_embeddings": flat}, folder / "adapter_model.safetensors")
        L, kv, hd = kv_shape(base.config)
        pc = PrefixTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=module.n_tokens,
            token_dim=kv * hd,
            num_attention_heads=kv,
            num_layers=L,
            num_transformer_submodules=1,
            prefix_projection=False,
            base_model_name_or_path=base.name,
        )
        pc.inference_mode = True
        pc.save_pretrained(folder)
        return {"dir": ".", "drops": None}

    @classmethod
    def load_module(cls, config, base, folder: Path) -> PrefixModule:
        flat = load_file(folder / "adapter_model.safetensors")["prompt_embeddings"]
        L, kv, hd = kv_shape(base.config)
        if flat.shape != (flat.shape[0], L * 2 * kv * hd):
            raise ValueError(f"{folder}: prefix of shape {tuple(flat.shape)} does not fit this base model")
        return PrefixModule(base.model, flat_init=flat)
