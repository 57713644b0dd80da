"""Soft prompt tuning (Lester et al. 2021): learned virtual tokens before the input embeddings.

Hand-written rather than PEFT's PromptTuning model because PEFT's forward computes logits at
every position, virtual tokens included; here the body runs on ``[prompt; input]`` embeddings
and only label positions are projected. The saved files are PEFT's format
(``adapter_config.json`` + ``adapter_model.safetensors`` with ``prompt_embeddings``), so
``PeftModel.from_pretrained`` loads them (tested).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from adaptlab.evaluation.scoring import DecoderLM, decoder
from adaptlab.prompts import verbalize
from adaptlab.strategies.gradient import GradientStrategy, claim, init_words


class SoftPromptModule(torch.nn.Module, DecoderLM):
    """(P, H) virtual-token embeddings prepended to the input embeddings of ``lm``'s model.

    ``owner_base`` is the base model to claim before use (None when ``lm`` is a private model,
    as in the hybrid strategy where the inner model is claimed by its own module).
    """

    def __init__(self, model_fn, init: torch.Tensor, owner_base=None):
        super().__init__()
        self.model_fn = model_fn          # () -> the HF causal LM to run (base, or a fine-tuned one)
        self.owner_base = owner_base
        self.prompt = torch.nn.Parameter(init.clone())  # (P, H), in the (scaled) embedding space

    @property
    def n_virtual(self) -> int:
        return self.prompt.shape[0]

    def hf_model(self):
        if self.owner_base is not None:
            claim(self.owner_base, self)
        return self.model_fn()

    def _run(self, input_ids, attention_mask, use_cache: bool):
        model = self.hf_model()
        embeds = model.get_input_embeddings()(input_ids)                 # (B, T, H)
        B, P = input_ids.shape[0], self.prompt.shape[0]
        x = torch.cat([self.prompt.unsqueeze(0).expand(B, -1, -1).to(embeds.dtype), embeds], dim=1)  # (B, P+T, H)
        mask = torch.cat([attention_mask.new_ones(B, P), attention_mask], dim=1)
        out = decoder(model)(inputs_embeds=x, attention_mask=mask, use_cache=use_cache)
        return out, mask, out.last_hidden_state[:, P:]                   # hidden aligned with input_ids

    def hidden(self, input_ids, attention_mask):
        return self._run(input_ids, attention_mask, use_cache=False)[2]

    def start(self, input_ids, attention_mask):
        out, mask, hidden = self._run(input_ids, attention_mask, use_cache=True)
        return out.past_key_values, mask, hidden


def initial_prompt(model, tokenizer, n_tokens: int, init: str, labels: list[str]) -> torch.Tensor:
    emb = model.get_input_embeddings()
    vocab = emb.weight.shape[0]
    with torch.no_grad():
        if init == "labels":
            ids = [i for label in labels for i in tokenizer(" " + verbalize(label), add_special_tokens=False)["input_ids"]]
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
    return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n_tokens, token_dim=c.hidden_size,
                              num_transformer_submodules=1, num_attention_heads=c.num_attention_heads,
                              num_layers=c.num_hidden_layers, base_model_name_or_path=base_name)


def save_prompt(module: SoftPromptModule, folder: Path, model, base_name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"prompt_embeddings": module.prompt.detach().contiguous()}, folder / "adapter_model.safetensors")
    cfg = peft_prompt_config(module.prompt.shape[0], model, base_name)
    cfg.inference_mode = True
    cfg.save_pretrained(folder)


def load_prompt(folder: Path) -> torch.Tensor:
    return load_file(folder / "adapter_model.safetensors")["prompt_embeddings"]


class SoftPromptStrategy(GradientStrategy):
    name = "soft_prompt"
    default_lr = 3e-2  # prompt embeddings need a far larger step than weights (Lester et al. use 0.3)

    def build(self, base, train_data, template):
        init = initial_prompt(base.model, base.tokenizer, self.config.n_tokens, self.config.init, init_words(train_data))
        return SoftPromptModule(lambda: base.model, init, owner_base=base)

    @classmethod
    def save_module(cls, module, config, base, folder: Path) -> None:
        save_prompt(module, folder, base.model, base.name)

    @classmethod
    def load_module(cls, config, base, folder: Path):
        return SoftPromptModule(lambda: base.model, load_prompt(folder), owner_base=base)
