"""Mixed batches: rows for different adaptations of one base model in the same forward pass.

Written by hand because no library does all of this on a model whose LM head we must not run
everywhere: PEFT's mixed-adapter batches (``adapter_names=``) cover LoRA only and go through the
full-vocabulary ``forward``; vLLM/LoRAX do LoRA per row but no soft prompts or prefixes.

Per row of a batch: the row's own prompt text (hard prompts, templates), and its adapter's
contribution applied by :class:`adaptlab.models.adaptation.AdaptedLM` (virtual tokens, prefix
keys/values, LoRA deltas on its own rows only; the base weights are shared and untouched).

Static leads (:func:`build_lead`, :func:`with_leads`): what every request of one adaptation
starts with (a prefix's keys/values, the soft prompt, the instruction and fixed exemplars of its
template) is run once when the adaptation is first served and kept as keys/values; a row whose
prompt starts with those tokens then becomes a prefix row holding the lead, plus its own tokens.
This is prefix caching (vLLM and SGLang do it for hard prompts) extended to soft prompts and
LoRA-adapted keys/values; a mixed batch then pays only each row's own tokens, and padding a
batch to its longest lead costs attention slots, not whole forward positions.
The label tree and greedy decoding are the model runtime's (:mod:`adaptlab.models.label_tree`,
:mod:`adaptlab.models.decoding`); they only see ``start``/``extend``/``project``.
"""

from __future__ import annotations

import dataclasses
import json

import torch

from adaptlab.models.adaptation import AdaptedLM, Contribution
from adaptlab.models.arch import arch_facts
from adaptlab.models.decoding import Decoded, Sampling, decode
from adaptlab.models.label_tree import LabelTrie, label_continuations
from adaptlab.models.runtime import common_prefix, encode_labels, encode_prompts, pad_id, right_pad
from adaptlab.serving.adapters import ServingAdapter


def mixed_lm(model: torch.nn.Module, adapters: list[ServingAdapter]) -> AdaptedLM:
    """One forward pass for rows of several adapters on the same weights (``model``)."""
    return AdaptedLM(model, [a.contribution for a in adapters])


@dataclasses.dataclass
class Lead:
    """An adaptation's static lead: the prompt tokens it covers and the adapter to use instead.

    ``view`` is the adapter with the lead's keys/values as its prefix (no soft prompt: it is in
    the lead), LoRA and everything else unchanged; rows using it drop ``ids`` from their prompt.
    """

    ids: list[int]
    view: ServingAdapter

    @property
    def nbytes(self) -> int:
        kv = self.view.contribution.prefix
        return kv.numel() * kv.element_size()


PROBES = ("a", "Z z")  # two inputs that share no first token: the rendered prompts agree up to the input


@torch.no_grad()
def build_lead(
    model: torch.nn.Module,
    tokenizer,
    adapter: ServingAdapter,
    window: int | None,
    max_prompt_tokens: int,
    min_tokens: int = 4,
) -> Lead | None:
    """Run ``adapter``'s static lead once; None when it has none worth keeping (< ``min_tokens``
    positions beyond its prefix) or when it would not fit a sliding window.

    The lead's tokens are the common start of the prompts rendered for :data:`PROBES`, less the
    last token (the template's last token before the input can merge with the input's first
    characters; :func:`with_leads` checks each row's tokens anyway, so a guess too long only
    loses cache hits, never changes a result).
    """
    texts = list(PROBES)
    if adapter.conversation:  # its inputs are conversations: probe with one user turn each
        texts = [json.dumps([{"role": "user", "content": t}]) for t in texts]
    probes = encode_prompts(tokenizer, adapter.render(texts), max_prompt_tokens)
    ids = common_prefix(probes)[:-1]
    covered = adapter.prefix_len + adapter.soft_len + len(ids)
    if covered - adapter.prefix_len < min_tokens or (window is not None and covered >= window):
        return None
    lm = mixed_lm(model, [adapter])
    device = lm.device
    t = torch.tensor([ids], dtype=torch.long, device=device)
    cache, _, _ = lm.start(t, torch.ones_like(t))
    if any(layer.keys.shape[-2] != covered for layer in cache.layers):
        return None  # a sliding-window layer kept fewer slots than the lead has
    kv = torch.stack([x for layer in cache.layers for x in (layer.keys[0], layer.values[0])])  # (L*2, kv, C, hd)
    c = adapter.contribution
    view = dataclasses.replace(
        adapter, contribution=Contribution(prefix=kv.clone(), lora=c.lora, model=c.model), lead=None
    )
    return Lead(ids=ids, view=view)


def with_leads(adapters: list[ServingAdapter], prompt_ids: list[list[int]]):
    """Each row whose prompt starts with its adapter's lead (and goes on past it): the lead view
    and the rest of its tokens; other rows unchanged. Returns (adapters, prompt ids)."""
    ads, ids = [], []
    for ad, x in zip(adapters, prompt_ids):
        lead = ad.lead
        n = len(lead.ids) if lead is not None else 0
        if lead is not None and len(x) > n and x[:n] == lead.ids:
            ads.append(lead.view)
            ids.append(x[n:])
        else:
            ads.append(ad)
            ids.append(x)
    return ads, ids


def encode_rows(tokenizer, adapters: list[ServingAdapter], texts: list[str], max_prompt_tokens: int):
    """Render each row's prompt with its adapter and tokenize: list of token id lists."""
    prompts = [ad.render([t])[0] for ad, t in zip(adapters, texts)]
    return encode_prompts(tokenizer, prompts, max_prompt_tokens)


@torch.no_grad()
def classify_rows(
    lm: AdaptedLM, tokenizer, prompt_ids: list[list[int]], adapters: list[ServingAdapter], rows_per_pass: int = 256
) -> list[torch.Tensor]:
    """Label log-probabilities for each row over its own adapter's label set: list of (L_r,).

    Rows may belong to tasks with different label sets: the union of all label sequences goes
    into one label tree, every row is scored against all of it, and each row keeps its own.
    """
    device = lm.device
    union: dict[tuple, int] = {}
    row_cols = []
    for ad in adapters:
        if not ad.label_texts:
            raise ValueError(f"{ad.name}: not a classification adapter")
        cols = []
        for ids in encode_labels(tokenizer, ad.label_texts):
            cols.append(union.setdefault(tuple(ids), len(union)))
        row_cols.append(cols)
    label_ids = [list(k) for k in union]
    ids, att = right_pad(prompt_ids, pad_id(tokenizer), device)
    B = ids.shape[0]
    cache, cmask, hidden = lm.start(ids, att)
    last = hidden[torch.arange(B, device=device), att.sum(1) - 1]  # (B, H)
    logp0 = torch.log_softmax(lm.project(last).float(), dim=-1)
    first = torch.tensor([x[0] for x in label_ids], device=device)
    total = logp0[:, first].clone()  # (B, U)
    trie = LabelTrie(label_ids, device)
    if trie.n:
        window = arch_facts(lm.model).sliding_window
        total += label_continuations(lm, trie, cache, cmask, window, rows_per_pass, len(label_ids), device)
    return [total[r, cols].cpu() for r, cols in enumerate(row_cols)]


@torch.no_grad()
def generate_rows(
    lm: AdaptedLM,
    tokenizer,
    prompt_ids: list[list[int]],
    max_new: list[int],
    on_token=None,
    sampling: list[Sampling] | None = None,
    stops: list[list[str]] | None = None,
) -> list[Decoded]:
    """Continue every row up to its own ``max_new`` tokens, end token or stop text, with its own sampling."""
    return decode(
        lm,
        tokenizer,
        prompt_ids,
        max(max_new),
        lm.device,
        limits=max_new,
        on_token=on_token,
        sampling=sampling,
        stops=stops,
    )


# A decode step costs a batch about what this many prompt positions cost in its first pass: on a CPU
# a step of a few rows reads every weight once, as a prompt of ~32 tokens does (Gemma 3 270M, fp32,
# 2 cores). Splitting a generation batch in two repeats every decode step, so padding is the
# cheaper waste until it exceeds this many positions per step (bench/serving_llamacpp_http.py: 16
# clients of E2E generation fell into batches of 6 rows on the padding rule alone).
STEP_POSITIONS = 32


def plan_batches(
    adapters: list[ServingAdapter],
    prompt_ids: list[list[int]],
    extra: list[int],
    window: int | None,
    max_batch: int,
    pad_slack: float = 0.25,
    min_rows: int = 4,
    decode: bool = False,
) -> list[list[int]]:
    """Split rows that share weights into batches that give exactly the one-at-a-time numbers.

    Right padding is exact while the batch's whole layout fits the sliding window: the longest
    prefix + the longest soft prompt and prompt + the most tokens added after it. (A padded slot
    counts as distance for a sliding-window layer, so a short row's new tokens sit as far from
    its prompt as the batch is wide.) A row that alone exceeds the window may only share a batch
    with rows laid out exactly like it (same prefix length, same soft prompt + prompt length).
    Rows of very different lengths go to different batches (``pad_slack``, ``min_rows``); with
    ``decode`` (``extra`` are decode steps), only when the padding wastes more positions than the
    repeated decode steps of another batch would cost (:data:`STEP_POSITIONS`).
    """
    short: list[int] = []
    long: dict[tuple, list[int]] = {}
    for i, (ad, ids) in enumerate(zip(adapters, prompt_ids)):
        span = ad.prefix_len + ad.soft_len + len(ids) + extra[i]
        if window is None or span <= window:
            short.append(i)
        else:
            long.setdefault((ad.prefix_len, ad.soft_len + len(ids)), []).append(i)
    batches: list[list[int]] = []
    cur: list[int] = []
    wide = (0, 0, 0)  # the batch's longest prefix, soft prompt + prompt, added tokens
    used = 0  # positions the batch's rows need (before padding)
    for i in sorted(short, key=lambda i: adapters[i].soft_len + len(prompt_ids[i])):
        row = (adapters[i].prefix_len, adapters[i].soft_len + len(prompt_ids[i]), extra[i])
        grown = tuple(max(a, b) for a, b in zip(wide, row))
        # Every row of a batch runs as long as its longest one: past ``min_rows`` rows, start a new
        # batch rather than pad the rows so far by more than ``pad_slack`` of what they need
        # (rows come shortest first, so the new row is the longest). On CPU a forward pass costs
        # what its padded positions cost, so this is time saved, not only memory.
        waste = (len(cur) + 1) * row[1] - (used + row[1])
        padded_too_much = len(cur) >= min_rows and waste > pad_slack * (used + row[1])
        if decode and padded_too_much:
            padded_too_much = waste > STEP_POSITIONS * grown[2]
        if cur and (len(cur) == max_batch or padded_too_much or (window is not None and sum(grown) > window)):
            batches.append(cur)
            cur, grown, used = [], row, 0
        cur.append(i)
        used += row[1]
        wide = grown
    if cur:
        batches.append(cur)
    for group in long.values():
        batches += [group[s : s + max_batch] for s in range(0, len(group), max_batch)]
    return batches
