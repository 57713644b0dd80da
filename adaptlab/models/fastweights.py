"""Frozen base weights in a form the machine reads fast, for inference only (public API).

A decode step of Gemma 3 270M reads about 1.07 GB of fp32 weights, two thirds of them the
262,144 x 640 LM head; on a 2-core CPU the fp32 product of a batch of 16 rows with that head ran
at a quarter of the machine's memory bandwidth. Where this CPU multiplies bf16 fast
(``avx512_bf16``: the roofline probe measures it), a bf16 copy halves the bytes and runs the
product at the bf16 rate.

**Packed for oneDNN.** PyTorch's ``F.linear`` hands a weight in its stored (row-major) layout to
the BLAS on every call; at the few rows of a decode step that costs more than the product: an fp32
product of 16 rows with Gemma's head took 141 ms, and 35 ms with the same weight reordered once into
oneDNN's blocked layout (``torch.ops.mkldnn._reorder_linear_weight`` and ``_linear_pointwise``, the
path PyTorch's own compiler takes for frozen CPU weights); the 18 layers' products 47 ms and 27 ms.
Same math and precision (fp32 stays fp32: the numbers move by float rounding, about 1e-6), so the
packed kinds are the fast form of each type on a CPU with oneDNN; elsewhere a kind keeps PyTorch's
layers (``packed`` reports which).

Weight kinds (``--weights``), measured in ``docs/results/engine.md``:

- ``fp32``: the weights as loaded, in PyTorch's layers: the numbers training sees. (A base model
  loaded on a CPU runs its products that need no gradient packed anyway, :func:`pack_when_inferring`;
  this kind is PyTorch's layers without that, for measuring against.)
- ``fp32-packed``: the same fp32 weights packed for oneDNN (above). A row's numbers depend on the
  batch's size only by float rounding, as with ``fp32``.
- ``bf16-head``: the LM head in bf16 (fp32 accumulation), packed; the layers in fp32, packed. The
  head's product is per row, so rounding there does not depend on the batch; the logits move by
  bf16 rounding, which flips a greedy token where the two best are that close.
- ``bf16``: every linear layer and the head in bf16, packed. Faster; a row's numbers can depend on the
  batch's size (the bf16 kernels block differently by rows), so greedy texts can differ from
  one-at-a-time.
- ``int8``: PyTorch's dynamic int8 linear layers (fbgemm, per-channel weights). Fastest; its
  activations are quantized over the whole batch, so a row's answer depends on its batch, and on
  Gemma 3 its greedy texts differ from fp32's from the first tokens: offered for measurement, never
  chosen by ``auto``.
- ``auto``: on a CPU, for a head big enough to matter, ``fp32-packed`` where oneDNN can pack;
  else ``bf16-head`` where the measured bf16 product is at least 1.5x the fp32 one; ``fp32``
  otherwise (on CUDA the model is loaded in the dtype asked for).

Training never sees these copies: it runs on the fp32 base (the masters). The copy shares every
tensor it does not replace with the base, so it costs only the replaced weights' memory.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings

import torch
import torch.nn.functional as F

WEIGHTS = ("auto", "fp32", "fp32-packed", "bf16-head", "bf16", "int8")
# The batch size oneDNN lays a packed weight out for: decode batches are 1-32 rows; packed for 16,
# a row's product came out the same alone as in a batch of 32 (packed for 1 it did not).
PACK_ROWS = 16


def packing_available(device: torch.device) -> bool:
    """Whether weights on ``device`` can be packed for oneDNN here (a CPU build with mkldnn)."""
    ops = getattr(torch.ops, "mkldnn", None)
    return (
        device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and ops is not None
        and hasattr(ops, "_reorder_linear_weight")
        and hasattr(ops, "_linear_pointwise")
    )


def _state(t: torch.Tensor) -> tuple[int, int]:
    """What says a tensor is unchanged since a copy was made of it: its storage and version counter
    (bumped by every in-place change: an optimizer step, ``load_state_dict``, ``mul_``)."""
    return t.data_ptr(), t._version


def _pack(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` reordered once into oneDNN's blocked layout (for :func:`_packed_product`)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), PACK_ROWS)


def _packed_product(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, bias, "none", [], "")


def _plain(linear: torch.nn.Linear) -> torch.nn.Linear:
    """``linear`` as PyTorch's own ``nn.Linear`` (a :class:`PackingLinear` becomes one sharing its
    parameters, without its packed weight: ``__getstate__``)."""
    if type(linear) is torch.nn.Linear:
        return linear
    plain = copy.copy(linear)
    plain.__class__ = torch.nn.Linear
    return plain


class PackedLinear(torch.nn.Module):
    """A frozen linear layer whose weight is reordered once, in ``dtype``, into oneDNN's blocked
    layout; the input is cast to ``dtype`` and the output back to the input's type (bf16 products
    accumulate in fp32). By hand because PyTorch exposes the packed product only as these two
    operators (its compiler's freezing pass uses them); ``F.linear`` re-lays the weight per call."""

    def __init__(self, linear: torch.nn.Linear, dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features, self.dtype = linear.in_features, linear.out_features, dtype
        self.packed = _pack(linear.weight.to(dtype))
        self.bias = None if linear.bias is None else linear.bias.detach().to(dtype)
        # The weight it was packed from (the base's own tensor, not a copy; not in the state dict):
        # what the greedy screen checks its candidates against (GreedyScreen).
        self.source = linear.weight.detach() if dtype == torch.float32 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _packed_product(x.to(self.dtype), self.packed, self.bias).to(x.dtype)

    def __getstate__(self):
        state = super().__getstate__().copy()
        state.pop("_screen", None)  # greedy_screen's cache: rebuilt on demand, never copied
        return state


class PackingLinear(torch.nn.Linear):
    """A base model's ``nn.Linear`` (the class is swapped in by :func:`pack_when_inferring`, the
    module keeps its parameters, hooks and name) that runs a product needing no gradient (scoring,
    generation, evaluation during training) on its weight packed once for oneDNN, and everything
    else (training) as ``nn.Linear`` does. The packed copy is remade whenever the weight changes (an
    optimizer step, ``load_state_dict``, a move) and never saved: it is not in the state dict nor
    copied with the module. Scoring Banking77's 77 labels ran 1.3x faster, the demo's 12 labels 1.5x,
    same labels (``docs/results/engine.md``)."""

    _pack: tuple | None = None

    def _packed_weight(self):
        w, b = self.weight, self.bias
        key = (_state(w), None if b is None else _state(b))
        if self._pack is None or self._pack[0] != key:
            self._pack = (key, _pack(w), None if b is None else b.detach())
        return self._pack[1], self._pack[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        needs_graph = torch.is_grad_enabled() and (
            x.requires_grad or w.requires_grad or (self.bias is not None and self.bias.requires_grad)
        )
        plain = needs_graph or w.device.type != "cpu" or torch.is_autocast_enabled("cpu") or x.numel() == 0
        if plain or x.dtype != w.dtype or w.dtype not in (torch.float32, torch.bfloat16):
            return F.linear(x, w, self.bias)
        packed_w, bias = self._packed_weight()
        return _packed_product(x, packed_w, bias)

    def __getstate__(self):
        state = super().__getstate__().copy()
        state.pop("_pack", None)  # caches of the weight: rebuilt on demand, never copied
        state.pop("_screen", None)
        return state


def pack_when_inferring(model: torch.nn.Module) -> torch.nn.Module:
    """Make every ``nn.Linear`` of ``model`` a :class:`PackingLinear` where oneDNN can pack here (a
    CPU build with mkldnn; else ``model`` is left as it is). In place; returns ``model``. Why by hand:
    PyTorch packs frozen weights only inside its compiler (``torch.compile`` with freezing), which
    the shapes of decoding and scoring (a new sequence length every step) would make recompile."""
    if not packing_available(next(model.parameters()).device):
        return model
    for mod in model.modules():
        if type(mod) is torch.nn.Linear:
            mod.__class__ = PackingLinear
    return model


def packed(model: torch.nn.Module) -> bool:
    """Whether ``model`` (an inference copy) runs any packed oneDNN layer."""
    return any(isinstance(m, PackedLinear) for m in model.modules())


class Bf16Linear(torch.nn.Module):
    """A frozen linear layer kept in bf16; fp32 in and out (the product accumulates in fp32)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach().to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)


def _shared_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of the module tree whose tensors are the base's own (replacing a module in the copy
    leaves the base as it was)."""
    memo = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo)


def _replace_linears(model: torch.nn.Module, make, names: set[str] | None = None) -> None:
    for name, mod in list(model.named_modules()):
        for child_name, child in list(mod.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, torch.nn.Linear) and (names is None or full in names):
                setattr(mod, child_name, make(child))


def _int8(linear: torch.nn.Linear) -> torch.nn.Module:
    linear = _plain(linear)  # quantize_dynamic matches the exact type, not a PackingLinear
    with (
        warnings.catch_warnings()
    ):  # torch.ao.quantization says it is deprecated for torchao; it is still torch's kernel
        warnings.simplefilter("ignore")
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        return torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear: qconfig})[0]


# An LM head smaller than this is read in a few milliseconds in fp32: converting its inputs to bf16
# costs about what it saves (the tiny test model), so ``auto`` keeps fp32 there.
MIN_HEAD_PARAMS = 2**24


def choose(model: torch.nn.Module, gflops: dict[str, float] | None = None) -> str:
    """What ``auto`` means for ``model`` here, for a head of at least :data:`MIN_HEAD_PARAMS` weights
    on a CPU: ``fp32-packed`` where oneDNN can pack the weights (fp32's numbers at about twice its
    decode speed; bf16-head was 5-7% faster still and changed greedy texts); else ``bf16-head``
    where the bf16 product is at least 1.5x the fp32 one (measured now when ``gflops`` is not
    given); else ``fp32``."""
    device = next(model.parameters()).device
    if device.type != "cpu" or model.get_output_embeddings().weight.numel() < MIN_HEAD_PARAMS:
        return "fp32"
    if packing_available(device):
        return "fp32-packed"
    if gflops is None:
        from adaptlab.models.roofline import _gemm_rate

        gflops = {"fp32": _gemm_rate(torch.float32, device, repeats=5)}
        with contextlib.suppress(RuntimeError):  # no bf16 product here
            gflops["bf16"] = _gemm_rate(torch.bfloat16, device, repeats=5)
    return "bf16-head" if gflops.get("bf16", 0.0) >= 1.5 * gflops["fp32"] else "fp32"


def check(weights: str) -> str:
    if weights not in WEIGHTS:
        raise ValueError(f"weights={weights!r}: use one of {', '.join(WEIGHTS)}")
    return weights


def resolve(weights: str, model: torch.nn.Module) -> str:
    """``weights`` with ``auto`` decided for ``model`` on this machine."""
    return choose(model) if check(weights) == "auto" else weights


def inference_model(model: torch.nn.Module, weights: str) -> torch.nn.Module:
    """``model`` (a transformers causal LM) for inference with ``weights`` (one of :data:`WEIGHTS`
    but ``auto``; see :func:`resolve`); ``fp32`` returns ``model`` itself. Module names are kept, so
    LoRA hooks find the layers they change (a hook adds its delta in fp32 to the layer's output)."""
    if weights == "fp32":  # PyTorch's own layers, also where the base packs itself (pack_when_inferring)
        if not any(isinstance(m, PackingLinear) for m in model.modules()):
            return model
        out = _shared_copy(model)
        _replace_linears(out, _plain)
        return out
    if weights not in WEIGHTS or weights == "auto":
        raise ValueError(f"weights={weights!r}: resolve it first (one of {', '.join(WEIGHTS[1:])})")
    if next(model.parameters()).device.type != "cpu" and weights == "int8":
        raise ValueError("weights='int8' needs a CPU (PyTorch's dynamic int8 layers run there only)")
    out = _shared_copy(model)
    head = out.get_output_embeddings()
    head_name = next(n for n, m in out.named_modules() if m is head)
    if weights == "int8":
        _replace_linears(out, _int8)
    elif packing_available(next(model.parameters()).device):
        bf16 = torch.bfloat16
        if weights == "bf16-head":  # the head first: the next line packs every linear left
            _replace_linears(out, lambda lin: PackedLinear(lin, bf16), names={head_name})
        _replace_linears(out, lambda lin: PackedLinear(lin, bf16 if weights == "bf16" else torch.float32))
    elif weights == "fp32-packed":  # nothing to pack with here: PyTorch's fp32 layers are the same math
        return model
    else:
        _replace_linears(out, Bf16Linear, names={head_name} if weights == "bf16-head" else None)
    out.requires_grad_(False)
    return out


# ---------------------------------------------------------------------------------------------
# Greedy decoding through a big head: screened in bf16, decided in fp32.
#
# A greedy step needs each row's best token, not its 262,144 logits. The head's product in bf16
# takes about half the fp32 one's time (Gemma 3 270M, 16 rows, packed: 18 ms against 34 ms), and its
# error is bounded: two bf16 roundings of the inputs, fp32 accumulation, a bf16 rounding of the
# output, so for token v |bf16 logit - fp32 logit| <= eps * ||x|| * ||w_v|| (eps: screen_eps). Every
# token that can be the fp32 argmax is then within 2 * eps * ||x|| * max ||w_v|| of the best bf16 logit;
# when the bf16 top SCREEN_TOP reach below that, they hold every such token, and their fp32 logits
# (SCREEN_TOP products of one row) pick the same token as the full fp32 head, up to fp32 rounding
# (the same tolerance as between fp32 and fp32-packed). A row whose top SCREEN_TOP do not reach that
# far gets the full fp32 head. On E2E's greedy steps the bound held with 16 candidates on every row.
# By hand: no library screens an argmax with a bound; vLLM and llama.cpp run the whole head.

SCREEN_TOP = 32


def screen_eps(hidden: int) -> float:
    """The bound's factor for a head of width ``hidden``: three bf16 roundings (u = 2**-8: the two
    inputs and the output) with their products, and fp32 accumulation over ``hidden`` terms."""
    u = 2.0**-8
    return 3 * u + 4 * u * u + 1.1 * hidden * 2.0**-24  # Gemma 3 270M's head (640 wide): about 0.0118


class GreedyScreen:
    """The greedy token of each row through an fp32 head ``weight`` (V, H), screened in bf16."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight.detach()
        self.packed = _pack(self.weight.to(torch.bfloat16))
        self.max_norm = float(self.weight.norm(dim=1).max())
        self.eps = screen_eps(self.weight.shape[1])
        self.fallbacks = 0  # rows the screen could not decide (the full fp32 head decided them)

    def argmax(self, x: torch.Tensor, full) -> torch.Tensor:
        """``x`` (B, H) fp32 -> (B,) the argmax of ``full(x)`` (the fp32 logits), ties to the lowest id."""
        # The best SCREEN_TOP of the bf16 logits, taken in bf16: an fp32 copy of all (B, V) of them
        # cost more than the product (16 rows: a fresh 16 MB buffer, 15-29 ms a step in the server's
        # thread against 0.3 ms here), and the values it would give are the same numbers.
        approx = _packed_product(x.to(torch.bfloat16), self.packed, None)  # (B, V) bf16
        top = approx.topk(min(SCREEN_TOP, approx.shape[-1]), dim=-1)
        values = top.values.float()
        reach = 2 * self.eps * x.norm(dim=-1) * self.max_norm  # (B,)
        held = values[:, -1] < values[:, 0] - reach
        cand = top.indices.sort(dim=-1).values  # by id: argmax keeps the lowest id of a tie, as torch does
        exact = torch.bmm(self.weight[cand], x.unsqueeze(-1)).squeeze(-1)  # (B, K) fp32 logits
        out = cand.gather(1, exact.argmax(-1, keepdim=True)).squeeze(1)
        if not bool(held.all()):
            rows = (~held).nonzero().squeeze(1)
            self.fallbacks += len(rows)
            out[rows] = full(x[rows]).argmax(-1)
        return out


def screen_allowed(device: torch.device) -> bool:
    """Where the screen pays: a CPU whose oneDNN multiplies bf16 natively (asked once per device
    type: every greedy step asks)."""
    return _screen_allowed(device.type)


@functools.lru_cache(maxsize=4)
def _screen_allowed(device_type: str) -> bool:
    return packing_available(torch.device(device_type)) and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def greedy_screen(head: torch.nn.Module, min_params: int | None = None) -> GreedyScreen | None:
    """``head``'s screen (built once, remade when its weight changes), or None where it does not
    apply: a head that is not fp32 on a CPU with native bf16 (packed, or a base's own layer outside
    autograd; the ``fp32`` kind, PyTorch's own layers, is left as the reference), has a bias, or
    has fewer than ``min_params`` weights (default :data:`MIN_HEAD_PARAMS`: a small head's full
    product costs about what the screen does)."""
    if isinstance(head, PackedLinear):
        weight = head.source
    elif isinstance(head, PackingLinear) and head.weight.dtype == torch.float32 and not torch.is_grad_enabled():
        weight = head.weight
    else:
        return None
    if (
        weight is None
        or head.bias is not None
        or weight.numel() < (MIN_HEAD_PARAMS if min_params is None else min_params)
        or not screen_allowed(weight.device)
    ):
        return None
    key = _state(weight)
    cached = head.__dict__.get("_screen")
    if cached is None or cached[0] != key:
        cached = (key, GreedyScreen(weight))
        head.__dict__["_screen"] = cached  # not a submodule nor a buffer: never saved or copied by name
    return cached[1]
