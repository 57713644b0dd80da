"""Device and precision choices: no code path assumes CUDA; bf16 autocast runs wherever torch has it."""

import pytest
import torch

from adaptlab.data.loading import Example, TaskData
from adaptlab.models.base import ModelError, resolve_device
from adaptlab.models.tiny import build_tiny
from adaptlab.strategies import get_strategy, make_config
from adaptlab.training import TrainConfig
from adaptlab.training.config import autocast_for

DATA = TaskData(
    "classification",
    [
        Example(f"item {w}", lab, i + 1)
        for i, (w, lab) in enumerate([("apple", "fruit"), ("pear", "fruit"), ("kale", "veg"), ("leek", "veg")])
    ],
    "mem",
    label_names=["fruit", "veg"],
)


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ModelError, match="use auto, cpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_precision_choices():
    assert autocast_for("auto", "cpu") == ("cpu", False)
    assert autocast_for("fp32", "cpu") == ("cpu", False)
    assert autocast_for("bf16", "cpu") == ("cpu", True)
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_runs_in_each_precision(precision):
    base = build_tiny()
    strat = get_strategy("lora").strategy_cls(make_config("lora"))
    art = strat.fit(
        base,
        DATA,
        None,
        TrainConfig(max_steps=3, batch_size=2, lr=1e-2, checkpoint_every=0, precision=precision),
        progress=False,
    )
    assert art.metrics["train"]["final_loss"] == art.metrics["train"]["final_loss"]  # not NaN
    assert all(p.dtype == torch.float32 for p in art.module.parameters())  # master weights stay fp32
