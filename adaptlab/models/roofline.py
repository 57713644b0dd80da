"""What this machine can do for a base model: the roofline of decoding and scoring (public API).

:func:`measure` times, on the machine it runs on and the threads torch uses now, the matrix-product
rate (fp32; bf16 and int8 where this build of torch has a kernel for them on this device) and the
memory bandwidth. :func:`model_shape` reads from a model what one position costs (the weights the
layers read and multiply, the LM head's). :func:`decode_limit` and :func:`prefill_limit` turn the
two into the fastest a decode step or a forward pass can go: the larger of the time to read every
weight once and the time to do its arithmetic at the measured rate. Every engine benchmark prints
its result as a fraction of that limit, measured in the same run (``bench/engine.py``), so a number
taken on a slow machine still says how far the engine is from what that machine allows.

Written here rather than taken from a library: what we need is two numbers for this machine now,
in under two seconds, next to the benchmark that uses them (roofline tools such as Intel Advisor or
likwid are external programs, not importable).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import torch

BYTES = {"fp32": 4, "bf16": 2, "int8": 1}


def _best(fn, repeats: int, warmup: int = 5) -> float:
    best = float("inf")
    for i in range(warmup + repeats):
        t = time.perf_counter()
        fn()
        if i >= warmup:
            best = min(best, time.perf_counter() - t)
    return best


def _gemm_rate(dtype: torch.dtype, device, m: int = 64, k: int = 640, n: int = 16384, repeats: int = 20) -> float:
    """GFLOP/s of an (m x k) @ (k x n) product shaped like a slice of an LM head, the fastest of ``repeats``."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(m, k, generator=g, device=device).to(dtype)
    b = torch.randn(k, n, generator=g, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run():
        a @ b
        sync()

    return 2 * m * k * n / _best(run, repeats) / 1e9


def _peak(dtype: torch.dtype, device) -> float:
    """The faster of an LM-head-shaped product and a square one: the roofline's ceiling is the best
    the machine multiplies (on one 2-core VM the head shape read 103 GFLOP/s and 1024^3 193)."""
    return max(_gemm_rate(dtype, device), _gemm_rate(dtype, device, m=1024, k=1024, n=1024, repeats=5))


def _int8_rate(device, m: int = 64, k: int = 640, n: int = 16384, repeats: int = 10) -> float | None:
    """GFLOP/s of an int8 x int8 -> int32 product (``torch._int_mm``), or None where there is no kernel."""
    try:
        a = torch.randint(-127, 127, (m, k), dtype=torch.int8, device=device)
        b = torch.randint(-127, 127, (k, n), dtype=torch.int8, device=device)
        torch._int_mm(a, b)
    except (RuntimeError, NotImplementedError, AttributeError):
        return None
    return 2 * m * k * n / _best(lambda: torch._int_mm(a, b), repeats) / 1e9


def _bandwidth(device, mib: int = 256, repeats: int = 5) -> float:
    """GB/s read, from summing a ``mib`` MiB array that does not fit any cache (written first, so no
    page is the shared zero page)."""
    x = torch.randn(mib * 2**18, device=device)  # 4 bytes each
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run():
        x.sum()
        sync()

    return x.numel() * 4 / _best(run, repeats) / 1e9


@dataclasses.dataclass(frozen=True)
class Machine:
    """Measured rates: GFLOP/s per weight type (fp32 always), memory read GB/s, and where."""

    gflops: dict[str, float]
    bandwidth_gbs: float
    device: str
    threads: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def measure(device: str | torch.device = "cpu") -> Machine:
    """Measure this machine (about a second on 2 cores)."""
    device = torch.device(device)
    rates = {"fp32": _peak(torch.float32, device)}
    with contextlib.suppress(RuntimeError):  # no bf16 product on this device
        rates["bf16"] = _peak(torch.bfloat16, device)
    int8 = _int8_rate(device)
    if int8 is not None:
        rates["int8"] = max(int8, _int8_rate(device, m=1024, k=1024, n=1024, repeats=5) or 0.0)
    return Machine(
        gflops={k: round(v, 1) for k, v in rates.items()},
        bandwidth_gbs=round(_bandwidth(device), 1),
        device=str(device),
        threads=torch.get_num_threads(),
    )


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """What one position costs a model: weights in its layers and in its LM head (parameters)."""

    name: str
    layer_params: int  # the linear layers of the transformer body (what every position multiplies)
    head_params: int  # the LM head (vocabulary x hidden), on the positions that need logits only

    @property
    def params(self) -> int:
        return self.layer_params + self.head_params


def model_shape(model: torch.nn.Module, name: str = "") -> ModelShape:
    """The linear weights of ``model``'s body and its LM head (embeddings are looked up, not multiplied)."""
    head = model.get_output_embeddings()
    body = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)
    return ModelShape(name=name or type(model).__name__, layer_params=body, head_params=head.weight.numel())


@dataclasses.dataclass(frozen=True)
class Limit:
    """The fastest a piece of work can go here: seconds, and what bounds it."""

    seconds: float
    bound: str  # "memory" | "compute"

    def fraction(self, measured_seconds: float) -> float:
        """How close a measured time came to the limit (1.0: at the limit)."""
        return self.seconds / measured_seconds if measured_seconds > 0 else 0.0


def _kinds(weights: str) -> tuple[str, str]:
    """(the layers' weight type, the head's) of a weight kind (adaptlab.models.fastweights.WEIGHTS)."""
    if weights == "bf16-head":
        return ("fp32", "bf16")
    return ("fp32", "fp32") if weights == "fp32-packed" else (weights, weights)


def _limit(machine: Machine, shape: ModelShape, layer_rows: int, head_rows: int, weights: str) -> Limit:
    """Every weight read once; two FLOPs per weight per row through the layers and through the head,
    each part at its own type's measured rate (fp32's where that type was not measured)."""
    kinds = _kinds(weights)
    parts = ((shape.layer_params, layer_rows, kinds[0]), (shape.head_params, head_rows, kinds[1]))
    t_mem = sum(n * BYTES[k] for n, _, k in parts) / (machine.bandwidth_gbs * 1e9)
    t_flop = sum(2 * n * rows / (machine.gflops.get(k, machine.gflops["fp32"]) * 1e9) for n, rows, k in parts)
    return Limit(max(t_mem, t_flop), "memory" if t_mem >= t_flop else "compute")


def decode_limit(machine: Machine, shape: ModelShape, batch: int, weights: str = "fp32") -> Limit:
    """One decode step of ``batch`` rows: every weight (layers and head) read once, and two FLOPs per
    weight per row. Attention over the cache is left out (a few percent at these context lengths),
    so the limit is, if anything, optimistic."""
    return _limit(machine, shape, batch, batch, weights)


def forward_limit(
    machine: Machine, shape: ModelShape, positions: int, head_positions: int, weights: str = "fp32"
) -> Limit:
    """A forward pass over ``positions`` token positions of which ``head_positions`` reach the LM
    head (label scoring: the positions whose next token is a label's): the weights read once, two
    FLOPs per weight and position."""
    return _limit(machine, shape, positions, head_positions, weights)


def report(machine: Machine, shape: ModelShape, batches: tuple[int, ...] = (1, 16, 32)) -> list[dict]:
    """The decode limit at each batch size, per weight type this machine measured."""
    rows = []
    for weights in machine.gflops:
        for b in batches:
            lim = decode_limit(machine, shape, b, weights)
            rows.append(
                {
                    "weights": weights,
                    "batch": b,
                    "step_ms": round(lim.seconds * 1e3, 2),
                    "tokens_per_s": round(b / lim.seconds, 1),
                    "bound": lim.bound,
                }
            )
    return rows
