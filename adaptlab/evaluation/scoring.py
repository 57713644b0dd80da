"""Classification as text: score every label's verbalization, never a free-form answer.

The expensive part of Gemma 3 is its tied 262k-word LM head (168M of 268M parameters). A plain
``model(input_ids).logits`` projects *every* position onto the vocabulary; here the decoder body
runs once and only the positions that predict a label token are projected. For a 40-token prompt
and a 2-token label that is 2 projections instead of 42.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from adaptlab.models.arch import arch_facts
from adaptlab.models.label_tree import LabelTrie, label_continuations
from adaptlab.models.runtime import (
    as_lm,
    common_prefix,
    encode_labels,
    encode_prompts,
    length_batches,
    module_device,
    pad_id,
    repeat_cache,
    right_pad,
    target_logprobs,
)
from adaptlab.utils import check_deadline


@torch.no_grad()
def score_labels(
    model: torch.nn.Module,
    tokenizer,
    prompts: list[str],
    label_texts: list[str],
    batch_size: int = 8,
    max_prompt_tokens: int = 1024,
    rows_per_pass: int = 256,
    min_shared_tokens: int = 8,
    top1: bool = False,
) -> torch.Tensor:
    """Log-probability of each label continuation after each prompt: returns (N, L).

    Multi-token labels score as the sum over their tokens. Three levels of reuse, all exact:
    the prompt prefix every example shares (instruction, label list, few-shot exemplars; at
    least ``min_shared_tokens`` long) is encoded once for the whole call; each prompt is encoded
    once, and all label continuations then run as one *token tree* after it (see
    :func:`label_continuations`); and the LM head runs once per distinct (prompt, label prefix), so
    labels sharing first tokens share projections. Same numbers as :func:`score_labels_naive`.

    ``top1=True`` is for callers that need only the best label (accuracy, F1, predictions): every
    label that could be the argmax gets its exact score and the others -inf, found by an exact
    branch and bound (:func:`top1_totals`) that skips most LM-head projections for many labels.
    """
    device = module_device(model)
    lm = as_lm(model)
    label_ids = encode_labels(tokenizer, label_texts)
    prompt_ids = encode_prompts(tokenizer, prompts, max_prompt_tokens)
    pad = pad_id(tokenizer)
    L = len(label_ids)
    first = torch.tensor([ids[0] for ids in label_ids], device=device)
    trie = LabelTrie(label_ids, device)
    scores = torch.empty(len(prompts), L)
    config = lm.hf_model().config
    shared = common_prefix(prompt_ids)[: min(len(p) for p in prompt_ids) - 1]  # leave >= 1 token per prompt
    if len(shared) < min_shared_tokens:
        shared = []
    if shared:  # encoded once for the whole call
        s_cache, s_mask, _ = lm.start(
            torch.tensor([shared], device=device), torch.ones(1, len(shared), dtype=torch.long, device=device)
        )
    window = arch_facts(config).sliding_window
    extra = max(len(x) for x in label_ids) + len(shared) + lm.n_virtual
    for rows in length_batches([len(p) - len(shared) for p in prompt_ids], batch_size, window, extra):
        check_deadline()  # a compare's time limit (adaptlab.utils.time_limit)
        ids, att = right_pad([prompt_ids[i][len(shared) :] for i in rows], pad, device)
        B, T = ids.shape
        if shared:
            cmask = torch.cat([s_mask.expand(B, -1), att], dim=1)
            cache = repeat_cache(s_cache, B, config)
            pos = s_mask.sum() + torch.arange(T, device=device).expand(B, -1)
            hidden = lm.extend(ids, cmask, pos, cache)  # (B, T, H), rest of each prompt
        else:
            cache, cmask, hidden = lm.start(ids, att)  # hidden: (B, T, H)
        last = hidden[torch.arange(B, device=device), att.sum(1) - 1]  # (B, H) predicts label token 0
        logp0 = torch.log_softmax(lm.project(last).float(), dim=-1)  # one projection per prompt
        if top1 and trie.n:
            total = label_continuations(lm, trie, cache, cmask, window, rows_per_pass, L, device, logp0, first)
        else:
            total = logp0[:, first].clone()  # (B, L)
            if trie.n:  # every label token after the first, all labels at once
                total += label_continuations(lm, trie, cache, cmask, window, rows_per_pass, L, device)
        for r, i in enumerate(rows):
            scores[i] = total[r].cpu()
    return scores


@torch.no_grad()
def score_labels_naive(
    model: torch.nn.Module,
    tokenizer,
    prompts: list[str],
    label_texts: list[str],
    batch_size: int = 32,
    max_prompt_tokens: int = 1024,
) -> torch.Tensor:
    """Reference implementation: one full forward pass per (prompt, label) pair, (N, L).

    Kept for tests and for ``bench/prompt_inference.py``; :func:`score_labels` gives the same
    numbers with the prompt encoded once per example.
    """
    device = module_device(model)
    model = as_lm(model)
    label_ids = encode_labels(tokenizer, label_texts)
    prompt_ids = encode_prompts(tokenizer, prompts, max_prompt_tokens)
    pairs = [(i, j) for i in range(len(prompts)) for j in range(len(label_texts))]
    pairs.sort(key=lambda ij: len(prompt_ids[ij[0]]) + len(label_ids[ij[1]]))
    scores = torch.empty(len(prompts), len(label_texts))
    pad = pad_id(tokenizer)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        seqs = [prompt_ids[i] + label_ids[j] for i, j in chunk]
        T = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), T), pad, dtype=torch.long)
        att = torch.zeros((len(seqs), T), dtype=torch.long)
        tgt = torch.zeros((len(seqs), T), dtype=torch.bool)
        for r, ((i, _j), s) in enumerate(zip(chunk, seqs)):
            ids[r, : len(s)] = torch.tensor(s)
            att[r, : len(s)] = 1
            tgt[r, len(prompt_ids[i]) : len(s)] = True
        lp = target_logprobs(model, ids.to(device), att.to(device), tgt.to(device)).cpu()
        for r, (i, j) in enumerate(chunk):
            scores[i, j] = lp[r]
    return scores


@dataclass
class ScoredPredictions:
    predictions: list[str]
    scores: torch.Tensor  # (N, L) label log-probabilities
    seconds: float
    prompt_tokens: float  # mean prompt tokens per example

    @property
    def examples_per_s(self) -> float:
        return len(self.predictions) / self.seconds if self.seconds > 0 else float("inf")


def predict_labels(
    model, tokenizer, prompts: list[str], labels: list[str], label_texts: list[str], batch_size: int = 32
) -> ScoredPredictions:
    """Best-scoring label for each prompt; the output is always one of ``labels``."""
    t0 = time.perf_counter()
    scores = score_labels(model, tokenizer, prompts, label_texts, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    best = scores.argmax(dim=1).tolist()
    n_tok = sum(len(tokenizer(p)["input_ids"]) for p in prompts) / max(1, len(prompts))
    return ScoredPredictions([labels[b] for b in best], scores, seconds, n_tok)
