"""Data parallelism for the shared loop over ``torch.distributed`` (gloo on CPU, nccl on GPU).

Launch any training command under ``torchrun --nproc_per_node N`` (or ``accelerate launch``):
the loop sees ``WORLD_SIZE`` and joins the process group itself. Every rank builds the same
batches (their order is a pure function of seed and epoch), takes its share of the rows of
each batch, and the gradients of the trainable parameters are summed across ranks before the
optimizer step. The loss of each rank is divided by the token count of the *global* batch, so
the summed gradient is exactly the single-process gradient of the same global batch.

Why not ``DistributedDataParallel``: DDP syncs gradients from hooks armed by the wrapped
module's ``forward``, and the shared loop never calls ``forward`` (it runs the decoder body and
projects label positions only). One flat all-reduce after backward is what DDP does, minus the
overlap of communication with the backward pass; the adapters' gradients are small (LoRA and
prompts: well under 1% of the model), so there is little to overlap.
"""

from __future__ import annotations

import os

import torch


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_from_env() -> tuple[int, int]:
    """Join the process group ``torchrun`` / ``accelerate launch`` describe in the environment."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and torch.distributed.is_available() and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        else:  # N processes on one machine share its cores
            local = int(os.environ.get("LOCAL_WORLD_SIZE", size))
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            torch.set_num_threads(max(1, cores // local))
    return world()


def is_main() -> bool:
    return world()[0] == 0


def shard(rows: list[int]) -> list[int]:
    """This rank's rows of a global batch (strided, so every rank gets a similar length mix)."""
    rank, size = world()
    return rows[rank::size] if size > 1 else rows


def all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum the gradients of ``params`` over ranks, as one flat buffer (one collective per step)."""
    rank, size = world()
    if size == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def all_sum(value: float) -> float:
    rank, size = world()
    if size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return float(t.item())


def barrier() -> None:
    if world()[1] > 1:
        torch.distributed.barrier()
