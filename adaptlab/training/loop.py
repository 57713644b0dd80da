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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from adaptlab.models.runtime import target_token_logprobs
from adaptlab.training.batching import bucketed_batches
from adaptlab.training.config import TrainConfig, autocast_for
from adaptlab.training.objectives import Objective, TokenNLL
from adaptlab.utils import atomic_write_json, atomic_write_text, check_deadline

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
    parallel: str = "none"  # "none" | "data" (gradients all-reduced over ranks) | "fsdp" (sharded), with the rank count

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

    out = {
        "trainable": {n: full(p.detach()).contiguous() for n, p in params.items()},
        "best": None if best is None else {n: full(t).contiguous() for n, t in best.items()},
    }
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
    atomic_write_json(
        tmp / "state.json",
        {
            **state,
            "scheduler": scheduler.state_dict()["last_epoch"],
            "opt_scalars": tensors["opt_scalars"],
            "python_rng": random.getstate()[1],
            "python_rng_pos": random.getstate()[2],
        },
    )
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


def _load_checkpoint(d: Path, params: dict, optimizer) -> tuple[dict, dict | None]:
    """Restore weights and optimizer into ``params`` (sharded again under FSDP) and the RNG states;
    returns the saved state (its ``scheduler`` is the step the schedule resumes at) and best weights."""
    from adaptlab.training.distributed import like

    state = json.loads((d / "state.json").read_text())
    saved = load_file(d / "trainable.safetensors")
    missing, unexpected = set(params) - set(saved), set(saved) - set(params)
    if missing or unexpected:
        raise RuntimeError(
            f"{d}: checkpoint does not match the model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]})"
        )
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
    torch.set_rng_state(load_file(d / "rng.safetensors")["torch"])
    random.setstate((3, tuple(state["python_rng"]), state["python_rng_pos"]))
    best = load_file(d / "best.safetensors") if (d / "best.safetensors").exists() else None
    return state, best


# ------------------------------------------------------------------ the loop
class Trainer:
    """One training run, as short methods (torchtune's recipes): set up the parameters, optimizer and
    schedule; restore a checkpoint; take steps; evaluate on dev; write checkpoints; report."""

    def __init__(
        self,
        module: torch.nn.Module,
        items: list,
        cfg: TrainConfig,
        pad_id: int,
        evaluate: Callable[[], float] | None,
        run_dir: Path | None,
        resume: bool,
        progress: bool,
        objective: Objective | None = None,
        reference: torch.nn.Module | None = None,
    ):
        from adaptlab.training import distributed as dist

        self.dist = dist
        self.module, self.items, self.cfg, self.pad_id, self.evaluate = module, items, cfg, pad_id, evaluate
        self.run_dir, self.resume = run_dir, resume
        self.rank, self.world_size = dist.init_from_env()
        self.writer = self.rank == 0  # every rank resumes from the checkpoint; only rank 0 writes
        self.progress = progress and self.writer
        if not items:
            raise ValueError("no training examples")
        self._setup_params()
        self._setup_objective(objective or TokenNLL(), pad_id, reference)
        self.amp_device, self.amp = autocast_for(cfg.precision, self.device)
        self.steps_per_epoch = math.ceil(math.ceil(len(items) / cfg.batch_size) / cfg.grad_accum)
        self.total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * self.steps_per_epoch))
        self.eval_every = cfg.eval_every or self.steps_per_epoch
        self.optimizer = torch.optim.AdamW(list(self.params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step, self.epoch, self.batch_pos = 0, 0, 0
        self.best_score, self.best_step, self.best_state, self.bad_evals = None, None, None, 0
        self.stopped_early = False
        self.history: list[dict] = []
        self.log_path, self.log_lines = None, 0
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self._restore()
        self.scheduler = self._setup_lr_scheduler(last_epoch=self.step - 1)

    # ------------------------------------------------------------------ setup
    def _setup_params(self) -> None:
        """Trainable parameters by name; a full fine-tune under --fsdp trains a sharded copy."""
        self.params = trainable_named(self.module)
        if not self.params:
            raise ValueError("the module has no trainable parameters")
        self.n_trainable = sum(p.numel() for p in self.params.values())
        self.device = next(iter(self.params.values())).device
        self.sharded = None
        if self.cfg.fsdp and self.world_size > 1:
            own = getattr(self.module, "contribution", None)
            owns_weights = own is not None and own().model is not None
            frozen = sum(p.numel() for p in self.module.parameters() if not p.requires_grad)
            if frozen or not owns_weights:  # adapters: their gradients are small, data parallelism fits
                print(
                    f"fsdp: {self.n_trainable:,} trainable parameters of an adapter (not a full fine-tune): "
                    f"training data-parallel instead",
                    file=sys.stderr,
                )
            else:
                self.sharded = self.dist.Sharded(self.module)
                self.params = self.sharded.params  # the optimizer, checkpoints and best weights work on the shards

    def _setup_objective(self, objective: Objective, pad_id: int, reference) -> None:
        """The task type's loss; a preference loss compares with ``reference`` (the base model)."""
        if objective.uses_reference and self.sharded is not None:
            raise ValueError(f"{objective.name}: preference losses do not run under --fsdp; train without it")
        objective.bind(self.items, reference if objective.uses_reference else None, pad_id, self.device)
        self.objective = objective

    def _setup_lr_scheduler(self, last_epoch: int):
        """Warm-up + decay; ``last_epoch`` = the last step taken, so a resumed run continues its schedule."""
        for g in self.optimizer.param_groups:
            g.setdefault("initial_lr", self.cfg.lr)
        return torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(self.cfg, self.total_steps), last_epoch=last_epoch
        )

    def _restore(self) -> None:
        """Open the run folder: resume from its checkpoint, or start its log afresh."""
        run_dir = self.run_dir
        if run_dir is None:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt = _find_checkpoint(run_dir) if self.resume else None
        if ckpt is not None:
            state, self.best_state = _load_checkpoint(ckpt, self.params, self.optimizer)
            self.step, self.epoch, self.batch_pos = state["step"], state["epoch"], state["batch_pos"]
            self.best_score, self.best_step, self.bad_evals = (
                state["best_score"],
                state["best_step"],
                state["bad_evals"],
            )
            log_lines = (run_dir / LOG).read_text().splitlines() if (run_dir / LOG).exists() else []
            if self.writer:
                atomic_write_text(run_dir / LOG, "".join(line + "\n" for line in log_lines[: state["log_lines"]]))
        elif self.writer and (not self.resume or not (run_dir / LOG).exists()):
            atomic_write_text(run_dir / LOG, "")
        self.dist.barrier()  # nobody starts while rank 0 is still rewriting the log
        if self.writer:
            self.log_path = run_dir / LOG
            self.log_lines = len(self.log_path.read_text().splitlines()) if self.log_path.exists() else 0

    # ------------------------------------------------------------------ one optimizer step
    def _logprobs(self):
        """The module's target-token log-probabilities: (input_ids, attention_mask, target_mask) ->
        (rows, logp); the sharded copy's under FSDP."""
        if self.sharded is not None:
            return self.sharded
        return lambda ids, att, tgt: target_token_logprobs(self.module, ids, att, tgt)

    def _forward_backward(self, whole: list[int], n_norm: int) -> tuple[float, int, int]:
        """Loss and gradients of this rank's rows of one micro-batch: (loss, examples, tokens)."""
        dist, sharded = self.dist, self.sharded
        b, weight = dist.shard(whole), 1.0  # this rank's rows; the loss is still / the whole step's weight
        if not b:
            if sharded is None:
                return 0.0, 0, 0
            b, weight = whole[:1], 0.0  # FSDP's collectives need every rank in every pass
        with torch.autocast(device_type=self.amp_device, dtype=torch.bfloat16, enabled=self.amp):
            loss_sum, n_tok = self.objective.loss_sum(self._logprobs(), b)
        if sharded is not None:
            weight *= sharded.loss_scale
        loss = loss_sum / n_norm * weight  # the mean over the whole accumulated step
        loss.backward()
        value = loss.item() / (sharded.loss_scale if sharded is not None else 1.0)
        if not weight:
            return value, 0, 0
        return value, len(b), n_tok

    def _train_step(self, group: list[list[int]]) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        n_norm = sum(self.objective.weight(self.items[i]) for b in group for i in b)
        loss_sum = 0.0
        for whole in group:
            loss, n_ex, n_tok = self._forward_backward(whole, n_norm)
            loss_sum += loss
            self.examples_seen += n_ex
            self.tokens_seen += n_tok
        params = list(self.params.values())
        if self.sharded is None:  # FSDP has reduce-scattered them already
            self.dist.all_reduce_grads(params)
        loss_sum = self.dist.all_sum(loss_sum)
        if self.cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.batch_pos += 1
        return loss_sum

    # ------------------------------------------------------------------ dev evaluation, early stopping
    def _evaluate(self, rec: dict) -> None:
        if self.sharded is not None:
            self.sharded.sync()
        self.module.eval()
        score = float(self.evaluate())
        self.module.train()
        rec["dev"] = score
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_step, self.bad_evals = score, self.step, 0
            self.best_state = {n: p.detach().clone() for n, p in self.params.items()}
        else:
            self.bad_evals += 1
            if self.cfg.patience and self.bad_evals >= self.cfg.patience:
                self.stopped_early = True
                rec["early_stop"] = True

    # ------------------------------------------------------------------ log and checkpoint
    def _log(self, rec: dict) -> None:
        self.history.append(rec)
        if self.log_path is not None:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            self.log_lines += 1

    def _save_checkpoint(self, n_groups: int) -> None:
        tensors = _checkpoint_tensors(self.params, self.optimizer, self.best_state)  # every rank: gathers shards
        if self.writer:
            nxt_epoch, nxt_pos = (self.epoch + 1, 0) if self.batch_pos >= n_groups else (self.epoch, self.batch_pos)
            _save_checkpoint(
                self.run_dir,
                tensors,
                self.scheduler,
                {
                    "step": self.step,
                    "epoch": nxt_epoch,
                    "batch_pos": nxt_pos,
                    "best_score": self.best_score,
                    "best_step": self.best_step,
                    "bad_evals": self.bad_evals,
                    "log_lines": self.log_lines,
                    "stopped_early": self.stopped_early,
                },
            )

    def _checkpoint_due(self) -> bool:
        every = self.cfg.checkpoint_every
        return (
            self.run_dir is not None
            and bool(every)
            and (self.step % every == 0 or self.step == self.total_steps or self.stopped_early)
        )

    # ------------------------------------------------------------------ the run
    def _epoch(self, bar, t_start: float) -> None:
        cfg = self.cfg
        batches = bucketed_batches(self.items, cfg.batch_size, cfg.bucket_size, seed=cfg.seed * 1_000_003 + self.epoch)
        groups = [batches[i : i + cfg.grad_accum] for i in range(0, len(batches), cfg.grad_accum)]
        while self.batch_pos < len(groups) and self.step < self.total_steps:
            check_deadline()  # a compare's time limit: stop by measured time (adaptlab.utils.time_limit)
            t0 = time.perf_counter()
            group = groups[self.batch_pos]
            loss = self._train_step(group)
            self.last_loss = loss
            if self.first_loss != self.first_loss:  # NaN: not set yet
                self.first_loss = loss
            dt = time.perf_counter() - t0
            n_ex = sum(len(b) for b in group)
            rec = {
                "step": self.step,
                "of": self.total_steps,
                "epoch": self.epoch,
                "loss": round(loss, 6),
                "lr": self.scheduler.get_last_lr()[0],
                "examples_per_s": round(n_ex / dt, 3),
                "elapsed_s": round(time.perf_counter() - t_start, 3),
            }
            if self.evaluate is not None and (self.step % self.eval_every == 0 or self.step == self.total_steps):
                self._evaluate(rec)
            self._log(rec)
            bar.set_postfix(
                loss=f"{loss:.4f}", ex_s=f"{n_ex / dt:.1f}", **({"dev": f"{rec['dev']:.3f}"} if "dev" in rec else {})
            )
            bar.update(1)
            if self._checkpoint_due():
                self._save_checkpoint(len(groups))
            if self.stopped_early:
                return
        if self.batch_pos >= len(groups):
            self.epoch, self.batch_pos = self.epoch + 1, 0

    def run(self) -> TrainResult:
        self.module.train()
        if self.sharded is not None:
            self.sharded.objective.train()
        self.examples_seen = self.tokens_seen = 0
        self.last_loss = self.first_loss = float("nan")
        t_start = time.perf_counter()
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not self.progress,
            mininterval=1.0,
            dynamic_ncols=True,
        )
        with PeakRSS() as rss:
            while self.step < self.total_steps and not self.stopped_early:
                self._epoch(bar, t_start)
        bar.close()
        seconds = time.perf_counter() - t_start
        if self.best_state is not None:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(self.dist.like(p, self.best_state[n]))
        was_sharded = self.sharded is not None
        if was_sharded:
            self.sharded.sync()  # the caller's module gets the trained weights; the shards go
            self.sharded = None
        self.module.eval()
        parallel = "none" if self.world_size == 1 else f"{'fsdp' if was_sharded else 'data'} x{self.world_size}"
        return TrainResult(
            steps=self.step,
            epochs_done=round(self.step / self.steps_per_epoch, 3),
            train_seconds=seconds,
            examples_per_s=self.examples_seen / seconds if seconds else 0.0,
            tokens_per_s=self.tokens_seen / seconds if seconds else 0.0,
            peak_rss_bytes=rss.peak,
            trainable_params=self.n_trainable,
            initial_loss=self.first_loss,
            final_loss=self.last_loss,
            best_dev=self.best_score,
            best_step=self.best_step,
            stopped_early=self.stopped_early,
            history=self.history,
            parallel=parallel,
        )


def train(
    module: torch.nn.Module,
    items: list,
    cfg: TrainConfig,
    pad_id: int,
    evaluate: Callable[[], float] | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    objective: Objective | None = None,
    reference: torch.nn.Module | None = None,
) -> TrainResult:
    """Train ``module``'s parameters that require grad on ``items``.

    ``module`` provides ``hidden(input_ids, attention_mask)`` and ``project(hidden)``.
    ``evaluate()`` returns a dev score (higher is better) for early stopping; the best
    parameters are restored at the end. With ``run_dir`` the loop checkpoints and logs there;
    ``resume=True`` continues from its checkpoint. ``objective`` is the loss (default: the target
    tokens' NLL; :mod:`adaptlab.training.objectives`), ``items`` what it reads; ``reference`` the
    frozen model a preference loss compares with (the base model: adaptations never change it).
    """
    return Trainer(
        module,
        items,
        cfg,
        pad_id,
        evaluate,
        Path(run_dir) if run_dir is not None else None,
        resume,
        progress,
        objective,
        reference,
    ).run()
