"""Experiment tracking where teams already look: MLflow for compares, TensorBoard for training.

``compare --track mlflow`` logs a finished compare from its run folder (the records the report is
built from), so it logs exactly what the report shows, and a resumed or repeated compare logs each
run once (runs are tagged with their record id and skipped when already there):

- one MLflow run per adaptlab run: its strategy, train size, seed, epochs and settings as params;
  its test metrics, quality, cost (fit seconds, peak memory, trainable parameters, artifact bytes,
  examples/s, prompt tokens, $ per 1M predictions) as metrics; the quality again with the train
  size as the step (the learning curve point); the artifact folder when it was kept;
- one parent run for the compare: the report (HTML, Markdown, plots) as artifacts, every
  strategy's learning curve as a stepped metric, and the recommendation as tags.

By default the store is inside the run folder (``OUT/mlflow``: an SQLite file and an artifact
folder: MLflow's plain-file store is deprecated), so nothing is sent anywhere; ``--tracking-uri``
points at any MLflow server instead. ``train --track tensorboard`` writes the loop's loss, learning
rate and dev metric per step as TensorBoard scalars (``OUT/tensorboard``).
"""

from __future__ import annotations

import json
from pathlib import Path

TRACKERS = ("mlflow",)
RUN_TAG = "adaptlab.run_id"
COMPARE_TAG = "adaptlab.compare"


class TrackingError(ValueError):
    """Tracking cannot be done (library missing, store unreachable); the message is one line."""


def default_uri(out: Path) -> str:
    return f"sqlite:///{(Path(out) / 'mlflow' / 'mlflow.db').resolve()}"


def _client(uri: str):
    import logging

    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingError("--track mlflow needs MLflow: pip install 'adaptlab[track]'") from None
    # MLflow and Alembic log each step of creating the SQLite store at INFO ("Creating initial MLflow
    # database tables...", every migration): noise in a compare's output. Their warnings still show.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def _experiment(client, name: str, out: Path, uri_given: bool) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None if uri_given else (Path(out) / "mlflow" / "artifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def _numbers(prefix: str, d: dict) -> dict:
    return {
        f"{prefix}{k}": float(v)
        for k, v in (d or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
    }


def _run_metrics(rec: dict) -> dict:
    ev, tr, cost = rec.get("eval") or {}, rec.get("train") or {}, rec.get("cost") or {}
    out = {"quality": ev.get("quality")}
    out.update(_numbers("test.", ev.get("test")))
    out.update(
        _numbers(
            "train.",
            {
                k: tr.get(k)
                for k in (
                    "seconds",
                    "peak_rss_bytes",
                    "trainable_params",
                    "examples_per_s",
                    "steps",
                    "best_dev",
                    "final_loss",
                )
            },
        )
    )
    out.update(_numbers("cost.", cost))
    out.update(_numbers("", {k: ev.get(k) for k in ("examples_per_s", "prompt_tokens", "overfit_gap")}))
    return {k: v for k, v in out.items() if v is not None}


def track_compare(out: str | Path, tracking_uri: str | None = None, experiment: str | None = None) -> dict:
    """Log the compare in ``out`` to MLflow; returns where (uri, experiment, parent run) and counts."""
    from adaptlab.compare.recommend import Constraints, recommend
    from adaptlab.compare.store import load_results

    out = Path(out)
    records = load_results(out)
    if not records:
        raise TrackingError(f"{out}: no finished runs to track")
    uri = tracking_uri or default_uri(out)
    if tracking_uri is None:
        (out / "mlflow").mkdir(parents=True, exist_ok=True)
    client = _client(uri)
    name = experiment or f"adaptlab:{out.resolve().name}"
    try:
        exp_id = _experiment(client, name, out, tracking_uri is not None)
        logged = {r.data.tags.get(RUN_TAG): r for r in client.search_runs([exp_id], max_results=10_000)}
    except Exception as e:  # noqa: BLE001 - an unreachable server, a bad URI: one line
        raise TrackingError(f"--tracking-uri {uri}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    parent = logged.get("compare")
    if parent is None:
        parent = client.create_run(
            exp_id, run_name=f"compare {out.name}", tags={RUN_TAG: "compare", COMPARE_TAG: str(out.resolve())}
        )
    parent_id = parent.info.run_id
    new = 0
    curves: dict[str, dict[int, list[float]]] = {}
    for rec in records:
        run = rec["run"]
        curves.setdefault(run["strategy"], {}).setdefault(run["train_size"], []).append(rec["eval"]["quality"])
        if run["id"] in logged:
            continue
        r = client.create_run(
            exp_id,
            run_name=run["id"],
            tags={
                RUN_TAG: run["id"],
                COMPARE_TAG: str(out.resolve()),
                "mlflow.parentRunId": parent_id,
                "strategy": run["strategy"],
                "kind": run.get("kind") or "",
                "metric": rec["eval"].get("metric") or "",
            },
        )
        rid = r.info.run_id
        params = {
            "strategy": run["strategy"],
            "train_size": run["train_size"],
            "seed": run["seed"],
            "epochs": run.get("epochs"),
            **{f"settings.{k}": v for k, v in (run.get("settings") or {}).items()},
        }
        for k, v in params.items():
            client.log_param(rid, k, "" if v is None else str(v)[:500])
        for k, v in _run_metrics(rec).items():
            client.log_metric(rid, k, v)
        client.log_metric(rid, "curve.quality", rec["eval"]["quality"], step=int(run["train_size"]))
        folder = out / "artifacts" / run["id"]
        if (rec.get("cost") or {}).get("artifact_kept") and folder.is_dir():
            client.log_artifacts(rid, str(folder), artifact_path="artifact")
        client.set_terminated(rid)
        new += 1
    for strategy, points in curves.items():
        for size, qs in sorted(points.items()):
            client.log_metric(parent_id, f"curve.{strategy}", sum(qs) / len(qs), step=int(size))
    report = out / "report"
    if report.is_dir():
        client.log_artifacts(parent_id, str(report), artifact_path="report")
    rec = recommend(records, Constraints())
    tags = {
        "recommended": rec.winner or "",
        "ranked_by": rec.metric or "",
        "target_size": str(rec.target or ""),
        "ranking": ", ".join(f"{r['strategy']} {r.get('quality', 0):.3f}" for r in rec.ranked)[:4000],
    }
    race = out / "race.json"
    if race.exists():
        tags["decision"] = str(json.loads(race.read_text()).get("decision", ""))[:4000]
    for k, v in tags.items():
        client.set_tag(parent_id, f"recommendation.{k}", v)
    client.set_terminated(parent_id)
    return {
        "uri": uri,
        "experiment": name,
        "experiment_id": exp_id,
        "parent_run": parent_id,
        "runs": len(records),
        "new_runs": new,
    }


def tensorboard_from_log(run_dir: str | Path, out: str | Path) -> int:
    """Write a training run's steps (``train_log.jsonl``: loss, learning rate, dev metric) as
    TensorBoard scalars under ``out``; returns the steps written."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrackingError("--track tensorboard needs TensorBoard: pip install 'adaptlab[track]'") from None
    log = Path(run_dir) / "train_log.jsonl"
    if not log.exists():
        raise TrackingError(f"{log}: no training log (prompt strategies do not train)")
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    writer = SummaryWriter(log_dir=str(out))
    try:
        for r in rows:
            writer.add_scalar("train/loss", r["loss"], r["step"])
            writer.add_scalar("train/lr", r["lr"], r["step"])
            writer.add_scalar("train/examples_per_s", r["examples_per_s"], r["step"])
            if "dev" in r:
                writer.add_scalar("dev/metric", r["dev"], r["step"])
    finally:
        writer.close()
    return len(rows)
