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

Full fine-tuning can shard instead (``TrainConfig.fsdp``, :class:`Sharded`): a training copy of
the module goes through ``torch.distributed.fsdp.fully_shard`` (FSDP2) per decoder layer and as a
whole, so each rank holds 1/N of the weights, gradients and AdamW moments. The loop then calls
that copy's ``forward`` (a thin module around the same label-position objective), which is what
arms FSDP's gather and reduce-scatter hooks. The caller's module keeps the full weights, and is
refreshed from the shards (:meth:`Sharded.sync`) before each evaluation and at the end, so
evaluation, early stopping and saving the artifact do not change.
"""

from __future__ import annotations

import copy
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
        p.grad = flat[offset : offset + n].view_as(p).clone()
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


# ------------------------------------------------------------------ FSDP (full fine-tuning)
def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind ``t`` (gathered over ranks when ``t`` is a sharded DTensor; collective)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def like(p: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """``whole`` laid out like ``p``: this rank's shard when ``p`` is a DTensor, else ``whole`` itself."""
    if hasattr(p, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(whole.to(p.device, p.dtype), p.device_mesh, p.placements)
    return whole


class _Objective(torch.nn.Module):
    """``forward`` = log p of the target tokens (label positions only): the root FSDP unit."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, input_ids, attention_mask, target_mask):
        from adaptlab.models.runtime import target_token_logprobs

        rows, logp = target_token_logprobs(self.module, input_ids, attention_mask, target_mask)
        return rows, logp.clone()  # not a view: FSDP's pre-backward hook must stay on it


def _decoder_layers(module: torch.nn.Module) -> list[torch.nn.Module]:
    hf = module.hf_model() if hasattr(module, "hf_model") else module
    body = getattr(hf, "model", hf)
    return list(getattr(body, "layers", []))


class Sharded:
    """An FSDP2-sharded training copy of ``module`` (every parameter trainable), names unchanged."""

    def __init__(self, module: torch.nn.Module):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        self.module = module
        self.full_params = {n: p for n, p in module.named_parameters()}
        device = next(module.parameters()).device
        shadow = copy.deepcopy(module)
        mesh = init_device_mesh(device.type, (world()[1],))
        for layer in _decoder_layers(shadow):
            fully_shard(layer, mesh=mesh)
        self.objective = fully_shard(_Objective(shadow), mesh=mesh)
        # FSDP averages gradients over ranks; the loop's loss is already divided by the global batch's
        # token count, so it is scaled by the world size to make that average a sum. (A divide factor
        # of 1 would say the same, but gloo has no PREMUL_SUM reduction.)
        self.loss_scale = float(world()[1])
        self.params = {n.removeprefix("module."): p for n, p in self.objective.named_parameters()}
        if self.params.keys() != self.full_params.keys():
            raise RuntimeError("fsdp: the sharded copy's parameters do not match the module's")

    def __call__(self, input_ids, attention_mask, target_mask):
        return self.objective(input_ids, attention_mask, target_mask)

    @torch.no_grad()
    def sync(self) -> None:
        """Copy the sharded weights into the caller's module (collective: every rank calls it)."""
        for n, p in self.params.items():
            self.full_params[n].copy_(full(p.detach()))
