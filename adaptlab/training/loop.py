"""The one training loop shared by every gradient strategy.

Hand-written rather than ``transformers.Trainer`` for the one thing that makes it fast here:
the loss is computed from hidden states at target positions only (``target_token_logprobs``),
so Gemma's 262k-word LM head runs on a handful of label tokens per example instead of on every
position of every sequence. Everything else is standard: length-bucketed batches, gradient
accumulation, AdamW, warm-up + cosine/linear decay, clipping, early stopping on a dev metric.

Checkpoints are resumable to the bit: trainable weights, optimizer moments, scheduler step,
position in the epoch and every RNG state are saved (safetensors + JSON, atomically), and the
batch order of each epoch is a pure function of (seed, epoch). A run killed with ``kill -9`` and
resumed ends with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from adaptlab.training.batching import Encoded, bucketed_batches, collate
from adaptlab.training.config import TrainConfig, autocast_for
from adaptlab.utils import atomic_write_json, atomic_write_text

CKPT = "checkpoint"
LOG = "train_log.jsonl"


@dataclass
class TrainResult:
    steps: int
    epochs_done: float
    train_seconds: float
    examples_per_s: float
    tokens_per_s: float
    peak_rss_bytes: int
    trainable_params: int
    initial_loss: float
    final_loss: float
    best_dev: float | None
    best_step: int | None
    stopped_early: bool
    history: list[dict] = field(default_factory=list)
    parallel: str = "none"   # "none" | "data" (gradients all-reduced over ranks) | "fsdp" (sharded), with the rank count

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d.pop("history")
        return d


class PeakRSS:
    """Sample this process's resident memory in a background thread; keep the peak."""

    def __init__(self, interval: float = 0.05):
        import psutil

        self._proc = psutil.Process()
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval):
        while not self._stop.wait(interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    warmup = int(round(cfg.warmup_ratio * total_steps))

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if cfg.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


def trainable_named(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


# ------------------------------------------------------------------ checkpoints
def _checkpoint_tensors(params: dict, optimizer, best: dict | None) -> dict:
    """Whole tensors for a checkpoint: weights, best weights, optimizer moments by parameter name.
    Collective under FSDP (shards are gathered), so every rank calls it; only rank 0 writes."""
    from adaptlab.training.distributed import full

    out = {"trainable": {n: full(p.detach()).contiguous() for n, p in params.items()},
           "best": None if best is None else {n: full(t).contiguous() for n, t in best.items()}}
    # Optimizer moments by parameter name (safetensors), scalars as JSON: no pickle anywhere.
    names = {id(p): n for n, p in params.items()}
    opt_tensors, opt_scalars = {}, {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for k, v in optimizer.state.get(p, {}).items():
                key = f"{names[id(p)]}::{k}"
                if torch.is_tensor(v):
                    opt_tensors[key] = full(v.detach()).contiguous()
                else:
                    opt_scalars[key] = v
    out["optimizer"], out["opt_scalars"] = opt_tensors, opt_scalars
    return out


def _save_checkpoint(run_dir: Path, tensors: dict, scheduler, state: dict) -> None:
    """Write the checkpoint folder under a temporary name, then swap it in."""
    tmp = run_dir / f".{CKPT}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors["trainable"], tmp / "trainable.safetensors")
    if tensors["best"] is not None:
        save_file(tensors["best"], tmp / "best.safetensors")
    save_file(tensors["optimizer"] or {"_empty": torch.zeros(1)}, tmp / "optimizer.safetensors")
    save_file({"torch": torch.get_rng_state()}, tmp / "rng.safetensors")
    atomic_write_json(tmp / "state.json", {**state, "scheduler": scheduler.state_dict()["last_epoch"],
                                            "opt_scalars": tensors["opt_scalars"],
                                            "python_rng": random.getstate()[1],
                                            "python_rng_pos": random.getstate()[2]})
    final, old = run_dir / CKPT, run_dir / f"{CKPT}.old"
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _find_checkpoint(run_dir: Path) -> Path | None:
    for name in (CKPT, f"{CKPT}.old"):  # .old survives a crash between the two renames
        d = run_dir / name
        if (d / "state.json").exists():
            return d
    return None


def _load_checkpoint(d: Path, params: dict, optimizer, scheduler) -> tuple[dict, dict | None]:
    """Restore weights, optimizer and schedule into ``params`` (sharded again under FSDP)."""
    from adaptlab.training.distributed import like

    state = json.loads((d / "state.json").read_text())
    saved = load_file(d / "trainable.safetensors")
    missing, unexpected = set(params) - set(saved), set(saved) - set(params)
    if missing or unexpected:
        raise RuntimeError(f"{d}: checkpoint does not match the model (missing {sorted(missing)[:3]}, "
                           f"unexpected {sorted(unexpected)[:3]})")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(like(p, saved[n]))
    opt = load_file(d / "optimizer.safetensors")
    for group in optimizer.param_groups:
        for p in group["params"]:
            n = next(k for k, v in params.items() if v is p)
            st = {k.split("::", 1)[1]: v for k, v in opt.items() if k.split("::", 1)[0] == n}
            st = {k: like(p, v) if v.shape == p.shape else v for k, v in st.items()}  # moments; step stays whole
            st.update({k.split("::", 1)[1]: v for k, v in state["opt_scalars"].items() if k.split("::", 1)[0] == n})
            if st:
                optimizer.state[p] = st
    scheduler.last_epoch = state["scheduler"]
    scheduler._last_lr = [g["initial_lr"] * f(scheduler.last_epoch)
                          for g, f in zip(optimizer.param_groups, scheduler.lr_lambdas)]
    for g, lr in zip(optimizer.param_groups, scheduler._last_lr):
        g["lr"] = lr
    torch.set_rng_state(load_file(d / "rng.safetensors")["torch"])
    random.setstate((3, tuple(state["python_rng"]), state["python_rng_pos"]))
    best = load_file(d / "best.safetensors") if (d / "best.safetensors").exists() else None
    return state, best


# ------------------------------------------------------------------ the loop
def train(
    module: torch.nn.Module,
    items: list[Encoded],
    cfg: TrainConfig,
    pad_id: int,
    evaluate: Callable[[], float] | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train ``module``'s parameters that require grad on ``items``.

    ``module`` provides ``hidden(input_ids, attention_mask)`` and ``project(hidden)``.
    ``evaluate()`` returns a dev score (higher is better) for early stopping; the best
    parameters are restored at the end. With ``run_dir`` the loop checkpoints and logs there;
    ``resume=True`` continues from its checkpoint.
    """
    from adaptlab.models.runtime import target_token_logprobs
    from adaptlab.training import distributed as dist

    rank, world_size = dist.init_from_env()
    writer = rank == 0  # every rank resumes from the checkpoint; only rank 0 writes it, the log and the bar
    progress = progress and writer
    if not items:
        raise ValueError("no training examples")
    params = trainable_named(module)
    if not params:
        raise ValueError("the module has no trainable parameters")
    n_trainable = sum(p.numel() for p in params.values())
    device = next(iter(params.values())).device
    sharded = None
    if cfg.fsdp and world_size > 1:
        own = getattr(module, "contribution", None)
        owns_weights = own is not None and own().model is not None
        frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
        if frozen or not owns_weights:  # adapters: their gradients are small, data parallelism is the right tool
            print(f"fsdp: {n_trainable:,} trainable parameters of an adapter (not a full fine-tune): training "
                  f"data-parallel instead", file=sys.stderr)
        else:
            sharded = dist.Sharded(module)
            params = sharded.params  # the optimizer, checkpoints and best weights work on the shards
    amp_device, amp = autocast_for(cfg.precision, device)
    steps_per_epoch = math.ceil(math.ceil(len(items) / cfg.batch_size) / cfg.grad_accum)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
    run_dir = Path(run_dir) if run_dir is not None else None
    eval_every = cfg.eval_every or steps_per_epoch

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    step, epoch, batch_pos = 0, 0, 0
    best_score, best_step, best_state, bad_evals = None, None, None, 0
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt = _find_checkpoint(run_dir) if resume else None
        if ckpt is not None:
            state, best_state = _load_checkpoint(ckpt, params, optimizer, scheduler)
            step, epoch, batch_pos = state["step"], state["epoch"], state["batch_pos"]
            best_score, best_step, bad_evals = state["best_score"], state["best_step"], state["bad_evals"]
            log_lines = (run_dir / LOG).read_text().splitlines() if (run_dir / LOG).exists() else []
            if writer:
                atomic_write_text(run_dir / LOG, "".join(line + "\n" for line in log_lines[:state["log_lines"]]))
        elif writer and (not resume or not (run_dir / LOG).exists()):
            atomic_write_text(run_dir / LOG, "")
        dist.barrier()  # nobody starts while rank 0 is still rewriting the log
    log_path = run_dir / LOG if run_dir and writer else None
    history: list[dict] = []
    log_lines_written = len((log_path.read_text().splitlines())) if log_path and log_path.exists() else 0

    module.train()
    if sharded is not None:
        sharded.objective.train()
    examples_seen = tokens_seen = 0
    last_loss = first_loss = float("nan")
    stopped_early = False
    t_start = time.perf_counter()
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not progress,
               mininterval=1.0, dynamic_ncols=True)
    with PeakRSS() as rss:
        while step < total_steps and not stopped_early:
            batches = bucketed_batches(items, cfg.batch_size, cfg.bucket_size, seed=cfg.seed * 1_000_003 + epoch)
            groups = [batches[i:i + cfg.grad_accum] for i in range(0, len(batches), cfg.grad_accum)]
            while batch_pos < len(groups) and step < total_steps:
                t0 = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                group = groups[batch_pos]
                n_tgt = sum(len(items[i].target) for b in group for i in b)
                loss_sum = 0.0
                for whole in group:
                    b, weight = dist.shard(whole), 1.0  # this rank's rows; the loss is still / global token count
                    if not b:
                        if sharded is None:
                            continue
                        b, weight = whole[:1], 0.0  # FSDP's collectives need every rank in every pass
                    batch = {k: v.to(device) for k, v in collate([items[i] for i in b], pad_id).items()}
                    with torch.autocast(device_type=amp_device, dtype=torch.bfloat16, enabled=amp):
                        if sharded is not None:
                            _, logp = sharded(batch["input_ids"], batch["attention_mask"], batch["target_mask"])
                            weight *= sharded.loss_scale
                        else:
                            _, logp = target_token_logprobs(module, batch["input_ids"], batch["attention_mask"],
                                                            batch["target_mask"])
                    loss = -logp.sum() / n_tgt * weight  # token-mean over the whole accumulated step
                    loss.backward()
                    loss_sum += loss.item() / (sharded.loss_scale if sharded is not None else 1.0)
                    if weight:
                        examples_seen += len(b)
                        tokens_seen += int(batch["attention_mask"].sum())
                if sharded is None:  # FSDP has reduce-scattered them already
                    dist.all_reduce_grads(list(params.values()))
                loss_sum = dist.all_sum(loss_sum)
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                step += 1
                batch_pos += 1
                last_loss = loss_sum
                if first_loss != first_loss:  # NaN: not set yet
                    first_loss = loss_sum
                dt = time.perf_counter() - t0
                n_ex = sum(len(b) for b in group)
                rec = {"step": step, "epoch": epoch, "loss": round(loss_sum, 6), "lr": scheduler.get_last_lr()[0],
                       "examples_per_s": round(n_ex / dt, 3), "elapsed_s": round(time.perf_counter() - t_start, 3)}
                if evaluate is not None and (step % eval_every == 0 or step == total_steps):
                    if sharded is not None:
                        sharded.sync()
                    module.eval()
                    score = float(evaluate())
                    module.train()
                    rec["dev"] = score
                    if best_score is None or score > best_score:
                        best_score, best_step, bad_evals = score, step, 0
                        best_state = {n: p.detach().clone() for n, p in params.items()}
                    else:
                        bad_evals += 1
                        if cfg.patience and bad_evals >= cfg.patience:
                            stopped_early = True
                            rec["early_stop"] = True
                history.append(rec)
                if log_path is not None:
                    with open(log_path, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                    log_lines_written += 1
                bar.set_postfix(loss=f"{loss_sum:.4f}", ex_s=f"{n_ex / dt:.1f}",
                                **({"dev": f"{rec['dev']:.3f}"} if "dev" in rec else {}))
                bar.update(1)
                if run_dir is not None and cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or
                                                                   step == total_steps or stopped_early):
                    tensors = _checkpoint_tensors(params, optimizer, best_state)  # every rank: gathers shards
                    if writer:
                        nxt_epoch, nxt_pos = (epoch + 1, 0) if batch_pos >= len(groups) else (epoch, batch_pos)
                        _save_checkpoint(run_dir, tensors, scheduler,
                                         {"step": step, "epoch": nxt_epoch, "batch_pos": nxt_pos,
                                          "best_score": best_score, "best_step": best_step, "bad_evals": bad_evals,
                                          "log_lines": log_lines_written, "stopped_early": stopped_early})
                if stopped_early:
                    break
            if batch_pos >= len(groups):
                epoch, batch_pos = epoch + 1, 0
    bar.close()
    seconds = time.perf_counter() - t_start
    if best_state is not None:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(dist.like(p, best_state[n]))
    was_sharded = sharded is not None
    if sharded is not None:
        sharded.sync()  # the caller's module gets the trained weights; the shards go
        del sharded
    module.eval()
    return TrainResult(
        steps=step, epochs_done=round(step / steps_per_epoch, 3), train_seconds=seconds,
        examples_per_s=examples_seen / seconds if seconds else 0.0,
        tokens_per_s=tokens_seen / seconds if seconds else 0.0, peak_rss_bytes=rss.peak,
        trainable_params=n_trainable, initial_loss=first_loss, final_loss=last_loss, best_dev=best_score, best_step=best_step,
        stopped_early=stopped_early, history=history,
        parallel="none" if world_size == 1 else f"{'fsdp' if was_sharded else 'data'} x{world_size}",
    )
