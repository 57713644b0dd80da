"""Two gloo processes on CPU train to the same weights as one process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from adaptlab.data.loading import Example, TaskData
from adaptlab.models.tiny import build_tiny
from adaptlab.strategies import get_strategy, make_config
from adaptlab.training import TrainConfig

DATA = TaskData(
    "classification",
    [
        Example(f"item {w}", lab, i + 1)
        for i, (w, lab) in enumerate(
            [
                ("apple", "fruit"),
                ("pear", "fruit"),
                ("plum", "fruit"),
                ("fig", "fruit"),
                ("kale", "veg"),
                ("leek", "veg"),
                ("okra", "veg"),
                ("corn", "veg"),
                ("bean", "veg"),
            ]
        )
    ],
    "mem",
    label_names=["fruit", "veg"],
)
CASES = {"lora": ({"dropout": 0.0}, 1e-2), "soft_prompt": ({"n_tokens": 3}, 0.3), "full": ({}, 1e-3)}


def _fit(name: str, out: str, fsdp: bool = False, steps: int = 5, run_dir: str | None = None) -> None:
    overrides, lr = CASES[name]
    base = build_tiny()
    strat = get_strategy(name).strategy_cls(make_config(name, **overrides))
    cfg = TrainConfig(
        max_steps=steps,
        batch_size=4,
        grad_accum=2,
        lr=lr,
        warmup_ratio=0.0,
        schedule="constant",
        checkpoint_every=3 if run_dir else 0,
        seed=3,
        fsdp=fsdp,
    )
    art = strat.fit(base, DATA, None, cfg, progress=False, run_dir=run_dir, resume=run_dir is not None)
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    expected = "none" if world == 1 else f"{'fsdp' if fsdp and name == 'full' else 'data'} x{world}"  # adapters: data
    assert art.metrics["train"]["parallel"] == expected
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        params = {
            n: p.detach().contiguous()
            for n, p in art.module.named_parameters()
            if "lora_" in n or n.endswith("prompt") or name == "full"
        }
        save_file(params, out)


def _worker(
    rank: int,
    world: int,
    init: str,
    name: str,
    out: str,
    fsdp: bool = False,
    steps: int = 5,
    run_dir: str | None = None,
) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        _fit(name, out, fsdp, steps, run_dir)
    finally:
        torch.distributed.destroy_process_group()


def _two(tmp_path, tag, *args):
    mp.start_processes(
        _worker, args=(2, f"file://{tmp_path}/rendezvous-{tag}", *args), nprocs=2, join=True, start_method="spawn"
    )


def _same(single, double, atol=1e-5):
    a, b = load_file(single), load_file(double)
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol), (k, (a[k] - b[k]).abs().max())
    return a


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["lora", "soft_prompt"])
def test_two_gloo_processes_equal_one_process(name, tmp_path):
    single = tmp_path / "single.safetensors"
    _fit(name, str(single))
    double = tmp_path / "ddp.safetensors"
    # LoRA asks for fsdp too: an adapter is not sharded, it trains data-parallel (checked in _fit)
    _two(tmp_path, "a", name, str(double), name == "lora")
    # Each rank pads its half of a batch to its own longest row, so sums run in another order: Adam's
    # normalisation turns that float noise in near-zero gradients into ~1e-5 moves after 5 steps.
    a = _same(single, double, atol=1e-4)
    if name == "lora":  # training moved the weights: B starts at zero
        assert any(a[k].abs().max() > 0 for k in a if "lora_B" in k)


@pytest.mark.timeout(300)
def test_fsdp_full_fine_tune_equals_one_process_and_resumes(tmp_path):
    """Full fine-tuning sharded over 2 gloo processes (FSDP2) gives the single-process weights; a
    run stopped after its step-3 checkpoint (gathered shards) resumes, sharded again, to the same end."""
    base = build_tiny()
    single = tmp_path / "single.safetensors"
    _fit("full", str(single))
    sharded = tmp_path / "fsdp.safetensors"
    _two(tmp_path, "a", "full", str(sharded), True)
    a = _same(single, sharded, atol=1e-5)
    start = dict(base.model.named_parameters())
    assert any(not torch.allclose(a[k], start[k.removeprefix("model.")]) for k in a)  # the weights moved
    run = tmp_path / "run"
    _two(tmp_path, "b", "full", str(tmp_path / "first3.safetensors"), True, 3, str(run))
    assert (run / "checkpoint" / "state.json").exists()
    resumed = tmp_path / "resumed.safetensors"
    _two(tmp_path, "c", "full", str(resumed), True, 5, str(run))
    _same(single, resumed, atol=1e-5)


LAUNCH_ARGS = [
    "train",
    "--strategy",
    "lora",
    "--data",
    "demo",
    "--model",
    "tiny",
    "--max-steps",
    "3",
    "--batch-size",
    "4",
    "--train-size",
    "24",
    "--set",
    "dropout=0.0",
]


@pytest.mark.timeout(300)
def test_real_launchers_run_the_cli_data_parallel(tmp_path):
    """What a user types: `torchrun` and `accelerate launch --multi_gpu` (gloo on a CPU machine) start
    2 ranks of `adaptlab train`; each run's artifact equals the single-process one and says so. Both
    launchers come with the project's dependencies (torch, accelerate), so a missing one fails here."""
    bindir = Path(sys.executable).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ADAPTLAB_THREADS": "1"}
    launchers = {
        "single": [str(bindir / "adaptlab")],
        "torchrun": [str(bindir / "torchrun"), "--nproc_per_node", "2", "-m", "adaptlab.cli"],
        "accelerate": [
            str(bindir / "accelerate"),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "adaptlab.cli",
        ],
    }
    for name, cmd in launchers.items():
        out = tmp_path / name
        proc = subprocess.run(
            [*cmd, *LAUNCH_ARGS, "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        meta = json.loads((out / "adaptlab_artifact.json").read_text())
        assert meta["metrics"]["train"]["parallel"] == ("none" if name == "single" else "data x2")
    single = tmp_path / "single" / "adapter_model.safetensors"
    for name in ("torchrun", "accelerate"):
        _same(str(single), str(tmp_path / name / "adapter_model.safetensors"))
