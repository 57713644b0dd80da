"""Experiment tracking against the real libraries: a tiny compare logged to MLflow and read back with
MLflow's own client (every run once, also when logged again); a training run's steps read back from
TensorBoard's event files."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from adaptlab.cli import app

mlflow = pytest.importorskip("mlflow", reason="tracking is in the test extra")
runner = CliRunner()


def _food(tmp_path):
    rows = [{"text": f"I ate a {w}", "label": "fruit"} for w in ("kiwi", "plum", "pear", "fig", "lime")] * 4 + [
        {"text": f"I cooked a {w}", "label": "veg"} for w in ("leek", "kale", "bean", "corn", "okra")
    ] * 4
    data = tmp_path / "food.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def test_compare_tracked_in_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    from adaptlab.tracking import RUN_TAG, default_uri, track_compare

    out = tmp_path / "cmp"
    args = [
        "compare",
        "--data",
        str(_food(tmp_path)),
        "--model",
        "tiny",
        "--out",
        str(out),
        "--strategies",
        "zero_shot,lora",
        "--train-sizes",
        "8,all",
        "--full-grid",
        "--no-forgetting",
        "--fragility-k",
        "0",
        "--consistency-examples",
        "0",
        "--no-progress",
        "--track",
        "mlflow",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "tracked in MLflow: 3 new of 3 runs" in r.output
    client = MlflowClient(tracking_uri=default_uri(out))
    exp = client.get_experiment_by_name(f"adaptlab:{out.name}")
    runs = client.search_runs([exp.experiment_id])
    by_id = {x.data.tags[RUN_TAG]: x for x in runs}
    from adaptlab.compare.store import load_results

    assert set(by_id) == {"compare"} | {rec["run"]["id"] for rec in load_results(out)}
    assert {"zero_shot-n0-s0", "lora-n8-s0"} < set(by_id) and len(by_id) == 4
    lora = next(x for k, x in by_id.items() if k.startswith("lora-n8"))
    assert lora.data.params["strategy"] == "lora" and lora.data.params["train_size"] == "8"
    assert {"quality", "test.accuracy", "train.seconds", "cost.artifact_bytes"} <= set(lora.data.metrics)
    assert lora.data.tags["mlflow.parentRunId"] == by_id["compare"].info.run_id
    curve = client.get_metric_history(by_id["compare"].info.run_id, "curve.lora")
    assert sorted(m.step for m in curve) == sorted(
        int(x.data.params["train_size"]) for k, x in by_id.items() if k.startswith("lora-")
    )
    parent = by_id["compare"].data.tags
    assert parent["recommendation.recommended"] in ("lora", "zero_shot") and parent["recommendation.ranked_by"]
    reports = [f.path for f in client.list_artifacts(by_id["compare"].info.run_id, "report")]
    assert "report/report.md" in reports and "report/report.html" in reports
    # Logged again (a resumed compare): nothing twice.
    assert track_compare(out)["new_runs"] == 0
    assert len(client.search_runs([exp.experiment_id])) == len(runs)


def test_train_writes_tensorboard_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "art"
    r = runner.invoke(
        app,
        [
            "train",
            "--strategy",
            "lora",
            "--data",
            str(_food(tmp_path)),
            "--out",
            str(out),
            "--model",
            "tiny",
            "--max-steps",
            "3",
            "--track",
            "tensorboard",
        ],
    )
    assert r.exit_code == 0, r.output
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert {"train/loss", "train/lr", "dev/metric"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3]
    bad = runner.invoke(
        app,
        [
            "train",
            "--strategy",
            "lora",
            "--data",
            "x",
            "--out",
            str(tmp_path / "b"),
            "--model",
            "tiny",
            "--track",
            "wandb",
        ],
    )
    assert bad.exit_code == 2 and "--track 'wandb'" in bad.output
