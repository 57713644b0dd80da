"""Adaptations applied around a forward pass of an untouched base model (public API).

Every adaptation kind contributes some of four things to a forward pass (:class:`Contribution`):
virtual tokens before the input embeddings (soft prompt), keys/values in front of every
attention layer's context (prefix / P-tuning v2), low-rank deltas on linear layers (LoRA), or a
set of weights of its own (full fine-tuning). Hard prompts contribute only text, which is the
artifact's business, not the model's.

:class:`AdaptedLM` runs a model with contributions applied, either one for every row (training,
evaluation) or one per row (the server's mixed batches). LoRA deltas are forward hooks
registered when a forward pass starts and removed when it ends (:func:`lora_applied`, as PEFT's
``_enable_peft_forward_hooks`` does for its mixed batches), so the base model is never changed
and any number of adaptations share it with no bookkeeping. One mechanism serves training
(the deltas are the trained parameters, gradients flow through the hooks), evaluation and
serving.

Why by hand rather than PEFT's injected layers: PEFT changes the model in place
(``get_peft_model``), which made every other user of the shared base remember to take the
layers out again, and its mixed batches cover LoRA only. PEFT stays the file format.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from adaptlab.models.runtime import CACHE, DecoderLM, cache_from, cache_of, decoder, project, with_cache


@dataclass(frozen=True)
class LoraDelta:
    """``W x + B (A dropout(x)) * scale`` for one linear layer."""

    a: torch.Tensor  # (r, in)
    b: torch.Tensor  # (out, r)
    scale: float  # alpha / r
    dropout: float = 0.0  # on the LoRA input; 0 outside training


@dataclass
class Contribution:
    """What one adaptation adds to a forward pass of the base model (all parts optional)."""

    soft: torch.Tensor | None = None  # (P, H) virtual-token embeddings before the input
    prefix: torch.Tensor | None = None  # (layers * 2, kv_heads, P, head_dim), key and value per layer
    lora: dict[str, LoraDelta] = field(default_factory=dict)  # linear module name -> delta
    model: torch.nn.Module | None = None  # weights of its own (full fine-tune); None: the base model's

    @property
    def soft_len(self) -> int:
        return 0 if self.soft is None else self.soft.shape[0]

    @property
    def prefix_len(self) -> int:
        return 0 if self.prefix is None else self.prefix.shape[2]

    @property
    def n_virtual(self) -> int:
        """Positions the adaptation puts before the prompt."""
        return self.soft_len + self.prefix_len

    @property
    def empty(self) -> bool:
        return self.soft is None and self.prefix is None and not self.lora and self.model is None

    def frozen(self) -> Contribution:
        """A copy that no training can change (detached, cloned tensors; the same private weights)."""

        def fix(t):
            return None if t is None else t.detach().clone()

        lora = {n: dataclasses.replace(d, a=fix(d.a), b=fix(d.b), dropout=0.0) for n, d in self.lora.items()}
        return Contribution(soft=fix(self.soft), prefix=fix(self.prefix), lora=lora, model=self.model)

    @property
    def nbytes(self) -> int:
        ts = [t for t in (self.soft, self.prefix) if t is not None]
        ts += [t for d in self.lora.values() for t in (d.a, d.b)]
        n = sum(t.numel() * t.element_size() for t in ts)
        if self.model is not None:
            n += sum(p.numel() * p.element_size() for p in self.model.parameters())
        return n


def _adder(parts: list[tuple[torch.Tensor | None, LoraDelta]]):
    # In place on the linear's fresh output: nothing has read it yet, and a linear's backward does
    # not need its output, so autograd stays exact; a copy of the whole (B, T, out) tensor per
    # target and adapter was the cost of an out-of-place add in mixed batches.
    def add_deltas(mod, args, out):
        x = args[0]  # (B, T, in)
        for rows, d in parts:
            a, b = d.a.to(x.dtype), d.b.to(x.dtype)
            if rows is None:  # every row
                h = F.dropout(x, d.dropout) if d.dropout else x
                out.add_(F.linear(F.linear(h, a), b), alpha=d.scale)  # (B, T, out)
            else:  # this adapter's rows only
                out.index_add_(0, rows, F.linear(F.linear(x[rows], a), b), alpha=d.scale)
        return out

    return add_deltas


@contextlib.contextmanager
def lora_applied(model: torch.nn.Module, groups: list[tuple[torch.Tensor | None, dict[str, LoraDelta]]]):
    """Add LoRA deltas to ``model``'s linears while the context is open: each group's deltas act on
    its rows (None: all rows). The hooks are removed on exit, whatever happens inside."""
    by_module: dict[str, list] = {}
    for rows, deltas in groups:
        for name, d in deltas.items():
            by_module.setdefault(name, []).append((rows, d))
    with hooks_applied(model, {name: _adder(parts) for name, parts in by_module.items()}):
        yield


class _Packed:
    """Every adapter's LoRA delta on one linear layer, packed for a mixed batch: rows of different
    adapters in two matrix products, whatever the number of adapters.

    The adapters' ``A`` matrices are stacked along the rank axis (``sum r`` rows) and their ``B``
    matrices side by side; a (B, 1, sum r) mask keeps, for each row, its own adapter's ranks (times
    its scale) and zeroes the others', so ``out += ((x A^T) * mask) B^T`` adds each row's own delta.
    This is the segmented product of Punica's and S-LoRA's kernels (vLLM's ``punica_wrapper``) done
    with two dense products: for the 1-32 adapters of a batch the ranks sum to a few hundred, which
    reads fewer bytes than the layer's own weight, and the forward hook is two tensor operations
    instead of four per adapter (per-adapter Python in the hooks held the GIL the HTTP loop needs:
    adapted requests batched by 9 rows against 16 for the base model). Exact: the other adapters'
    ranks add exact zeros.
    """

    def __init__(self, parts: list[tuple[list[int], LoraDelta]], n_rows: int, device):
        self.a = torch.cat([d.a.detach() for _, d in parts]).to(device)  # (sum r, in)
        self.b = torch.cat([d.b.detach() for _, d in parts], dim=1).to(device)  # (out, sum r)
        self.mask = torch.zeros(n_rows, 1, self.a.shape[0], device=device)
        at = 0
        for rows, d in parts:
            r = d.a.shape[0]
            self.mask[rows, :, at : at + r] = d.scale
            at += r

    def __call__(self, mod, args, out):
        x = args[0]  # (B, T, in)
        if self.a.dtype != x.dtype:  # a lower-precision copy of the base (adaptlab.models.fastweights)
            self.a, self.b, self.mask = self.a.to(x.dtype), self.b.to(x.dtype), self.mask.to(x.dtype)
        out.add_(F.linear(F.linear(x, self.a).mul_(self.mask), self.b))
        return out


@contextlib.contextmanager
def hooks_applied(model: torch.nn.Module, hooks: dict[str, object]):
    """Forward hooks on ``model``'s named submodules while the context is open, removed on exit."""
    handles = []
    try:
        for name, hook in hooks.items():
            try:
                mod = model.get_submodule(name)
            except AttributeError:
                raise ValueError(f"LoRA target {name} not found in the base model") from None
            handles.append(mod.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def packed_lora(rows: list[dict[str, LoraDelta]], device) -> dict[str, _Packed]:
    """One :class:`_Packed` per linear layer any row's adapter changes (rows: each row's deltas,
    ``{}`` for none; rows with the same dict share their adapter's ranks)."""
    groups: dict[int, tuple[list[int], dict]] = {}
    for r, deltas in enumerate(rows):
        if deltas:
            groups.setdefault(id(deltas), ([], deltas))[0].append(r)
    by_module: dict[str, list] = {}
    for idx, deltas in groups.values():
        for name, d in deltas.items():
            by_module.setdefault(name, []).append((idx, d))
    return {name: _Packed(parts, len(rows), device) for name, parts in by_module.items()}


def prefix_cache(config, kv: torch.Tensor):
    """A cache pre-filled with per-row prefixes: ``kv`` (B, layers * 2, kv_heads, P, head_dim)."""
    return cache_from(config, ((kv[:, 2 * i], kv[:, 2 * i + 1]) for i in range(config.num_hidden_layers)))


class AdaptedLM(DecoderLM):
    """``model`` run with adaptations: one :class:`Contribution` for every row, or a list, one per row.

    Per row of a mixed batch:
    - soft prompt: the row's virtual tokens go before its input embeddings, ``[soft_i; tokens_i; pad]``;
    - prefix: the row's keys/values fill the first slots of a pre-filled cache, other rows' slots
      there are masked out; positions are given per row (``prefix_i + t``) so a prefix row sees
      exactly the positions it was trained with;
    - LoRA: each adapter's deltas act on its own rows (:func:`lora_applied`);
    - rows with an empty contribution run the plain model.
    A contribution with its own weights (``model``) must be the ``model`` given here: rows on
    different weights cannot share a forward pass.
    """

    pack_lora = True  # mixed batches: LoRA packed per layer (False: one hook term per adapter, the benchmark's before)

    def __init__(self, model: torch.nn.Module, rows: Contribution | list[Contribution]):
        self.model = model
        self.rows = rows
        self.uniform = isinstance(rows, Contribution)
        self.device = next(model.parameters()).device
        self._packed = None  # mixed batches: the rows' LoRA deltas packed per layer (packed_lora)
        if not self.uniform:
            self.soft = torch.tensor([c.soft_len for c in rows], device=self.device)  # (B,)
            self.prefix = torch.tensor([c.prefix_len for c in rows], device=self.device)  # (B,)

    @property
    def n_virtual(self) -> int:
        if self.uniform:
            return self.rows.n_virtual
        return int((self.soft + self.prefix).max()) if len(self.rows) else 0

    def hf_model(self) -> torch.nn.Module:
        return self.model

    def _lora(self):
        if self.uniform:
            return lora_applied(self.model, [(None, self.rows.lora)]) if self.rows.lora else contextlib.nullcontext()
        if not self.pack_lora or any(d.dropout for c in self.rows for d in c.lora.values()):  # per adapter
            groups: dict[int, tuple[list[int], dict]] = {}
            for r, c in enumerate(self.rows):
                if c.lora:
                    groups.setdefault(id(c.lora), ([], c.lora))[0].append(r)
            return lora_applied(self.model, [(torch.tensor(ix, device=self.device), d) for ix, d in groups.values()])
        if self._packed is None:  # built once per batch, used by its first pass and every decode step
            self._packed = packed_lora([c.lora for c in self.rows], self.device)
        return hooks_applied(self.model, self._packed) if self._packed else contextlib.nullcontext()

    # ------------------------------------------------------------------ one adaptation for every row
    def _run_uniform(self, input_ids, attention_mask, use_cache: bool):
        c, B = self.rows, input_ids.shape[0]
        mask, kwargs = attention_mask, {}
        if c.soft is not None:
            emb = self.model.get_input_embeddings()(input_ids)  # (B, T, H)
            soft = c.soft.unsqueeze(0).expand(B, -1, -1).to(emb.dtype)  # (B, P, H)
            kwargs["inputs_embeds"] = torch.cat([soft, emb], dim=1)
            mask = torch.cat([attention_mask.new_ones(B, c.soft_len), mask], dim=1)
        else:
            kwargs["input_ids"] = input_ids
        if c.prefix is not None:
            dtype = next(self.model.parameters()).dtype  # fp32 parameters, bf16 attention on GPU
            kv = c.prefix.to(dtype).unsqueeze(0).expand(B, -1, -1, -1, -1)
            kwargs[CACHE] = prefix_cache(self.model.config, kv)
            mask = torch.cat([attention_mask.new_ones(B, c.prefix_len), mask], dim=1)
        elif not use_cache:
            kwargs["use_cache"] = False
        with self._lora():
            out = decoder(self.model)(attention_mask=mask, **kwargs)
        hidden = out.last_hidden_state[:, c.soft_len :]  # aligned with input_ids
        return cache_of(out), mask, hidden

    # ------------------------------------------------------------------ one adaptation per row
    def _row_prefix_cache(self, B: int):
        """A cache whose first ``Pmax`` slots hold each prefix row's keys/values, (B, Pmax) mask."""
        Pmax = int(self.prefix.max())
        if Pmax == 0:
            return None, None
        dtype = next(self.model.parameters()).dtype
        first = next(c.prefix for c in self.rows if c.prefix is not None)
        kv = torch.zeros((B,) + tuple(first.shape[:2]) + (Pmax, first.shape[3]), dtype=dtype, device=self.device)
        mask = torch.zeros(B, Pmax, dtype=torch.long, device=self.device)
        for r, c in enumerate(self.rows):
            if c.prefix is not None:
                kv[r, :, :, : c.prefix_len] = c.prefix.to(device=self.device, dtype=dtype)  # (L*2, kv, P, hd)
                mask[r, : c.prefix_len] = 1
        return prefix_cache(self.model.config, kv), mask

    def _row_inputs(self, input_ids, attention_mask):
        """``[soft_i; tokens_i; pad]`` embeddings (B, S, H) and their mask, S = max(soft_i + T_i)."""
        emb = self.model.get_input_embeddings()(input_ids)  # (B, T, H)
        if not bool(self.soft.any()):
            return emb, attention_mask
        B, T, H = emb.shape
        lens = attention_mask.sum(1)
        S = int((self.soft + lens).max())
        x = emb.new_zeros(B, S, H)
        mask = attention_mask.new_zeros(B, S)
        for r, c in enumerate(self.rows):
            p, n = c.soft_len, int(lens[r])
            if p:
                x[r, :p] = c.soft.to(device=emb.device, dtype=emb.dtype)
            x[r, p : p + n] = emb[r, :n]
            mask[r, : p + n] = 1
        return x, mask

    def _run_rows(self, input_ids, attention_mask):
        B, T = input_ids.shape
        x, mask = self._row_inputs(input_ids, attention_mask)  # (B, S, H), (B, S)
        cache, pmask = self._row_prefix_cache(B)
        S = x.shape[1]
        pos = self.prefix.unsqueeze(1) + torch.arange(S, device=self.device).unsqueeze(0)  # (B, S)
        full_mask = mask if pmask is None else torch.cat([pmask, mask], dim=1)
        with self._lora():
            out = decoder(self.model)(
                inputs_embeds=x, attention_mask=full_mask, position_ids=pos, use_cache=True, **with_cache(cache)
            )
        h = out.last_hidden_state  # (B, S, H)
        # Back to positions aligned with input_ids: row r's token t sits at soft_r + t.
        idx = (self.soft.unsqueeze(1) + torch.arange(T, device=self.device).unsqueeze(0)).clamp(max=S - 1)
        hidden = h.gather(1, idx.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # (B, T, H)
        return cache_of(out), full_mask, hidden

    # ------------------------------------------------------------------ DecoderLM
    def start(self, input_ids, attention_mask):
        if self.uniform:
            return self._run_uniform(input_ids, attention_mask, use_cache=True)
        return self._run_rows(input_ids, attention_mask)

    def hidden(self, input_ids, attention_mask):
        if self.uniform:
            return self._run_uniform(input_ids, attention_mask, use_cache=False)[2]
        return self._run_rows(input_ids, attention_mask)[2]

    def subset(self, rows: list[int]) -> AdaptedLM:
        return self if self.uniform else AdaptedLM(self.model, [self.rows[i] for i in rows])

    def extend(self, input_ids, attention_mask, position_ids, cache):
        with self._lora():
            return decoder(self.model)(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **with_cache(cache)
            ).last_hidden_state

    def project(self, hidden):
        return project(self.model, hidden)


class AdapterModule(torch.nn.Module, DecoderLM):
    """The trainable parameters of one adaptation of a shared base model.

    Subclasses say what they contribute (:meth:`contribution`, built from their parameters on
    every call so gradients reach them); every forward pass runs the base model with that
    contribution applied and leaves the base model as it was. The base model is held outside
    the module tree (a list), so it is never saved, moved, counted or trained with the adapter.
    """

    def __init__(self, base_model: torch.nn.Module | None):
        super().__init__()
        self._base = [base_model]

    @property
    def base_model(self) -> torch.nn.Module | None:
        return self._base[0]

    def contribution(self) -> Contribution:
        raise NotImplementedError

    def runtime(self) -> AdaptedLM:
        c = self.contribution()
        return AdaptedLM(c.model if c.model is not None else self.base_model, c)

    @property
    def n_virtual(self) -> int:
        return self.contribution().n_virtual

    def hf_model(self) -> torch.nn.Module:
        c = self.contribution()
        return c.model if c.model is not None else self.base_model

    def hidden(self, input_ids, attention_mask):
        return self.runtime().hidden(input_ids, attention_mask)

    def start(self, input_ids, attention_mask):
        return self.runtime().start(input_ids, attention_mask)

    def extend(self, input_ids, attention_mask, position_ids, cache):
        return self.runtime().extend(input_ids, attention_mask, position_ids, cache)

    def project(self, hidden):
        return project(self.hf_model(), hidden)
