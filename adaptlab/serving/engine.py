"""Mixed batches: rows for different adaptations of one base model in the same forward pass.

Written by hand because no library does all of this on a model whose LM head we must not run
everywhere: PEFT's mixed-adapter batches (``adapter_names=``) cover LoRA only and go through the
full-vocabulary ``forward``; vLLM/LoRAX do LoRA per row but no soft prompts or prefixes.

Per row of a batch (``MixedLM``):
- hard prompts and templates: the row's own prompt text (trivially mixed);
- soft prompt: the row's virtual tokens go before its input embeddings, ``[soft_i; tokens_i; pad]``;
- prefix: the row's keys/values fill the first slots of a pre-filled cache, other rows' slots
  there are masked out; positions are given per row (``prefix_i + t``) so a prefix row sees
  exactly the positions it was trained with;
- LoRA: forward hooks on the target linears add ``(x_r A^T) B^T * alpha/r`` to the rows of each
  adapter (the base weights are shared, untouched);
- plain base rows get none of these.

Static leads (:func:`build_lead`, :func:`with_leads`): what every request of one adaptation
starts with (a prefix's keys/values, the soft prompt, the instruction and fixed exemplars of its
template) is run once when the adaptation is first served and kept as keys/values; a row whose
prompt starts with those tokens then becomes a prefix row holding the lead, plus its own tokens.
This is prefix caching (vLLM and SGLang do it for hard prompts) extended to soft prompts and
LoRA-adapted keys/values; a mixed batch then pays only each row's own tokens, and padding a
batch to its longest lead costs attention slots, not whole forward positions.
Scoring and greedy decoding are the shared ones (:mod:`adaptlab.evaluation.scoring`,
:mod:`adaptlab.evaluation.generation`); they only see ``start``/``extend``/``project``.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch

from adaptlab.evaluation.scoring import DecoderLM, LabelTrie, _common_prefix, _continuations, _encode_prompts, decoder
from adaptlab.evaluation.scoring import encode_labels
from adaptlab.evaluation.scoring import pad_id, project, right_pad
from adaptlab.serving.adapters import ServingAdapter


class LoraHooks:
    """Forward hooks that add per-row LoRA deltas to a model's linears while a batch is active."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.handles: dict[str, torch.utils.hooks.RemovableHandle] = {}
        self.groups: list[tuple[torch.Tensor, dict]] = []   # (row indices, {module: (A, B, s)})

    def ensure(self, modules) -> None:
        for name in modules:
            if name not in self.handles:
                try:
                    mod = self.model.get_submodule(name)
                except AttributeError:
                    raise ValueError(f"LoRA target {name} not found in the base model") from None
                self.handles[name] = mod.register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        def add_delta(mod, args, out):
            if not self.groups:
                return None
            x = args[0]                                                  # (B, T, in)
            for rows, parts in self.groups:
                w = parts.get(name)
                if w is None:
                    continue
                a, b, s = w
                out[rows] = out[rows] + (x[rows] @ a.T.to(x.dtype)) @ b.T.to(x.dtype) * s   # (b, T, out)
            return out
        return add_delta

    @contextlib.contextmanager
    def active(self, adapters: list[ServingAdapter], device):
        by_key: dict[str, list[int]] = {}
        parts: dict[str, dict] = {}
        for r, ad in enumerate(adapters):
            if ad.lora:
                by_key.setdefault(ad.key, []).append(r)
                parts[ad.key] = ad.lora
        self.groups = [(torch.tensor(rows, device=device), parts[k]) for k, rows in by_key.items()]
        try:
            yield
        finally:
            self.groups = []


class MixedLM(DecoderLM):
    """A batch of rows, each with its own adapter, on one set of weights (``model``)."""

    def __init__(self, model: torch.nn.Module, hooks: LoraHooks | None, adapters: list[ServingAdapter]):
        self.model = model
        self.hooks = hooks
        self.adapters = adapters
        self.device = next(model.parameters()).device
        self.soft = torch.tensor([a.soft_len for a in adapters], device=self.device)      # (B,)
        self.prefix = torch.tensor([a.prefix_len for a in adapters], device=self.device)  # (B,)
        if hooks is None and any(a.lora for a in adapters):
            raise ValueError("LoRA rows need the base weights")
        if hooks is not None:
            hooks.ensure({m for a in adapters for m in a.lora})

    @property
    def n_virtual(self) -> int:
        return int((self.soft + self.prefix).max()) if len(self.adapters) else 0

    def hf_model(self):
        return self.model

    def _ctx(self):
        return self.hooks.active(self.adapters, self.device) if self.hooks is not None else contextlib.nullcontext()

    def _prefix_cache(self, B: int):
        """A cache whose first ``Pmax`` slots hold each prefix row's keys/values, (B, Pmax) mask."""
        from transformers import DynamicCache

        Pmax = int(self.prefix.max())
        if Pmax == 0:
            return None, None
        config = self.model.config
        dtype = next(self.model.parameters()).dtype
        cache = DynamicCache(config=config)
        first = next(a.prefix for a in self.adapters if a.prefix is not None)
        kv = torch.zeros((B,) + tuple(first.shape[:2]) + (Pmax, first.shape[3]), dtype=dtype, device=self.device)
        mask = torch.zeros(B, Pmax, dtype=torch.long, device=self.device)
        for r, a in enumerate(self.adapters):
            if a.prefix is not None:
                P = a.prefix.shape[2]
                kv[r, :, :, :P] = a.prefix.to(device=self.device, dtype=dtype)     # (L*2, kv, P, hd)
                mask[r, :P] = 1
        for i in range(config.num_hidden_layers):
            cache.update(kv[:, 2 * i], kv[:, 2 * i + 1], i)                        # (B, kv, Pmax, hd) each
        return cache, mask

    def _inputs(self, input_ids, attention_mask):
        """``[soft_i; tokens_i; pad]`` embeddings (B, S, H) and their mask, S = max(soft_i + T_i)."""
        emb = self.model.get_input_embeddings()(input_ids)                        # (B, T, H)
        if not bool(self.soft.any()):
            return emb, attention_mask
        B, T, H = emb.shape
        lens = attention_mask.sum(1)
        S = int((self.soft + lens).max())
        x = emb.new_zeros(B, S, H)
        mask = attention_mask.new_zeros(B, S)
        for r, a in enumerate(self.adapters):
            p, n = a.soft_len, int(lens[r])
            if p:
                x[r, :p] = a.soft.to(device=emb.device, dtype=emb.dtype)
            x[r, p:p + n] = emb[r, :n]
            mask[r, :p + n] = 1
        return x, mask

    def start(self, input_ids, attention_mask):
        B, T = input_ids.shape
        x, mask = self._inputs(input_ids, attention_mask)                          # (B, S, H), (B, S)
        cache, pmask = self._prefix_cache(B)
        S = x.shape[1]
        pos = self.prefix.unsqueeze(1) + torch.arange(S, device=self.device).unsqueeze(0)   # (B, S)
        full_mask = mask if pmask is None else torch.cat([pmask, mask], dim=1)
        with self._ctx():
            out = decoder(self.model)(inputs_embeds=x, attention_mask=full_mask, position_ids=pos,
                                      past_key_values=cache, use_cache=True)
        h = out.last_hidden_state                                                   # (B, S, H)
        # Back to positions aligned with input_ids: row r's token t sits at soft_r + t.
        idx = (self.soft.unsqueeze(1) + torch.arange(T, device=self.device).unsqueeze(0)).clamp(max=S - 1)
        hidden = h.gather(1, idx.unsqueeze(-1).expand(-1, -1, h.shape[-1]))         # (B, T, H)
        return out.past_key_values, full_mask, hidden

    def hidden(self, input_ids, attention_mask):
        return self.start(input_ids, attention_mask)[2]

    def extend(self, input_ids, attention_mask, position_ids, cache):
        with self._ctx():
            return decoder(self.model)(input_ids=input_ids, attention_mask=attention_mask,
                                       position_ids=position_ids, past_key_values=cache).last_hidden_state

    def project(self, hidden):
        return project(self.model, hidden)


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
        kv = self.view.prefix
        return kv.numel() * kv.element_size()


PROBES = ("a", "Z z")   # two inputs that share no first token: the rendered prompts agree up to the input


@torch.no_grad()
def build_lead(model: torch.nn.Module, hooks: LoraHooks | None, tokenizer, adapter: ServingAdapter,
               window: int | None, max_prompt_tokens: int, min_tokens: int = 4) -> Lead | None:
    """Run ``adapter``'s static lead once; None when it has none worth keeping (< ``min_tokens``
    positions beyond its prefix) or when it would not fit a sliding window.

    The lead's tokens are the common start of the prompts rendered for :data:`PROBES`, less the
    last token (the template's last token before the input can merge with the input's first
    characters; :func:`with_leads` checks each row's tokens anyway, so a guess too long only
    loses cache hits, never changes a result).
    """
    probes = _encode_prompts(tokenizer, adapter.render(list(PROBES)), max_prompt_tokens)
    ids = _common_prefix(probes)[:-1]
    covered = adapter.prefix_len + adapter.soft_len + len(ids)
    if covered - adapter.prefix_len < min_tokens or (window is not None and covered >= window):
        return None
    lm = MixedLM(model, hooks, [adapter])
    device = lm.device
    t = torch.tensor([ids], dtype=torch.long, device=device)
    cache, _, _ = lm.start(t, torch.ones_like(t))
    if any(layer.keys.shape[-2] != covered for layer in cache.layers):
        return None   # a sliding-window layer kept fewer slots than the lead has
    kv = torch.stack([x for layer in cache.layers for x in (layer.keys[0], layer.values[0])])   # (L*2, kv, C, hd)
    view = dataclasses.replace(adapter, soft=None, prefix=kv.clone(), lead=None)
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
    return _encode_prompts(tokenizer, prompts, max_prompt_tokens)


@torch.no_grad()
def classify_rows(lm: MixedLM, tokenizer, prompt_ids: list[list[int]], rows_per_pass: int = 256) -> list[torch.Tensor]:
    """Label log-probabilities for each row over its own adapter's label set: list of (L_r,).

    Rows may belong to tasks with different label sets: the union of all label sequences goes
    into one label tree, every row is scored against all of it, and each row keeps its own.
    """
    device = lm.device
    union: dict[tuple, int] = {}
    row_cols = []
    for ad in lm.adapters:
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
    last = hidden[torch.arange(B, device=device), att.sum(1) - 1]                   # (B, H)
    logp0 = torch.log_softmax(lm.project(last).float(), dim=-1)
    first = torch.tensor([x[0] for x in label_ids], device=device)
    total = logp0[:, first].clone()                                                 # (B, U)
    trie = LabelTrie(label_ids, device)
    if trie.n:
        window = getattr(lm.model.config, "sliding_window", None)
        total += _continuations(lm, trie, cache, cmask, window, rows_per_pass, len(label_ids), device)
    return [total[r, cols].cpu() for r, cols in enumerate(row_cols)]


@torch.no_grad()
def generate_rows(lm: MixedLM, tokenizer, prompt_ids: list[list[int]], max_new: list[int],
                  on_token=None) -> list[list[int]]:
    """Greedy continuation of every row up to its own ``max_new`` tokens or EOS."""
    from adaptlab.evaluation.generation import _greedy

    return _greedy(lm, tokenizer, prompt_ids, max(max_new), lm.device, limits=max_new, on_token=on_token)


def plan_batches(adapters: list[ServingAdapter], prompt_ids: list[list[int]], extra: list[int],
                 window: int | None, max_batch: int) -> list[list[int]]:
    """Split rows that share weights into batches that give exactly the one-at-a-time numbers.

    Right padding is exact while the batch's whole layout fits the sliding window: the longest
    prefix + the longest soft prompt and prompt + the most tokens added after it. (A padded slot
    counts as distance for a sliding-window layer, so a short row's new tokens sit as far from
    its prompt as the batch is wide.) A row that alone exceeds the window may only share a batch
    with rows laid out exactly like it (same prefix length, same soft prompt + prompt length).
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
    for i in sorted(short, key=lambda i: adapters[i].soft_len + len(prompt_ids[i])):
        row = (adapters[i].prefix_len, adapters[i].soft_len + len(prompt_ids[i]), extra[i])
        grown = tuple(max(a, b) for a, b in zip(wide, row))
        if cur and (len(cur) == max_batch or (window is not None and sum(grown) > window)):
            batches.append(cur)
            cur, grown = [], row
        cur.append(i)
        wide = grown
    if cur:
        batches.append(cur)
    for group in long.values():
        batches += [group[s:s + max_batch] for s in range(0, len(group), max_batch)]
    return batches
