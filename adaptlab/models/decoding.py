"""Greedy and beam decoding through any :class:`~adaptlab.models.runtime.DecoderLM` (public API).

Hand-written over ``model.generate`` because adapted models are not all HF models: a soft
prompt or a prefix changes how the prompt is encoded. Decoding only needs ``start`` (encode
prompts, return the cache) and ``extend`` (one more token), so every adaptation decodes the same
way, and the LM head runs on one position per step.
"""

from __future__ import annotations

import torch

from adaptlab.models.runtime import pad_id, right_pad


def greedy(lm, tokenizer, prompts: list[list[int]], max_new: int, device, limits: list[int] | None = None,
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


def beam_search(lm, tokenizer, prompt: list[int], max_new: int, K: int, length_penalty: float, device) -> list[int]:
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
