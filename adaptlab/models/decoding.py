"""Greedy and beam decoding through any :class:`~adaptlab.models.runtime.DecoderLM` (public API).

Hand-written over ``model.generate`` because adapted models are not all HF models: a soft
prompt or a prefix changes how the prompt is encoded. Decoding only needs ``start`` (encode
prompts, return the cache) and ``extend`` (one more token), so every adaptation decodes the same
way, and the LM head runs on one position per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from adaptlab.models.arch import arch_facts
from adaptlab.models.runtime import cache_from, pad_id, right_pad
from adaptlab.utils import check_deadline

END_OF_TURN = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>")  # chat templates' end-of-turn tokens


def end_ids(tokenizer) -> set[int]:
    """Token ids that end a continuation: EOS and the chat template's end-of-turn token, if any."""
    out = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    out |= {vocab[t] for t in END_OF_TURN if t in vocab}
    return out


@dataclass(frozen=True)
class Sampling:
    """How a row picks its next token. ``temperature == 0`` (the default) is greedy.

    ``seed`` makes a sampled row reproducible on its own: each row draws from its own generator,
    so the same seed gives the same text whatever else shares the batch.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    logprobs: int | None = None  # None: none; k >= 0: the chosen token's log-probability and the k best

    def __post_init__(self):
        if not (isinstance(self.temperature, (int, float)) and 0 <= self.temperature <= 2):
            raise ValueError(f"temperature={self.temperature!r}: must be between 0 and 2")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p={self.top_p!r}: must be in (0, 1]")
        if not (isinstance(self.top_k, int) and self.top_k >= 0):
            raise ValueError(f"top_k={self.top_k!r}: must be an integer >= 0 (0: no limit)")
        if self.logprobs is not None and not (isinstance(self.logprobs, int) and 0 <= self.logprobs <= 20):
            raise ValueError(f"logprobs={self.logprobs!r}: must be an integer between 0 and 20")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generator(self, device) -> torch.Generator | None:
        if self.greedy:
            return None
        g = torch.Generator(device=device)
        g.manual_seed(self.seed if self.seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
        return g

    def pick(self, logits: torch.Tensor, gen: torch.Generator | None) -> int:
        """The next token from one row's logits (V,)."""
        if self.greedy:
            return int(logits.argmax())
        x = logits.float() / self.temperature
        if self.top_k:
            kth = x.topk(min(self.top_k, x.shape[-1])).values[-1]
            x = x.masked_fill(x < kth, float("-inf"))
        if self.top_p < 1:
            sorted_x, order = x.sort(descending=True)
            cum = torch.softmax(sorted_x, -1).cumsum(-1)
            drop = cum - torch.softmax(sorted_x, -1) >= self.top_p  # keep the smallest set reaching top_p
            x = x.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
        return int(torch.multinomial(torch.softmax(x, -1), 1, generator=gen))


GREEDY = Sampling()


@dataclass
class Decoded:
    """One row's continuation: its tokens, why it ended, and log-probabilities when asked."""

    tokens: list[int] = field(default_factory=list)
    finish: str = "length"  # "stop" (end token or stop text) | "length"
    logprobs: list[dict] = field(default_factory=list)  # per token: {"token", "logprob", "top": [(id, lp)]}


def _stopped_by_text(tokenizer, tokens: list[int], stops: list[str]) -> bool:
    if not stops:
        return False
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    return any(s in text for s in stops)


def decode(
    lm,
    tokenizer,
    prompts: list[list[int]],
    max_new: int,
    device,
    limits: list[int] | None = None,
    on_token=None,
    sampling: list[Sampling] | None = None,
    stops: list[list[str]] | None = None,
) -> list[Decoded]:
    """Continue a batch of prompts, each row with its own limit, sampling and stop texts.

    A row ends at EOS or its template's end-of-turn token (not kept), at a stop text (the text
    is cut by the caller; the tokens stop there), or at its limit. ``on_token(row, token_id)``
    sees every kept token as it is chosen (streaming). The LM head runs on one position per row
    and step.
    """
    pad = pad_id(tokenizer)
    ends = end_ids(tokenizer)
    B = len(prompts)
    sampling = sampling or [GREEDY] * B
    stops = stops or [[] for _ in range(B)]
    limits = limits or [max_new] * B
    gens = [s.generator(device) for s in sampling]
    cache, mask, last = start_grouped(lm, prompts, pad, device)
    pos = mask.sum(1)  # next position per row
    out = [Decoded() for _ in range(B)]
    done = [False] * B
    # Rows that only need their best token (greedy, no log-probabilities) take it without the full
    # logits where the model can (DecoderLM.greedy: a bf16 screen over Gemma's 262k-word head).
    best_only = all(s.greedy and s.logprobs is None for s in sampling) and hasattr(lm, "greedy")
    for step in range(max_new):
        check_deadline()  # a compare's time limit (adaptlab.utils.time_limit)
        if best_only:
            picks, logits = lm.greedy(last).tolist(), None
        else:
            picks, logits = None, lm.project(last)  # (B, V)
        nxt = torch.full((B,), pad, dtype=torch.long, device=device)
        for r in range(B):
            if done[r]:
                continue
            tok = picks[r] if picks is not None else sampling[r].pick(logits[r], gens[r])
            if tok in ends:
                done[r], out[r].finish = True, "stop"
                continue
            nxt[r] = tok
            out[r].tokens.append(tok)
            if sampling[r].logprobs is not None:
                out[r].logprobs.append(_token_logprobs(logits[r], tok, sampling[r].logprobs))
            if on_token is not None:
                on_token(r, tok)
            if _stopped_by_text(tokenizer, out[r].tokens, stops[r]):
                done[r], out[r].finish = True, "stop"
            elif len(out[r].tokens) >= limits[r]:
                done[r] = True
        if all(done) or step == max_new - 1:
            break
        alive = torch.tensor([not d for d in done], device=device)
        mask = torch.cat([mask, alive.long().unsqueeze(1)], dim=1)
        last = lm.extend(nxt.unsqueeze(1), mask, (pos + step).unsqueeze(1), cache)[:, -1]
    return out


# A first pass costs about what its padded positions cost, plus about this many positions for
# reading every weight once more (a decode step's worth, serving.engine.STEP_POSITIONS).
PASS_POSITIONS = 32


def prefill_groups(lengths: list[int], per_pass: int = PASS_POSITIONS) -> list[list[int]]:
    """Rows (indices into ``lengths``) in groups of similar length whose first passes, each padded
    to its longest row, cost the fewest positions with ``per_pass`` positions for each pass: the
    optimal split of the rows sorted by length (dynamic programming over n <= a few dozen rows)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            c = best[i] + (j - i) * lengths[order[j - 1]] + per_pass
            if c < best[j]:
                best[j], cut[j] = c, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def start_grouped(lm, prompts: list[list[int]], pad: int, device):
    """``lm.start`` for a batch, run in groups of similar length (:func:`prefill_groups`) and merged:
    returns (cache, mask (B, C), last hidden state of each row's prompt (B, H)).

    Right padding makes every row of a first pass as long as the longest: 16 E2E prompts of 27-51
    tokens (8 LoRAs' templates) padded 26% of their positions. Each group's cache is padded at its end to the longest
    group's slots, masked; a row's keys and values are those a single pass gives it (attention
    reads slots by mask, and each key carries its own position), so decoding continues from the
    merged cache exactly as from one pass's. One pass where the split saves nothing or where a
    row comes near a sliding window (a windowed layer would keep fewer slots than the mask has)."""
    B = len(prompts)
    window = arch_facts(lm.hf_model()).sliding_window
    fits = window is None or max(len(p) for p in prompts) + lm.n_virtual < window
    split = B > 1 and fits and hasattr(lm, "subset")
    groups = prefill_groups([len(p) for p in prompts]) if split else [list(range(B))]
    if len(groups) == 1:
        ids, att = right_pad(prompts, pad, device)
        cache, mask, hidden = lm.start(ids, att)
        return cache, mask, hidden[torch.arange(B, device=device), att.sum(1) - 1]
    parts = []
    for g in groups:
        ids, att = right_pad([prompts[i] for i in g], pad, device)
        cache, mask, hidden = lm.subset(g).start(ids, att)
        parts.append((g, cache, mask, hidden[torch.arange(len(g), device=device), att.sum(1) - 1]))
    return merge_caches(lm.hf_model().config, parts)


def merge_caches(config, parts: list):
    """Caches of row groups ``(rows, cache, mask, last)`` as one batch in the original row order,
    each group's slots padded at their end (masked); (cache, mask, last)."""
    C = max(mask.shape[1] for _, _, mask, _ in parts)
    order = torch.tensor([r for g, *_ in parts for r in g])
    back = torch.empty_like(order)
    back[order] = torch.arange(len(order))
    back = back.to(parts[0][2].device)

    def padded(t, dim):  # (b, ..., c, ...) -> c padded to C along ``dim`` with zeros
        extra = C - t.shape[dim]
        if extra == 0:
            return t
        shape = list(t.shape)
        shape[dim] = extra
        return torch.cat([t, t.new_zeros(shape)], dim=dim)

    def merged(tensors):  # one layer's keys (or values) of every group, padded, in row order
        return torch.cat([padded(t, 2) for t in tensors])[back]

    caches = [c for _, c, _, _ in parts]
    layers = [
        (merged([c.layers[i].keys for c in caches]), merged([c.layers[i].values for c in caches]))
        for i in range(len(caches[0].layers))
    ]
    mask = torch.cat([padded(m, 1) for _, _, m, _ in parts])[back]
    last = torch.cat([h for *_, h in parts])[back]
    return cache_from(config, layers), mask, last


def _token_logprobs(logits: torch.Tensor, tok: int, k: int) -> dict:
    """The chosen token's log-probability under the model (before temperature) and the k best."""
    lp = torch.log_softmax(logits.float(), -1)
    top = lp.topk(k) if k else None
    return {
        "token": tok,
        "logprob": float(lp[tok]),
        "top": [(int(i), float(v)) for v, i in zip(top.values, top.indices)] if top is not None else [],
    }


def greedy(
    lm, tokenizer, prompts: list[list[int]], max_new: int, device, limits: list[int] | None = None, on_token=None
) -> list[list[int]]:
    """Greedy decoding of a batch: each row's tokens (see :func:`decode`)."""
    return [d.tokens for d in decode(lm, tokenizer, prompts, max_new, device, limits=limits, on_token=on_token)]


def beam_search(lm, tokenizer, prompt: list[int], max_new: int, K: int, length_penalty: float, device) -> list[int]:
    """Beam search for one prompt; scores are summed log-probs divided by length ** length_penalty."""
    ends = end_ids(tokenizer)
    ids, att = right_pad([prompt], 0, device)
    cache, mask, hidden = lm.start(ids, att)
    last = hidden[:, -1]  # (n_beams, H)
    pos = int(mask.sum())
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    finished: list[tuple[float, list[int]]] = []
    for step in range(max_new):
        lp = torch.log_softmax(lm.project(last).float(), -1)  # (n_beams, V)
        cand = torch.tensor([s for _, s in beams], device=device).unsqueeze(1) + lp
        top = cand.view(-1).topk(min(2 * K, cand.numel()))
        V = lp.shape[1]
        alive, origin = [], []
        for score, idx in zip(top.values.tolist(), top.indices.tolist()):
            b, tok = divmod(idx, V)
            if tok in ends:
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
        cache.reorder_cache(idx)  # rows follow their beams
        mask = torch.cat([mask[idx], torch.ones(len(alive), 1, dtype=mask.dtype, device=device)], dim=1)
        tokens = torch.tensor([[q[-1]] for q, _ in alive], device=device)
        last = lm.extend(tokens, mask, torch.full((len(alive), 1), pos + step, device=device), cache)[:, -1]
        beams = alive
    return max(finished, key=lambda t: t[0])[1]
