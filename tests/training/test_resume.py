"""Kill -9 a training run mid-way, resume it, and get the exact weights of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from adaptlab.training.config import TrainConfig
from adaptlab.training.loop import lr_lambda

JOB = """
import sys
from adaptlab.data.loading import Example, TaskData
from adaptlab.models.tiny import build_tiny
from adaptlab.strategies import get_strategy, make_config
from adaptlab.training import TrainConfig
words = [("apple", "fruit"), ("pear", "fruit"), ("plum", "fruit"), ("kale", "veg"), ("leek", "veg"), ("okra", "veg"),
         ("fig", "fruit"), ("bean", "veg")]
data = TaskData("classification", [Example(f"item {w}", l, i + 1) for i, (w, l) in enumerate(words)], "mem",
                label_names=["fruit", "veg"])
run_dir, out, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
strat = get_strategy("lora").strategy_cls(make_config("lora", dropout=0.1))
cfg = TrainConfig(epochs=60, batch_size=3, grad_accum=2, lr=5e-3, checkpoint_every=3, seed=7, eval_every=10)
art = strat.fit(build_tiny(), data, data, cfg, run_dir=run_dir, resume=resume, progress=False)
art.save(out)
"""


def run_job(tmp_path, run_dir, out, resume, kill_after_lines=None):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir), str(out), "1" if resume else "0"], env=env)
    if kill_after_lines is None:
        assert proc.wait(timeout=300) == 0
        return None
    log = Path(run_dir) / "train_log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= kill_after_lines:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    return proc.returncode


def test_kill_mid_run_then_resume_gives_identical_weights(tmp_path):
    run_job(tmp_path, tmp_path / "ref_run", tmp_path / "ref", resume=False)
    rc = run_job(tmp_path, tmp_path / "run", tmp_path / "out", resume=False, kill_after_lines=25)
    assert rc == -signal.SIGKILL, "the job finished before it could be killed; make it longer"
    steps_at_kill = len((tmp_path / "run" / "train_log.jsonl").read_text().splitlines())
    run_job(tmp_path, tmp_path / "run", tmp_path / "out", resume=True)
    ref = load_file(tmp_path / "ref" / "adapter_model.safetensors")
    got = load_file(tmp_path / "out" / "adapter_model.safetensors")
    assert ref.keys() == got.keys()
    for k in ref:
        assert (ref[k] == got[k]).all(), k
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    ref_log = [json.loads(line) for line in (tmp_path / "ref_run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, len(ref_log) + 1))  # no step lost or repeated
    assert [r["loss"] for r in log] == [r["loss"] for r in ref_log]
    assert steps_at_kill < len(ref_log)


def test_schedule_warmup_then_cosine():
    f = lr_lambda(TrainConfig(warmup_ratio=0.1, schedule="cosine"), 100)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5, abs=0.02) and f(100) == pytest.approx(0.0)
    g = lr_lambda(TrainConfig(warmup_ratio=0.0, schedule="linear"), 10)
    assert g(5) == pytest.approx(0.5)
