"""Greedy and beam decoding through any adapted module, and generation metrics.

Hand-written over ``model.generate`` because adapted modules are not all HF models: a soft
prompt or a prefix changes how the prompt is encoded. Decoding only needs the module's
``start`` (encode prompts, return the cache) and ``extend`` (one more token), so every strategy
decodes the same way, and the LM head runs on one position per step.
"""

from __future__ import annotations

import torch

from adaptlab.evaluation.scoring import _encode_prompts, as_lm, length_batches, module_device, pad_id, right_pad


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 64, num_beams: int = 1,
             batch_size: int = 8, max_prompt_tokens: int = 1024, length_penalty: float = 1.0) -> list[str]:
    """Continue each prompt until EOS or ``max_new_tokens``; returns the decoded continuations."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}: must be >= 1")
    if num_beams < 1:
        raise ValueError(f"num_beams={num_beams}: must be >= 1")
    lm = as_lm(model)
    device = module_device(model)
    ids = _encode_prompts(tokenizer, prompts, max_prompt_tokens)
    out: list[list[int]] = [[] for _ in prompts]
    if num_beams == 1:
        window = getattr(lm.hf_model().config, "sliding_window", None)
        extra = max_new_tokens + lm.n_virtual
        for rows in length_batches([len(p) for p in ids], batch_size, window, extra):
            for i, seq in zip(rows, _greedy(lm, tokenizer, [ids[i] for i in rows], max_new_tokens, device)):
                out[i] = seq
    else:
        for i, p in enumerate(ids):
            out[i] = _beam(lm, tokenizer, p, max_new_tokens, num_beams, length_penalty, device)
    return [tokenizer.decode(seq, skip_special_tokens=True).strip() for seq in out]


def _greedy(lm, tokenizer, prompts: list[list[int]], max_new: int, device, limits: list[int] | None = None,
            on_token=None) -> list[list[int]]:
    """Greedy decoding of a batch; ``limits`` caps each row (default ``max_new``) and
    ``on_token(row, token_id)`` sees every kept token as it is chosen (streaming)."""
    pad = pad_id(tokenizer)
    eos = tokenizer.eos_token_id
    ids, att = right_pad(prompts, pad, device)
    B = len(prompts)
    cache, mask, hidden = lm.start(ids, att)
    last = hidden[torch.arange(B, device=device), att.sum(1) - 1]          # (B, H)
    pos = mask.sum(1)                                                        # next position per row
    seqs: list[list[int]] = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    limits = limits or [max_new] * B
    for step in range(max_new):
        nxt = lm.project(last).argmax(-1)                                    # (B,)
        for r in range(B):
            if not done[r]:
                if nxt[r].item() == eos:
                    done[r] = True
                else:
                    seqs[r].append(nxt[r].item())
                    if on_token is not None:
                        on_token(r, seqs[r][-1])
                    if len(seqs[r]) >= limits[r]:
                        done[r] = True
        if bool(done.all()) or step == max_new - 1:
            break
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        mask = torch.cat([mask, (~done).long().unsqueeze(1)], dim=1)
        last = lm.extend(nxt.unsqueeze(1), mask, (pos + step).unsqueeze(1), cache)[:, -1]
    return seqs


def _beam(lm, tokenizer, prompt: list[int], max_new: int, K: int, length_penalty: float, device) -> list[int]:
    """Beam search for one prompt; scores are summed log-probs divided by length ** length_penalty."""
    eos = tokenizer.eos_token_id
    ids, att = right_pad([prompt], 0, device)
    cache, mask, hidden = lm.start(ids, att)
    last = hidden[:, -1]                                                     # (n_beams, H)
    pos = int(mask.sum())
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    finished: list[tuple[float, list[int]]] = []
    for step in range(max_new):
        lp = torch.log_softmax(lm.project(last).float(), -1)                 # (n_beams, V)
        cand = torch.tensor([s for _, s in beams], device=device).unsqueeze(1) + lp
        top = cand.view(-1).topk(min(2 * K, cand.numel()))
        V = lp.shape[1]
        alive, origin = [], []
        for score, idx in zip(top.values.tolist(), top.indices.tolist()):
            b, tok = divmod(idx, V)
            if tok == eos:
                finished.append((score / max(1, len(beams[b][0]) + 1) ** length_penalty, beams[b][0]))
            else:
                alive.append((beams[b][0] + [tok], score))
                origin.append(b)
            if len(alive) == K:
                break
        if len(finished) >= K or not alive or step == max_new - 1:
            finished += [(s / len(q) ** length_penalty, q) for q, s in alive]
            break
        idx = torch.tensor(origin, device=device)
        cache.reorder_cache(idx)                                             # rows follow their beams
        mask = torch.cat([mask[idx], torch.ones(len(alive), 1, dtype=mask.dtype, device=device)], dim=1)
        tokens = torch.tensor([[q[-1]] for q, _ in alive], device=device)
        last = lm.extend(tokens, mask, torch.full((len(alive), 1), pos + step, device=device), cache)[:, -1]
        beams = alive
    return max(finished, key=lambda t: t[0])[1]


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
