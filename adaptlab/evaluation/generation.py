"""Generation over a batch of prompts (decoding itself is :mod:`adaptlab.models.decoding`), and
generation metrics."""

from __future__ import annotations

import dataclasses

import torch

from adaptlab.models.decoding import GREEDY, Sampling, beam_search, decode
from adaptlab.models.runtime import as_lm, encode_prompts, length_batches, module_device


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 64, num_beams: int = 1,
             batch_size: int = 8, max_prompt_tokens: int = 1024, length_penalty: float = 1.0,
             sampling: Sampling | None = None, stop: list[str] | None = None) -> list[str]:
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
        window = getattr(lm.hf_model().config, "sliding_window", None)
        extra = max_new_tokens + lm.n_virtual
        for rows in length_batches([len(p) for p in ids], batch_size, window, extra):
            per_row = [sampling if sampling.seed is None else dataclasses.replace(sampling, seed=sampling.seed + i)
                       for i in rows]
            done = decode(lm, tokenizer, [ids[i] for i in rows], max_new_tokens, device, sampling=per_row,
                          stops=[stop] * len(rows))
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
    return text[:min(at)] if at else text


# ------------------------------------------------------------------ metrics
def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 on lower-cased whitespace tokens (a 15-line metric; not worth rouge-score + nltk)."""
    p, r = prediction.lower().split(), reference.lower().split()
    if not p or not r:
        return float(p == r)
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    prec, rec = lcs / len(p), lcs / len(r)
    return 2 * prec * rec / (prec + rec)


def references_by_input(examples) -> tuple[list[str], list[list[str]]]:
    """Distinct inputs in first-seen order and all targets given for each (multi-reference)."""
    refs: dict[str, list[str]] = {}
    for ex in examples:
        refs.setdefault(ex.text, []).append(ex.label)
    return list(refs), list(refs.values())


def chrf(predictions: list[str], references: list[list[str]]) -> float:
    """Corpus chrF (character n-gram F-score, beta 2) on a 0-1 scale, every reference of an input
    counting. From sacrebleu, the reference implementation, so the number matches what E2E/ViGGO
    papers and other tools report."""
    from sacrebleu.metrics import CHRF

    width = max(len(refs) for refs in references)
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(width)]
    return CHRF().corpus_score(predictions, streams).score / 100.0


def generation_metrics(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """Exact match and ROUGE-L against the best of each example's references; corpus chrF."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference sets")
    n = len(predictions)
    if n == 0:
        raise ValueError("no predictions to score")
    em = sum(any(p.strip() == r.strip() for r in refs) for p, refs in zip(predictions, references))
    rl = sum(max(rouge_l(p, r) for r in refs) for p, refs in zip(predictions, references))
    return {"exact_match": em / n, "rouge_l": rl / n, "chrf": chrf(predictions, references), "n": n}
