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
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


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

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Encode prompts once: returns (cache, mask the cache covers (B, C), hidden (B, T, H))."""
        out = decoder(self.hf_model())(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
        return out.past_key_values, attention_mask, out.last_hidden_state

    def extend(self, input_ids, attention_mask, position_ids, cache) -> torch.Tensor:
        """Continue from ``cache`` (mask covers cache + new tokens): (B, S) -> (B, S, H)."""
        return decoder(self.hf_model())(input_ids=input_ids, attention_mask=attention_mask,
                                        position_ids=position_ids, past_key_values=cache).last_hidden_state


class PlainLM(torch.nn.Module, DecoderLM):
    """An unadapted causal LM."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def hf_model(self) -> torch.nn.Module:
        return self.model


def repeat_cache(cache, repeats: int, config):
    """A new cache with every row repeated ``repeats`` times (row i -> rows i*r .. i*r+r-1)."""
    from transformers import DynamicCache

    out = DynamicCache(config=config)
    for i, layer in enumerate(cache.layers):
        out.update(layer.keys.repeat_interleave(repeats, 0), layer.values.repeat_interleave(repeats, 0), i)
    return out


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module runs; one that holds no parameters right now (a detached LoRA) says so itself."""
    p = next(module.parameters(), None)
    return p.device if p is not None else module.device


def as_lm(model: torch.nn.Module) -> DecoderLM:
    return model if isinstance(model, DecoderLM) else PlainLM(model)


def target_token_logprobs(lm, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          target_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(token) at every target position: returns (rows (M,), logp (M,)).

    Token t is predicted by the hidden state at t-1, so ``target_mask[:, 0]`` must be False.
    Only the M target positions reach the LM head.
    """
    lm = as_lm(lm)
    hidden = lm.hidden(input_ids, attention_mask)          # (B, T, H)
    rows, cols = target_mask[:, 1:].nonzero(as_tuple=True)  # M target tokens at t = cols + 1
    logits = lm.project(hidden[rows, cols])                  # hidden at t-1 -> (M, V)
    logp = torch.log_softmax(logits.float(), dim=-1)
    return rows, logp.gather(1, input_ids[rows, cols + 1].unsqueeze(1)).squeeze(1)


def target_logprobs(lm, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    target_mask: torch.Tensor) -> torch.Tensor:
    """Sum of log p(token) over the tokens where ``target_mask`` is set, per row: (B,)."""
    rows, tok_logp = target_token_logprobs(lm, input_ids, attention_mask, target_mask)
    out = torch.zeros(input_ids.shape[0], dtype=tok_logp.dtype, device=tok_logp.device)
    return out.index_add(0, rows, tok_logp)


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
        ids[r, :len(x)] = torch.tensor(x)
        att[r, :len(x)] = 1
    return ids.to(device), att.to(device)


def _common_prefix(seqs: list[list[int]]) -> list[int]:
    first = seqs[0]
    n = len(first)
    for s in seqs[1:]:
        n = min(n, len(s))
        for k in range(n):
            if s[k] != first[k]:
                n = k
                break
    return first[:n]


def _encode_prompts(tokenizer, prompts: list[str], max_prompt_tokens: int) -> list[list[int]]:
    out = []
    for p in prompts:
        ids = tokenizer(p)["input_ids"]
        if len(ids) > max_prompt_tokens:  # keep the end of the prompt: it holds the question
            ids = ids[:1] + ids[-(max_prompt_tokens - 1):]
        out.append(ids)
    return out


def _padded(rows: list[list[int]], device) -> torch.Tensor:
    out = torch.full((len(rows), max([len(r) for r in rows] + [1])), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out.to(device)


class LabelTrie:
    """The label prefixes that are fed back in (every label token but the last), merged into a tree.

    Node n stands for a label prefix; ``token[n]`` is its last token, ``depth[n]`` its length - 1,
    ``anc[n, m]`` says m is n or an ancestor of n. ``targets`` lists (node, label, next token): the
    hidden state at a node predicts the next token of every label through it.
    """

    def __init__(self, label_ids: list[list[int]], device):
        nodes: dict[tuple, int] = {}
        parent, token, depth, targets = [], [], [], []
        for j, ids in enumerate(label_ids):
            for k in range(len(ids) - 1):
                key = tuple(ids[:k + 1])
                if key not in nodes:  # parents are created before their children
                    nodes[key] = len(token)
                    token.append(ids[k])
                    depth.append(k)
                    parent.append(nodes[tuple(ids[:k])] if k else -1)
                targets.append((nodes[key], j, ids[k + 1]))
        self.n = len(token)
        # For exact top-1 search: the node each target leads to (-1: it ends its label), every
        # node's targets and child nodes (padded with -1), and the labels of a single token.
        child = [nodes.get(tuple(label_ids[j][:k + 2]), -1) if k + 2 < len(label_ids[j]) else -1
                 for j in range(len(label_ids)) for k in range(len(label_ids[j]) - 1)]
        by_node: list[list[int]] = [[] for _ in range(self.n)]
        kids: list[list[int]] = [[] for _ in range(self.n)]
        for t, (n, _, _) in enumerate(targets):
            by_node[n].append(t)
            if child[t] >= 0 and child[t] not in kids[n]:
                kids[n].append(child[t])
        self.node_targets = _padded(by_node, device)
        self.node_children = _padded(kids, device)
        self.t_child = torch.tensor(child, dtype=torch.long, device=device)
        self.single = torch.tensor([j for j, ids in enumerate(label_ids) if len(ids) == 1], dtype=torch.long,
                                   device=device)
        anc = torch.zeros(self.n, self.n, dtype=torch.bool)
        for n in range(self.n):
            a = n
            while a >= 0:
                anc[n, a] = True
                a = parent[a]
        self.token = torch.tensor(token, dtype=torch.long, device=device)
        self.depth = torch.tensor(depth, dtype=torch.long, device=device)
        self.anc = anc.to(device)
        self.t_node = torch.tensor([t[0] for t in targets], dtype=torch.long, device=device)
        self.t_label = torch.tensor([t[1] for t in targets], dtype=torch.long, device=device)
        self.t_token = torch.tensor([t[2] for t in targets], dtype=torch.long, device=device)


def _continuations(lm, trie: LabelTrie, cache, cmask: torch.Tensor, window: int | None, rows_per_pass: int,
                   n_labels: int, device, logp0: torch.Tensor | None = None,
                   first: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over each label's tokens after the first of log p(token): returns (B, L) to add.

    With ``logp0`` (B, V) and ``first`` (L,) given, returns instead whole label scores from an exact
    top-1 search (:func:`_top1_totals`): -inf for every label that provably cannot be the best.

    Why by hand: the obvious way repeats each prompt's key/value cache once per label (77 copies
    for Banking77), and copying those caches, not the maths, was what cost the time. Here every
    prompt row gets one extension holding all trie nodes (B, N), with a 4-D attention mask so a
    node sees the prompt (its valid cache slots) and its own ancestors only; a node's position is
    the prompt length + its depth, exactly where it sits in a single prompt + label sequence.
    """
    B, C = cmask.shape
    N = trie.n
    hf = lm.hf_model()
    config = hf.config
    dtype = next(p for p in hf.parameters()).dtype
    pos = cmask.sum(1, keepdim=True) + trie.depth.unsqueeze(0)             # (B, N)
    neg = torch.finfo(dtype).min
    node_ok = trie.anc.unsqueeze(0).expand(B, N, N)
    masks = {}
    types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    for kind in set(types):
        layer = cache.layers[types.index(kind)]
        kept = layer.keys.shape[-2]                     # a sliding-window layer keeps only its last slots
        slot_pos = torch.arange(C - kept, C, device=device)
        ok = cmask[:, C - kept:].bool().unsqueeze(1).expand(B, N, kept)
        if kind == "sliding_attention" and window:
            ok = ok & (pos.unsqueeze(2) - slot_pos.view(1, 1, -1) < window)
        allowed = torch.cat([ok, node_ok], dim=2)                           # (B, N, kept + N)
        masks[kind] = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, neg).unsqueeze(1)
    h = lm.extend(trie.token.expand(B, N), masks, pos, cache)               # (B, N, H)
    if logp0 is not None:
        return _top1_totals(lm, trie, h, logp0, first, n_labels, rows_per_pass)
    # LM head once per (prompt, node); only the next-token entries of the targets are kept.
    flat = h.reshape(B * N, -1)
    rows = (torch.arange(B, device=device).unsqueeze(1) * N + trie.t_node.unsqueeze(0)).reshape(-1)  # (B*T,)
    toks = trie.t_token.repeat(B)
    vals = torch.empty(rows.shape[0], device=device)
    for c0 in range(0, B * N, rows_per_pass):
        logits = lm.project(flat[c0:c0 + rows_per_pass]).float()            # (R, V)
        lse = torch.logsumexp(logits, dim=-1)
        sel = ((rows >= c0) & (rows < c0 + rows_per_pass)).nonzero(as_tuple=True)[0]
        r = rows[sel] - c0
        vals[sel] = logits[r, toks[sel]] - lse[r]
    return torch.zeros(B, n_labels, device=device).index_add(1, trie.t_label, vals.view(B, -1))


# Slack on the bound, so that float rounding never prunes a label that ties the best one.
_TOP1_SLACK = 1e-4


def _top1_totals(lm, trie: LabelTrie, h: torch.Tensor, logp0: torch.Tensor, first: torch.Tensor, n_labels: int,
                 rows_per_pass: int) -> torch.Tensor:
    """Whole label scores (B, L) for every label that can still be the argmax, -inf for the rest.

    Why by hand: accuracy and F1 need only the best label, and a label's score is a sum of token
    log-probabilities, each <= 0, so the score of a label prefix bounds every label through it.
    Branch and bound over the trie: first follow the best child from the best first token to a
    whole label (its score is a lower bound on the best), then go down the trie level by level,
    projecting only nodes whose prefix score reaches that bound and raising it as labels finish.
    With 77 Banking77 labels (140 trie nodes) a confident model projects a handful of nodes per
    example instead of 140, and each projection is a 262k-word LM-head row. The argmax is the one
    full scoring gives: labels within ``_TOP1_SLACK`` of the best are always finished, so only two
    labels equal to float rounding could come out in the other order.
    """
    B, N = h.shape[:2]
    device = h.device
    neg = float("-inf")
    prefix = torch.full((B, N), neg, device=device)          # log p(node's label prefix), once known
    roots = (trie.depth == 0).nonzero(as_tuple=True)[0]
    prefix[:, roots] = logp0[:, trie.token[roots]]
    total = torch.full((B, n_labels), neg, device=device)
    if len(trie.single):
        total[:, trie.single] = logp0[:, first[trie.single]]
    done = torch.zeros(B, N, dtype=torch.bool, device=device)

    def expand(bs: torch.Tensor, ns: torch.Tensor) -> None:
        """Project nodes ``ns`` of rows ``bs``: their children's prefixes and their labels' totals."""
        done[bs, ns] = True
        for c0 in range(0, len(bs), rows_per_pass):
            b, n = bs[c0:c0 + rows_per_pass], ns[c0:c0 + rows_per_pass]
            logits = lm.project(h[b, n]).float()                              # (P, V)
            lse = torch.logsumexp(logits, dim=-1)
            t = trie.node_targets[n]                                          # (P, K), -1 padded
            ok = t >= 0
            tc = t.clamp(min=0)
            vals = logits.gather(1, trie.t_token[tc]) - lse.unsqueeze(1) + prefix[b, n].unsqueeze(1)
            p_idx, k_idx = ok.nonzero(as_tuple=True)
            tt, vv, bb = tc[p_idx, k_idx], vals[p_idx, k_idx], b[p_idx]
            child = trie.t_child[tt]
            goes = child >= 0
            prefix[bb[goes], child[goes]] = vv[goes]
            total[bb[~goes], trie.t_label[tt[~goes]]] = vv[~goes]

    best = total.max(1).values                                               # (B,) lower bound so far
    # Greedy descent: the best root, then the best child, until a label ends there.
    cur = roots[prefix[:, roots].argmax(1)]
    rows = torch.arange(B, device=device)
    active = prefix[rows, cur] >= best - _TOP1_SLACK
    while bool(active.any()):
        bs = rows[active]
        ns = cur[bs]
        expand(bs, ns)
        best = torch.maximum(best, total.max(1).values)
        kids = trie.node_children[ns]                                        # (P, C)
        kp = prefix[bs.unsqueeze(1), kids.clamp(min=0)].masked_fill(kids < 0, neg)
        kv, ki = kp.max(1)
        go = kv >= best[bs] - _TOP1_SLACK
        cur[bs] = kids[torch.arange(len(bs), device=device), ki]
        active = torch.zeros(B, dtype=torch.bool, device=device)
        active[bs[go]] = True
    # Level by level: every node whose prefix still reaches the best finished label.
    for d in range(int(trie.depth.max()) + 1):
        cand = (trie.depth == d).unsqueeze(0) & ~done & (prefix >= (best - _TOP1_SLACK).unsqueeze(1))
        bs, ns = cand.nonzero(as_tuple=True)
        if len(bs):
            expand(bs, ns)
            best = torch.maximum(best, total.max(1).values)
    return total


@torch.no_grad()
def score_labels(model: torch.nn.Module, tokenizer, prompts: list[str], label_texts: list[str],
                 batch_size: int = 8, max_prompt_tokens: int = 1024, rows_per_pass: int = 256,
                 min_shared_tokens: int = 8, top1: bool = False) -> torch.Tensor:
    """Log-probability of each label continuation after each prompt: returns (N, L).

    Multi-token labels score as the sum over their tokens. Three levels of reuse, all exact:
    the prompt prefix every example shares (instruction, label list, few-shot exemplars; at
    least ``min_shared_tokens`` long) is encoded once for the whole call; each prompt is encoded
    once, and all label continuations then run as one *token tree* after it (see
    :func:`_continuations`); and the LM head runs once per distinct (prompt, label prefix), so
    labels sharing first tokens share projections. Same numbers as :func:`score_labels_naive`.

    ``top1=True`` is for callers that need only the best label (accuracy, F1, predictions): every
    label that could be the argmax gets its exact score and the others -inf, found by an exact
    branch and bound (:func:`_top1_totals`) that skips most LM-head projections for many labels.
    """
    device = module_device(model)
    lm = as_lm(model)
    label_ids = encode_labels(tokenizer, label_texts)
    prompt_ids = _encode_prompts(tokenizer, prompts, max_prompt_tokens)
    pad = pad_id(tokenizer)
    L = len(label_ids)
    first = torch.tensor([ids[0] for ids in label_ids], device=device)
    trie = LabelTrie(label_ids, device)
    scores = torch.empty(len(prompts), L)
    config = lm.hf_model().config
    shared = _common_prefix(prompt_ids)[:min(len(p) for p in prompt_ids) - 1]  # leave >= 1 token per prompt
    if len(shared) < min_shared_tokens:
        shared = []
    if shared:  # encoded once for the whole call
        s_cache, s_mask, _ = lm.start(torch.tensor([shared], device=device),
                                      torch.ones(1, len(shared), dtype=torch.long, device=device))
    window = getattr(config, "sliding_window", None)
    extra = max(len(x) for x in label_ids) + len(shared) + lm.n_virtual
    for rows in length_batches([len(p) - len(shared) for p in prompt_ids], batch_size, window, extra):
        ids, att = right_pad([prompt_ids[i][len(shared):] for i in rows], pad, device)
        B, T = ids.shape
        if shared:
            cmask = torch.cat([s_mask.expand(B, -1), att], dim=1)
            cache = repeat_cache(s_cache, B, config)
            pos = s_mask.sum() + torch.arange(T, device=device).expand(B, -1)
            hidden = lm.extend(ids, cmask, pos, cache)                 # (B, T, H), rest of each prompt
        else:
            cache, cmask, hidden = lm.start(ids, att)                  # hidden: (B, T, H)
        last = hidden[torch.arange(B, device=device), att.sum(1) - 1]  # (B, H) predicts label token 0
        logp0 = torch.log_softmax(lm.project(last).float(), dim=-1)    # one projection per prompt
        if top1 and trie.n:
            total = _continuations(lm, trie, cache, cmask, window, rows_per_pass, L, device, logp0, first)
        else:
            total = logp0[:, first].clone()                            # (B, L)
            if trie.n:  # every label token after the first, all labels at once
                total += _continuations(lm, trie, cache, cmask, window, rows_per_pass, L, device)
        for r, i in enumerate(rows):
            scores[i] = total[r].cpu()
    return scores


@torch.no_grad()
def score_labels_naive(model: torch.nn.Module, tokenizer, prompts: list[str], label_texts: list[str],
                 batch_size: int = 32, max_prompt_tokens: int = 1024) -> torch.Tensor:
    """Reference implementation: one full forward pass per (prompt, label) pair, (N, L).

    Kept for tests and for ``bench/prompt_inference.py``; :func:`score_labels` gives the same
    numbers with the prompt encoded once per example.
    """
    device = module_device(model)
    model = as_lm(model)
    label_ids = encode_labels(tokenizer, label_texts)
    prompt_ids = _encode_prompts(tokenizer, prompts, max_prompt_tokens)
    pairs = [(i, j) for i in range(len(prompts)) for j in range(len(label_texts))]
    pairs.sort(key=lambda ij: len(prompt_ids[ij[0]]) + len(label_ids[ij[1]]))
    scores = torch.empty(len(prompts), len(label_texts))
    pad = pad_id(tokenizer)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        seqs = [prompt_ids[i] + label_ids[j] for i, j in chunk]
        T = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), T), pad, dtype=torch.long)
        att = torch.zeros((len(seqs), T), dtype=torch.long)
        tgt = torch.zeros((len(seqs), T), dtype=torch.bool)
        for r, ((i, j), s) in enumerate(zip(chunk, seqs)):
            ids[r, :len(s)] = torch.tensor(s)
            att[r, :len(s)] = 1
            tgt[r, len(prompt_ids[i]):len(s)] = True
        lp = target_logprobs(model, ids.to(device), att.to(device), tgt.to(device)).cpu()
        for r, (i, j) in enumerate(chunk):
            scores[i, j] = lp[r]
    return scores


@dataclass
class ScoredPredictions:
    predictions: list[str]
    scores: torch.Tensor         # (N, L) label log-probabilities
    seconds: float
    prompt_tokens: float         # mean prompt tokens per example

    @property
    def examples_per_s(self) -> float:
        return len(self.predictions) / self.seconds if self.seconds > 0 else float("inf")


def predict_labels(model, tokenizer, prompts: list[str], labels: list[str], label_texts: list[str],
                   batch_size: int = 32) -> ScoredPredictions:
    """Best-scoring label for each prompt; the output is always one of ``labels``."""
    t0 = time.perf_counter()
    scores = score_labels(model, tokenizer, prompts, label_texts, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    best = scores.argmax(dim=1).tolist()
    n_tok = sum(len(tokenizer(p)["input_ids"]) for p in prompts) / max(1, len(prompts))
    return ScoredPredictions([labels[b] for b in best], scores, seconds, n_tok)
