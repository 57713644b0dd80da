"""Tiny randomly initialised models with their own byte-level tokenizer, for unit tests.

``arch="gemma"`` (the default, ``tiny``) is the real base model's class (``Gemma3ForCausalLM``:
sliding + full attention layers, tied embeddings, GQA, logit soft-capping); ``arch="llama"``
(``tiny-llama``) is the second family's (``LlamaForCausalLM``, as SmolLM2: full attention only,
tied embeddings, GQA). Both exercise every code path the strategies use, with a 260-token
vocabulary and a 64-wide hidden state, and build in milliseconds. The tokenizer is built here
(byte-level, no merges, Gemma's special-token ids) so nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json

import torch

TINY_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]  # ids 0..3, as in Gemma's vocabulary


def build_tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(TINY_SPECIALS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_config(vocab_size: int, layers: int = 2, hidden: int = 64, sliding_window: int = 64):
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        query_pre_attn_scalar=32,
        max_position_embeddings=1024,
        sliding_window=sliding_window,
        layer_types=["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)],
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=True,
        # Larger than the 0.02 default: with tiny tied embeddings the logits stay near zero and
        # head-free adaptations (LoRA, prompts) cannot lower the loss much in a unit test.
        initializer_range=0.2,
    )


def tiny_llama_config(vocab_size: int, layers: int = 2, hidden: int = 64):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=1024,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=True,
        initializer_range=0.2,
    )


ARCHS = ("gemma", "llama")


def weights_fingerprint(model: torch.nn.Module) -> str:
    """Hash of config + every tensor: cheap for a tiny model, exact identity."""
    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def build_tiny(
    seed: int = 0, layers: int = 2, hidden: int = 64, device: str = "cpu", sliding_window: int = 64, arch: str = "gemma"
):
    from transformers import Gemma3ForCausalLM, LlamaForCausalLM

    from adaptlab.models.types import BaseModel

    if arch not in ARCHS:
        raise ValueError(f"tiny model arch={arch!r}: use one of {', '.join(ARCHS)}")
    tok = build_tiny_tokenizer()
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if arch == "gemma":
            model = Gemma3ForCausalLM(tiny_config(len(tok), layers, hidden, sliding_window))
        else:
            model = LlamaForCausalLM(tiny_llama_config(len(tok), layers, hidden))
    finally:
        torch.random.set_rng_state(gen_state)  # do not disturb the caller's random stream
    model.eval()
    model.requires_grad_(False)  # frozen like every base model
    fp = weights_fingerprint(model)
    model.to(device)
    name = "tiny" if arch == "gemma" else f"tiny-{arch}"
    window = f",window={sliding_window}" if arch == "gemma" else ""
    meta = {
        "name": name,
        "source": f"random-init(arch={arch},seed={seed},layers={layers},hidden={hidden}{window})",
        "dtype": "float32",
        "fingerprint": fp,
    }
    return BaseModel(model=model, tokenizer=tok, name=name, fingerprint=fp, path=None, meta=meta)
