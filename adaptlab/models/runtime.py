"""The model runtime: how adaptlab runs a causal LM, adapted or not (public API).

Everything above this layer (scoring, decoding, training, serving) talks to a model through
:class:`DecoderLM`: ``start`` (encode prompts, keep the cache), ``extend`` (more tokens after a
cache), ``hidden`` and ``project`` (the LM head on chosen positions only). The LM head is the
dominant cost of Gemma 3 (a tied 262k-word projection), so nothing here computes logits at
positions that have no target.
"""

from __future__ import annotations

import torch

from adaptlab.models import fastweights
from adaptlab.models.arch import arch_facts
from adaptlab.models.types import ChatTemplateError


def _cache_name() -> str:
    """What transformers calls the key/value cache, in a forward's keyword and in its output:
    ``cache`` from 5.2x on (``past_key_values`` is deprecated there, announced for removal in 5.40),
    ``past_key_values`` before. Asked once of the output class, so both spellings work and no
    deprecation warning reaches the user's terminal."""
    import dataclasses

    from transformers.modeling_outputs import BaseModelOutputWithPast

    return "cache" if "cache" in {f.name for f in dataclasses.fields(BaseModelOutputWithPast)} else "past_key_values"


CACHE = _cache_name()


def with_cache(cache) -> dict:
    """The keyword argument that passes ``cache`` to a transformers forward."""
    return {CACHE: cache}


def cache_of(out):
    """The key/value cache a transformers forward returned."""
    return getattr(out, CACHE)


def decoder(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer body of a causal LM (everything before the LM head)."""
    if hasattr(model, "get_base_model"):  # a PEFT wrapper
        model = model.get_base_model()
    return model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, model.base_model_prefix)


def project(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """LM head on selected hidden states: (M, H) -> (M, V), with Gemma's soft-capping if set."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    logits = model.get_output_embeddings()(hidden)
    cap = arch_facts(model.config).logit_softcap
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def greedy_tokens(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The argmax of :func:`project` for each row of ``hidden`` (M, H) -> (M,), without the full
    fp32 head where a bf16 screen can decide it (:func:`adaptlab.models.fastweights.greedy_screen`:
    the same tokens up to fp32 rounding)."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    head = model.get_output_embeddings()
    screen = None
    if hidden.dtype == torch.float32 and not arch_facts(model.config).logit_softcap:
        screen = fastweights.greedy_screen(head)
    if screen is None:
        return project(model, hidden).argmax(-1)
    return screen.argmax(hidden, head)


class DecoderLM:
    """The calls adaptlab makes on a (possibly adapted) causal LM; defaults run ``hf_model()``.

    Strategies that change the input (soft prompts) or the attention context (prefixes)
    override ``hidden`` and ``start``; scoring and training only ever use these methods.
    """

    n_virtual: int = 0  # positions the adapter puts before the prompt (soft prompt / prefix length)

    def hf_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T, H) last hidden states aligned with ``input_ids``."""
        return decoder(self.hf_model())(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return project(self.hf_model(), hidden)

    def subset(self, rows: list[int]) -> DecoderLM:
        """The same model for a batch of only ``rows`` of this one's (itself where every row runs
        the same way)."""
        return self

    def greedy(self, hidden: torch.Tensor) -> torch.Tensor:
        """(M, H) -> (M,) each row's most likely next token (:func:`greedy_tokens`)."""
        return greedy_tokens(self.hf_model(), hidden)

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Encode prompts once: returns (cache, mask the cache covers (B, C), hidden (B, T, H))."""
        out = decoder(self.hf_model())(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
        return cache_of(out), attention_mask, out.last_hidden_state

    def extend(self, input_ids, attention_mask, position_ids, cache) -> torch.Tensor:
        """Continue from ``cache`` (mask covers cache + new tokens): (B, S) -> (B, S, H)."""
        return decoder(self.hf_model())(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **with_cache(cache)
        ).last_hidden_state


class PlainLM(torch.nn.Module, DecoderLM):
    """An unadapted causal LM."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def hf_model(self) -> torch.nn.Module:
        return self.model


def cache_from(config, layers):
    """A transformers cache for ``config`` holding ``layers``: one (keys, values) pair per layer,
    each (B, kv_heads, slots, head_dim)."""
    from transformers import DynamicCache

    out = DynamicCache(config=config)
    for i, (keys, values) in enumerate(layers):
        out.update(keys, values, i)
    return out


def repeat_cache(cache, repeats: int, config):
    """A new cache with every row repeated ``repeats`` times (row i -> rows i*r .. i*r+r-1)."""
    return cache_from(
        config, ((x.keys.repeat_interleave(repeats, 0), x.values.repeat_interleave(repeats, 0)) for x in cache.layers)
    )


def module_device(module) -> torch.device:
    """Where a model (an ``nn.Module``, or a runtime that says so itself) runs."""
    if isinstance(module, torch.nn.Module):
        p = next(module.parameters(), None)
        if p is not None:
            return p.device
    return module.device


def as_lm(model: torch.nn.Module) -> DecoderLM:
    return model if isinstance(model, DecoderLM) else PlainLM(model)


def target_token_logprobs(
    lm, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(token) at every target position: returns (rows (M,), logp (M,)).

    Token t is predicted by the hidden state at t-1, so ``target_mask[:, 0]`` must be False.
    Only the M target positions reach the LM head.
    """
    lm = as_lm(lm)
    hidden = lm.hidden(input_ids, attention_mask)  # (B, T, H)
    rows, cols = target_mask[:, 1:].nonzero(as_tuple=True)  # M target tokens at t = cols + 1
    logits = lm.project(hidden[rows, cols])  # hidden at t-1 -> (M, V)
    logp = torch.log_softmax(logits.float(), dim=-1)
    return rows, logp.gather(1, input_ids[rows, cols + 1].unsqueeze(1)).squeeze(1)


def target_logprobs(
    lm, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_mask: torch.Tensor
) -> torch.Tensor:
    """Sum of log p(token) over the tokens where ``target_mask`` is set, per row: (B,)."""
    rows, tok_logp = target_token_logprobs(lm, input_ids, attention_mask, target_mask)
    return per_row_sum(rows, tok_logp, input_ids.shape[0])


def per_row_sum(rows: torch.Tensor, values: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Per-token values (as :func:`target_token_logprobs` gives them, with their rows) summed per row: (n_rows,)."""
    return torch.zeros(n_rows, dtype=values.dtype, device=values.device).index_add(0, rows, values)


def encode_labels(tokenizer, label_texts: list[str]) -> list[list[int]]:
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in label_texts]
    for text, seq in zip(label_texts, ids):
        if not seq:
            raise ValueError(f"label verbalization {text!r} tokenizes to nothing")
    return ids


def length_batches(lengths: list[int], batch_size: int, window: int | None, extra: int) -> list[list[int]]:
    """Index batches sorted by length. Where ``length + extra`` can exceed a sliding attention
    window, only equal lengths share a batch: right padding inside a cache shifts the window of a
    shorter row (pad slots count as distance), so exactness needs no padding there."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    exact = window is not None and max(lengths) + extra > window
    batches, cur = [], []
    for i in order:
        if cur and (len(cur) == batch_size or (exact and lengths[i] != lengths[cur[0]])):
            batches.append(cur)
            cur = []
        cur.append(i)
    return batches + ([cur] if cur else [])


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def right_pad(seqs: list[list[int]], pad: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> right-padded (B, T) input_ids and attention_mask."""
    T = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), T), pad, dtype=torch.long)
    att = torch.zeros((len(seqs), T), dtype=torch.long)
    for r, x in enumerate(seqs):
        ids[r, : len(x)] = torch.tensor(x)
        att[r, : len(x)] = 1
    return ids.to(device), att.to(device)


def common_prefix(seqs: list[list[int]]) -> list[int]:
    first = seqs[0]
    n = len(first)
    for s in seqs[1:]:
        n = min(n, len(s))
        for k in range(n):
            if s[k] != first[k]:
                n = k
                break
    return first[:n]


def encode_prompts(tokenizer, prompts: list[str], max_prompt_tokens: int) -> list[list[int]]:
    out = []
    for p in prompts:
        ids = tokenizer(p)["input_ids"]
        if len(ids) > max_prompt_tokens:  # keep the end of the prompt: it holds the question
            ids = ids[:1] + ids[-(max_prompt_tokens - 1) :]
        out.append(ids)
    return out


def adds_bos(tokenizer) -> bool:
    """Whether tokenizing a text puts the BOS token in front by itself (Gemma's does; SmolLM2's,
    whose BOS is ``<|im_start|>``, does not)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def has_chat_template(tokenizer) -> bool:
    """Whether the tokenizer carries a chat template (instruction-tuned models do; Gemma 3 270M's does not)."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """A conversation in the model's own chat template, as text to tokenize: the template's BOS is
    left out where the tokenizer adds it again. Without a template (or a tokenizer): a plain
    transcript, ``role: content`` lines."""
    if has_chat_template(tokenizer):
        from jinja2 import TemplateError  # what a template's raise_exception() raises

        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        except TemplateError as e:
            roles = "/".join(m["role"] for m in messages)
            raise ChatTemplateError(f"the model's chat template refuses this conversation ({roles}): {e}") from e
        bos = tokenizer.bos_token or ""
        return text[len(bos) :] if bos and text.startswith(bos) and adds_bos(tokenizer) else text
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + ("assistant:" if add_generation_prompt else "")
