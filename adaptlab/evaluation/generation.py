"""Generation over a batch of prompts (decoding itself is :mod:`adaptlab.models.decoding`), and
generation metrics."""

from __future__ import annotations

import dataclasses

import torch

from adaptlab.evaluation.text_metrics import chrf, generation_scores  # noqa: F401  (chrf: public here too)
from adaptlab.models.arch import arch_facts
from adaptlab.models.decoding import GREEDY, Sampling, beam_search, decode
from adaptlab.models.runtime import as_lm, encode_prompts, length_batches, module_device


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 64,
    num_beams: int = 1,
    batch_size: int = 8,
    max_prompt_tokens: int = 1024,
    length_penalty: float = 1.0,
    sampling: Sampling | None = None,
    stop: list[str] | None = None,
) -> list[str]:
    """Continue each prompt until an end token, a ``stop`` text (cut off) or ``max_new_tokens``.

    ``sampling`` (default greedy) applies to every prompt; with a seed, prompt i samples with
    seed + i, so a prompt's text does not depend on the batch it ran in.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}: must be >= 1")
    if num_beams < 1:
        raise ValueError(f"num_beams={num_beams}: must be >= 1")
    sampling = sampling or GREEDY
    if num_beams > 1 and not sampling.greedy:
        raise ValueError("num_beams > 1 is a search, not sampling: use temperature=0 with beams")
    stop = list(stop or [])
    lm = as_lm(model)
    device = module_device(model)
    ids = encode_prompts(tokenizer, prompts, max_prompt_tokens)
    out: list[list[int]] = [[] for _ in prompts]
    if num_beams == 1:
        window = arch_facts(lm.hf_model()).sliding_window
        extra = max_new_tokens + lm.n_virtual
        for rows in length_batches([len(p) for p in ids], batch_size, window, extra):
            per_row = [
                sampling if sampling.seed is None else dataclasses.replace(sampling, seed=sampling.seed + i)
                for i in rows
            ]
            done = decode(
                lm,
                tokenizer,
                [ids[i] for i in rows],
                max_new_tokens,
                device,
                sampling=per_row,
                stops=[stop] * len(rows),
            )
            for i, d in zip(rows, done):
                out[i] = d.tokens
    else:
        for i, p in enumerate(ids):
            out[i] = beam_search(lm, tokenizer, p, max_new_tokens, num_beams, length_penalty, device)
    texts = [tokenizer.decode(seq, skip_special_tokens=True) for seq in out]
    return [cut_at_stop(t, stop).strip() for t in texts]


def cut_at_stop(text: str, stops: list[str]) -> str:
    """``text`` up to the first stop text in it (the stop text itself is not part of the answer)."""
    at = [text.find(s) for s in stops if s and s in text]
    return text[: min(at)] if at else text


# ------------------------------------------------------------------ metrics
def references_by_input(examples) -> tuple[list[str], list[list[str]]]:
    """Distinct inputs in first-seen order and all targets given for each (multi-reference)."""
    refs: dict[str, list[str]] = {}
    for ex in examples:
        refs.setdefault(ex.text, []).append(ex.label)
    return list(refs), list(refs.values())


def generation_metrics(
    predictions: list[str], references: list[list[str]], inputs: list[str] | None = None, embeddings: bool = True
) -> dict[str, float]:
    """Corpus metrics: ROUGE-L (``rouge-score``) and exact match against the best of each input's
    references, corpus chrF, MiniLM embedding similarity, and where the task has them the slot
    error rate and JSON validity / field accuracy (see :mod:`adaptlab.evaluation.text_metrics`)."""
    return generation_scores(predictions, references, inputs, embeddings)[0]
