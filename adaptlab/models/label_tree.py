"""Label continuations as one token tree, and the exact top-1 search over it (public API).

Used by label scoring (:mod:`adaptlab.evaluation.scoring`) and by the serving engine's mixed
batches: both score many labels after each prompt through any :class:`DecoderLM`.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from adaptlab.models.arch import FULL_ATTENTION, SLIDING_ATTENTION, arch_facts


def _padded(rows: list[list[int]], device) -> torch.Tensor:
    out = torch.full((len(rows), max([len(r) for r in rows] + [1])), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
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
                key = tuple(ids[: k + 1])
                if key not in nodes:  # parents are created before their children
                    nodes[key] = len(token)
                    token.append(ids[k])
                    depth.append(k)
                    parent.append(nodes[tuple(ids[:k])] if k else -1)
                targets.append((nodes[key], j, ids[k + 1]))
        self.n = len(token)
        # For exact top-1 search: the node each target leads to (-1: it ends its label), every
        # node's targets and child nodes (padded with -1), and the labels of a single token.
        child = [
            nodes.get(tuple(label_ids[j][: k + 2]), -1) if k + 2 < len(label_ids[j]) else -1
            for j in range(len(label_ids))
            for k in range(len(label_ids[j]) - 1)
        ]
        by_node: list[list[int]] = [[] for _ in range(self.n)]
        kids: list[list[int]] = [[] for _ in range(self.n)]
        for t, (n, _, _) in enumerate(targets):
            by_node[n].append(t)
            if child[t] >= 0 and child[t] not in kids[n]:
                kids[n].append(child[t])
        self.node_targets = _padded(by_node, device)
        self.node_children = _padded(kids, device)
        self.t_child = torch.tensor(child, dtype=torch.long, device=device)
        self.single = torch.tensor(
            [j for j, ids in enumerate(label_ids) if len(ids) == 1], dtype=torch.long, device=device
        )
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


def _tree_masks(lm, cache, cmask: torch.Tensor, window: int | None, pos: torch.Tensor, node_ok: torch.Tensor):
    """The attention mask(s) for P new tree nodes per row after ``cache``: (B, P) positions ``pos``;
    ``node_ok`` (B, P, S + P) says which of the S node slots already in the cache, and of the P new
    ones, each new node sees (itself and its ancestors). A node also sees its prompt's valid slots
    (``cmask`` (B, C): the cache's first C slots), inside the window on sliding-window layers. A
    layer that keeps only its last slots (a sliding window) gets the mask over those."""
    B, C = cmask.shape
    P = pos.shape[1]
    hf = lm.hf_model()
    dtype = next(p for p in hf.parameters()).dtype
    neg = torch.finfo(dtype).min
    facts = arch_facts(hf.config)
    types = list(facts.layer_types)
    prompt_ok = cmask.bool().unsqueeze(1).expand(B, P, C)
    masks = {}
    for kind in set(types):
        kept = cache.layers[types.index(kind)].keys.shape[-2]  # slots this layer still holds
        ok = prompt_ok
        if kind == SLIDING_ATTENTION and window:
            ok = ok & (pos.unsqueeze(2) - torch.arange(C, device=cmask.device).view(1, 1, -1) < window)
        allowed = torch.cat([ok, node_ok], dim=2)[:, :, -(kept + P) :]
        masks[kind] = (
            torch.zeros(allowed.shape, dtype=dtype, device=cmask.device).masked_fill(~allowed, neg).unsqueeze(1)
        )
    # Models with several attention kinds (Gemma 3) take a mask per kind; the others one mask.
    return masks if facts.per_kind_masks else masks[FULL_ATTENTION]


def label_continuations(
    lm,
    trie: LabelTrie,
    cache,
    cmask: torch.Tensor,
    window: int | None,
    rows_per_pass: int,
    n_labels: int,
    device,
    logp0: torch.Tensor | None = None,
    first: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum over each label's tokens after the first of log p(token): returns (B, L) to add.

    With ``logp0`` (B, V) and ``first`` (L,) given, returns instead whole label scores from an exact
    top-1 search (:func:`top1_totals`): -inf for every label that provably cannot be the best; the
    tree's nodes then run through the model only when the search reaches them (:class:`NodeStates`).

    Why by hand: the obvious way repeats each prompt's key/value cache once per label (77 copies
    for Banking77), and copying those caches, not the maths, was what cost the time. Here every
    prompt row gets one extension holding all trie nodes (B, N), with a 4-D attention mask so a
    node sees the prompt (its valid cache slots) and its own ancestors only; a node's position is
    the prompt length + its depth, exactly where it sits in a single prompt + label sequence.
    """
    if logp0 is not None:
        states = NodeStates(lm, trie, cache, cmask, window)
        return top1_totals(lm, trie, states, logp0, first, n_labels, rows_per_pass)
    B = cmask.shape[0]
    N = trie.n
    pos = cmask.sum(1, keepdim=True) + trie.depth.unsqueeze(0)  # (B, N)
    mask_arg = _tree_masks(lm, cache, cmask, window, pos, trie.anc.unsqueeze(0).expand(B, N, N))
    h = lm.extend(trie.token.expand(B, N), mask_arg, pos, cache)  # (B, N, H)
    # LM head once per (prompt, node); only the next-token entries of the targets are kept.
    flat = h.reshape(B * N, -1)
    rows = (torch.arange(B, device=device).unsqueeze(1) * N + trie.t_node.unsqueeze(0)).reshape(-1)  # (B*T,)
    toks = trie.t_token.repeat(B)
    vals = torch.empty(rows.shape[0], device=device)
    for c0 in range(0, B * N, rows_per_pass):
        logits = lm.project(flat[c0 : c0 + rows_per_pass]).float()  # (R, V)
        lse = torch.logsumexp(logits, dim=-1)
        sel = ((rows >= c0) & (rows < c0 + rows_per_pass)).nonzero(as_tuple=True)[0]
        r = rows[sel] - c0
        vals[sel] = logits[r, toks[sel]] - lse[r]
    return torch.zeros(B, n_labels, device=device).index_add(1, trie.t_label, vals.view(B, -1))


class NodeStates:
    """Hidden states of trie nodes after each prompt, computed only when asked for.

    Why by hand: the top-1 search projects a handful of nodes per prompt, but running all of them
    through the model first (140 nodes for Banking77's 77 labels against a 15-token question) was
    most of a compare's scoring time. Here each call runs only the nodes asked for that are not yet
    known (padded to the same count per row), appending their keys and values to a copy of the
    prompts' cache (``cache`` itself is left as it was) whose layers never drop a slot: a
    sliding-window layer would drop the prompt's first slots once fillers and other branches pile
    up, so the masks keep each node inside its window instead. A node sees its prompt and the slots
    of its own ancestors, which the search always asks for first (a node's prefix score is known
    only once its parent was projected). The states are the ones the whole-tree extension gives, up
    to float rounding.
    """

    def __init__(self, lm, trie: LabelTrie, cache, cmask: torch.Tensor, window: int | None):
        from transformers import DynamicCache

        self.lm, self.trie, self.cmask, self.window = lm, trie, cmask, window
        self.cache = DynamicCache()
        self.cache.layers = [_SlotLayer(layer.keys, layer.values, room=trie.n) for layer in cache.layers]
        B = cmask.shape[0]
        self.plen = cmask.sum(1, keepdim=True)  # (B, 1) a node's position is this + its depth
        self.known = torch.zeros(B, trie.n, dtype=torch.bool, device=cmask.device)
        self.slot_node = torch.empty(B, 0, dtype=torch.long, device=cmask.device)  # appended slots' nodes (-1: filler)
        self.h: torch.Tensor | None = None  # (B, N, H) once the first nodes ran
        self.passes = 0

    def __call__(self, bs: torch.Tensor, ns: torch.Tensor) -> torch.Tensor:
        """(P,) rows and (P,) nodes -> (P, H) their hidden states."""
        need = ~self.known[bs, ns]
        if bool(need.any()):
            self._run(bs[need], ns[need])
        return self.h[bs, ns]

    def _run(self, bs: torch.Tensor, ns: torch.Tensor) -> None:
        trie, device = self.trie, self.cmask.device
        B = self.cmask.shape[0]
        order = torch.argsort(bs * trie.n + ns)
        bs, ns = bs[order], ns[order]
        counts = torch.bincount(bs, minlength=B)
        rank = torch.arange(len(bs), device=device) - (torch.cumsum(counts, 0) - counts)[bs]
        new = torch.full((B, int(counts.max())), -1, dtype=torch.long, device=device)
        new[bs, rank] = ns
        real = new >= 0
        node = new.clamp(min=0)
        slots = torch.cat([self.slot_node, new], dim=1)  # (B, S + P)
        ok = trie.anc[node.unsqueeze(2), slots.clamp(min=0).unsqueeze(1)]  # (B, P, S + P)
        ok = ok & real.unsqueeze(2) & (slots >= 0).unsqueeze(1)
        S = self.slot_node.shape[1]
        ok[:, :, S:] |= torch.eye(new.shape[1], dtype=torch.bool, device=device)  # a filler sees itself
        pos = self.plen + trie.depth[node]
        mask_arg = _tree_masks(self.lm, self.cache, self.cmask, self.window, pos, ok)
        h = self.lm.extend(trie.token[node], mask_arg, pos, self.cache)  # (B, P, H)
        if self.h is None:
            self.h = h.new_zeros(B, trie.n, h.shape[-1])
        self.h[bs, ns] = h[bs, rank]
        self.known[bs, ns] = True
        self.slot_node = slots
        self.passes += 1


class _SlotLayer(DynamicLayer):
    """A cache layer that appends into a buffer with room to spare instead of concatenating, and
    never drops a slot: :class:`NodeStates` appends a few slots per pass, a dozen passes a batch."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int):
        super().__init__()
        self.device, self.is_initialized, self.n = keys.device, True, keys.shape[-2]
        self.kbuf, self.vbuf = self._room(keys, room), self._room(values, room)
        self.keys, self.values = keys, values

    def _room(self, x: torch.Tensor, room: int) -> torch.Tensor:
        out = x.new_empty(*x.shape[:2], self.n + room, x.shape[-1])
        out[:, :, : self.n] = x[:, :, : self.n]
        return out

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        P = key_states.shape[-2]
        if self.n + P > self.kbuf.shape[-2]:  # grow by doubling
            self.kbuf, self.vbuf = self._room(self.kbuf, self.n + P), self._room(self.vbuf, self.n + P)
        self.kbuf[:, :, self.n : self.n + P] = key_states
        self.vbuf[:, :, self.n : self.n + P] = value_states
        self.n += P
        self.keys, self.values = self.kbuf[:, :, : self.n], self.vbuf[:, :, : self.n]
        return self.keys, self.values


# Slack on the bound, so that float rounding never prunes a label that ties the best one.
_TOP1_SLACK = 1e-4


def top1_totals(
    lm, trie: LabelTrie, states, logp0: torch.Tensor, first: torch.Tensor, n_labels: int, rows_per_pass: int
) -> torch.Tensor:
    """Whole label scores (B, L) for every label that can still be the argmax, -inf for the rest.

    Why by hand: accuracy and F1 need only the best label, and a label's score is a sum of token
    log-probabilities, each <= 0, so the score of a label prefix bounds every label through it.
    Branch and bound over the trie: first follow the best child from the best first token to a
    whole label (its score is a lower bound on the best), then go down the trie level by level,
    projecting only nodes whose prefix score reaches that bound and raising it as labels finish.
    With 77 Banking77 labels (140 trie nodes) a confident model projects a handful of nodes per
    example instead of 140, and each projection is a 262k-word LM-head row. The argmax is the one
    full scoring gives: labels within ``_TOP1_SLACK`` of the best are always finished, so only two
    labels equal to float rounding could come out in the other order. ``states(rows, nodes)`` gives
    the nodes' hidden states (:class:`NodeStates`).
    """
    B, N = logp0.shape[0], trie.n
    device = logp0.device
    neg = float("-inf")
    prefix = torch.full((B, N), neg, device=device)  # log p(node's label prefix), once known
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
            b, n = bs[c0 : c0 + rows_per_pass], ns[c0 : c0 + rows_per_pass]
            logits = lm.project(states(b, n)).float()  # (P, V)
            lse = torch.logsumexp(logits, dim=-1)
            t = trie.node_targets[n]  # (P, K), -1 padded
            ok = t >= 0
            tc = t.clamp(min=0)
            vals = logits.gather(1, trie.t_token[tc]) - lse.unsqueeze(1) + prefix[b, n].unsqueeze(1)
            p_idx, k_idx = ok.nonzero(as_tuple=True)
            tt, vv, bb = tc[p_idx, k_idx], vals[p_idx, k_idx], b[p_idx]
            child = trie.t_child[tt]
            goes = child >= 0
            prefix[bb[goes], child[goes]] = vv[goes]
            total[bb[~goes], trie.t_label[tt[~goes]]] = vv[~goes]

    best = total.max(1).values  # (B,) lower bound so far
    # Greedy descent: the best root, then the best child, until a label ends there.
    cur = roots[prefix[:, roots].argmax(1)]
    rows = torch.arange(B, device=device)
    active = prefix[rows, cur] >= best - _TOP1_SLACK
    while bool(active.any()):
        bs = rows[active]
        ns = cur[bs]
        expand(bs, ns)
        best = torch.maximum(best, total.max(1).values)
        kids = trie.node_children[ns]  # (P, C)
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
