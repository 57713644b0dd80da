"""Two gloo processes on CPU train to the same weights as one process with the same global batch."""

import os

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from adaptlab.data.loading import Example, TaskData
from adaptlab.models.tiny import build_tiny
from adaptlab.strategies import get_strategy, make_config
from adaptlab.training import TrainConfig

DATA = TaskData("classification", [Example(f"item {w}", lab, i + 1) for i, (w, lab) in enumerate(
    [("apple", "fruit"), ("pear", "fruit"), ("plum", "fruit"), ("fig", "fruit"), ("kale", "veg"), ("leek", "veg"),
     ("okra", "veg"), ("corn", "veg"), ("bean", "veg")])], "mem", label_names=["fruit", "veg"])
CASES = {"lora": ({"dropout": 0.0}, 1e-2), "soft_prompt": ({"n_tokens": 3}, 0.3)}


def _fit(name: str, out: str) -> None:
    overrides, lr = CASES[name]
    base = build_tiny()
    strat = get_strategy(name).strategy_cls(make_config(name, **overrides))
    cfg = TrainConfig(max_steps=5, batch_size=4, grad_accum=2, lr=lr, warmup_ratio=0.0, checkpoint_every=0, seed=3)
    art = strat.fit(base, DATA, None, cfg, progress=False)
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        params = {n: p.detach().contiguous() for n, p in art.module.named_parameters()
                  if "lora_" in n or n.endswith("prompt")}
        save_file(params, out)


def _worker(rank: int, world: int, init: str, name: str, out: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        _fit(name, out)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", list(CASES))
def test_two_gloo_processes_equal_one_process(name, tmp_path):
    single = tmp_path / "single.safetensors"
    _fit(name, str(single))
    double = tmp_path / "ddp.safetensors"
    mp.start_processes(_worker, args=(2, f"file://{tmp_path}/rendezvous", name, str(double)), nprocs=2,
                       join=True, start_method="spawn")
    a, b = load_file(single), load_file(double)
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), (k, (a[k] - b[k]).abs().max())
    if name == "lora":  # training moved the weights: B starts at zero
        assert any(a[k].abs().max() > 0 for k in a if "lora_B" in k)
