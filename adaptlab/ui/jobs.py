"""Compares started from the UI: each is an ``adaptlab compare`` process of its own, writing into
``compares/<id>/`` under the UI's work folder. The folder is the state (the command in ``job.json``,
the runs in ``results/``, progress in ``live/status.json``, the output in ``log.txt``), so a
compare outlives a restart of the UI and is read back from its folder; one that stopped before it
finished resumes with the same command (compare resumes from its results)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from adaptlab.compare.config import parse_budget
from adaptlab.compare.grid import save_config
from adaptlab.models.registry import list_models
from adaptlab.ui.state import UiError, UiState, check_id
from adaptlab.utils import atomic_write_json

MODELS = tuple(list_models())  # the named base models (adaptlab/models/known.py)


@dataclass
class CompareRequest:
    """The compare form, checked field by field (each error names its field)."""

    source: str
    model: str
    strategies: list[str]
    train_sizes: str
    seeds: int = 1
    budget: str = ""
    adaptive: bool = True
    test_limit: int = 0
    extras: bool = True
    track: bool = False  # log the runs, report and recommendation to MLflow (OUT/mlflow)

    def argv(self, st: UiState, out: Path) -> list[str]:
        """The compare command: it runs the settings saved in ``out/compare.json`` (:meth:`config`),
        never flags re-written from the form."""
        argv = ["compare", "--config", str(out / "compare.json"), "--out", str(out), "--no-progress"]
        return argv + (["--track", "mlflow"] if self.track else [])

    def config(self, st: UiState):
        """The form as the compare's settings, each field checked (errors name the field)."""
        from adaptlab.compare.config import CompareConfig
        from adaptlab.strategies import list_strategies

        data = data_arg(st, self.source)
        if self.model not in MODELS:
            raise UiError(400, f"model: {self.model!r} is not one of {', '.join(MODELS)}")
        known = list_strategies()
        if not self.strategies or any(s not in known for s in self.strategies):
            raise UiError(400, f"strategies: choose one or more of {', '.join(known)}")
        sizes = [s.strip() for s in self.train_sizes.split(",") if s.strip()]
        if not sizes or any(not (s == "all" or (s.isdigit() and 0 < int(s) <= 1_000_000)) for s in sizes):
            raise UiError(400, f"train sizes: {self.train_sizes!r}: positive whole numbers or 'all', comma-separated")
        if not 1 <= self.seeds <= 5:
            raise UiError(400, f"seeds: {self.seeds}: from 1 to 5")
        if self.test_limit < 0:
            raise UiError(400, f"test limit: {self.test_limit}: 0 (all) or more")
        try:
            budget = parse_budget(self.budget or None)
        except ValueError as e:
            raise UiError(400, f"budget: {e}") from None
        extras = {} if self.extras else {"fragility_k": 0, "forgetting": False, "consistency_examples": 0}
        try:
            return CompareConfig(
                data=data,
                model=self.model,
                strategies=list(self.strategies),
                train_sizes=[s if s == "all" else int(s) for s in sizes],
                seeds=self.seeds,
                test_limit=self.test_limit,
                adaptive=self.adaptive,
                tune=self.adaptive,
                budget_seconds=budget,
                data_dir=str(st.data_dir) if st.data_dir else None,
                **extras,
            )
        except ValueError as e:
            raise UiError(400, str(e)) from None


def data_arg(st: UiState, source: str) -> str:
    """``named:NAME`` or ``upload:ID`` -> what ``--data`` takes; never a path from the request."""
    kind, _, name = (source or "").partition(":")
    if kind == "named":
        from adaptlab.data.named import list_named

        if name not in list_named(st.data_dir):
            raise UiError(400, f"data: no named dataset {name!r}")
        return name
    if kind == "upload":
        return str(upload_path(st, name))
    raise UiError(400, "data: pick a named dataset or an uploaded file")


def upload_path(st: UiState, upload_id: str) -> Path:
    check_id(upload_id, "upload")
    found = [p for p in st.uploads.glob(f"{upload_id}.*") if p.suffix in (".jsonl", ".csv", ".tsv")]
    if not found:
        raise UiError(404, f"no such upload: {upload_id!r}")
    return found[0]


def upload_name(st: UiState, upload_id: str) -> str:
    meta = st.uploads / f"{upload_id}.json"
    return json.loads(meta.read_text())["name"] if meta.exists() else upload_id


class Jobs:
    def __init__(self, st: UiState):
        self.st = st
        self.children: dict[str, subprocess.Popen] = {}  # started by this process (reaped when they end)

    def _job(self, job_id: str) -> tuple[Path, dict]:
        entry = self.st.compares / check_id(job_id, "compare")
        if not (entry / "job.json").exists():
            raise UiError(404, f"no such compare: {job_id!r}")
        job = json.loads((entry / "job.json").read_text())
        return (Path(job["external"]) if job.get("external") else entry), job

    def folder(self, job_id: str) -> Path:
        """The run folder: under the work folder, or one opened with ``adaptlab ui --open``."""
        return self._job(job_id)[0]

    def adopt(self, run_folder: Path) -> str:
        """List a run folder made by ``adaptlab compare`` (started from the CLI, say) among the
        compares; it stays where it is. The operator names it on the command line, never a request."""
        run_folder = Path(run_folder).resolve()
        if not (run_folder / "results").is_dir():
            raise UiError(400, f"{run_folder}: not a compare run folder (no results/)")
        job_id = "o-" + hashlib.sha256(str(run_folder).encode()).hexdigest()[:12]
        entry = self.st.compares / job_id
        if not (entry / "job.json").exists():
            entry.mkdir(parents=True, exist_ok=True)
            atomic_write_json(
                entry / "job.json",
                {
                    "external": str(run_folder),
                    "label": run_folder.name,
                    "model": _model_of(run_folder),
                    "created": time.time(),
                },
            )
        return job_id

    def start(self, req: CompareRequest, label: str) -> str:
        job_id = time.strftime("c%Y%m%d-%H%M%S-") + os.urandom(2).hex()
        folder = self.st.compares / job_id
        cfg = req.config(self.st)  # validates before anything is written
        argv = req.argv(self.st, folder)
        folder.mkdir(parents=True)
        save_config(cfg, folder)
        atomic_write_json(
            folder / "job.json",
            {"argv": argv, "label": label, "model": req.model, "created": time.time(), "request": req.__dict__},
        )
        self._spawn(job_id, folder, argv)
        return job_id

    def resume(self, job_id: str) -> None:
        folder, job = self._job(job_id)
        if job.get("external"):
            raise UiError(
                409, f"{folder} was opened, not started here: resume it with `adaptlab compare --out {folder}`"
            )
        state = self.status(job_id)["state"]
        if state in ("running", "finished"):
            raise UiError(409, f"compare {job_id} is {state}: nothing to resume")
        self._spawn(job_id, folder, job["argv"])

    def _spawn(self, job_id: str, folder: Path, argv: list[str]) -> None:
        with open(folder / "log.txt", "ab") as log:  # the child keeps its own copy of the descriptor
            # A session of its own: the compare goes on when the UI process stops or restarts.
            proc = subprocess.Popen(
                [sys.executable, "-m", "adaptlab.cli", *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=str(folder),
            )
        self.children[job_id] = proc
        job = json.loads((folder / "job.json").read_text())
        atomic_write_json(folder / "job.json", {**job, "pid": proc.pid, "spawned": time.time()})

    def _alive(self, job_id: str, pid: int | None) -> bool:
        child = self.children.get(job_id)
        if child is not None:
            return child.poll() is None
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        try:  # a pid reused by something else is not our compare
            return "adaptlab" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return True

    def status(self, job_id: str) -> dict:
        folder, job = self._job(job_id)
        live_file = folder / "live" / "status.json"
        live = json.loads(live_file.read_text()) if live_file.exists() else {}
        done = len(list((folder / "results").glob("*.json"))) if (folder / "results").exists() else 0
        same_host = live.get("host") == socket.gethostname()  # an opened folder's compare may run elsewhere
        alive = self._alive(job_id, job.get("pid") or (live.get("pid") if same_host else None))
        report = (folder / "report" / "report.html").exists()
        if alive:
            state = "running"
        elif job.get("external") and report and live.get("state") in (None, "finished"):
            state = "finished"  # folders from before live status was written have none
        elif live.get("state") == "finished" and report:
            state = "finished"
        else:
            state = "stopped" if live.get("state") in ("running", "stopped", None) else live.get("state", "stopped")
        out = {
            "id": job_id,
            "label": job.get("label"),
            "model": job.get("model"),
            "state": state,
            "done": done,
            "planned": live.get("planned"),
            "adaptive": live.get("adaptive"),
            "created": job.get("created"),
            "current": None,
            "eta_s": None,
            "best": live.get("best"),
            "error": live.get("error"),
            "report": report,
            "log": _tail(folder / "log.txt"),
            "decision": None,
            "never_run": [],
            "target": None,
            "mlflow": None,
        }
        if (folder / "mlflow" / "mlflow.db").exists():
            from adaptlab.tracking import default_uri

            out["mlflow"] = default_uri(folder)
        race_file = folder / "race.json"
        if state == "finished" and race_file.exists():
            try:
                race = json.loads(race_file.read_text())
                out.update(
                    decision=race.get("decision"), never_run=race.get("never_run") or [], target=race.get("target")
                )
            except (OSError, json.JSONDecodeError):
                pass
        if state == "running" and live.get("current"):
            cur = dict(live["current"])
            cur["elapsed_s"] = time.time() - cur["started"]
            cur.update(_last_step(folder / "live" / cur["id"]))
            out["current"] = cur
            if live.get("eta_s") is not None:
                out["eta_s"] = max(0.0, live["eta_s"] - cur["elapsed_s"])
        if state == "running" and not out["current"]:
            tuning = (job.get("request") or {}).get("adaptive", True)  # the adaptive compare tunes first
            out["phase"] = live.get("phase") or ("loading the model" + (", tuning on dev" if tuning else ""))
        return out

    def list(self) -> list[dict]:
        ids = sorted((p.name for p in self.st.compares.iterdir() if (p / "job.json").exists()), reverse=True)
        return [self.status(i) for i in ids]


def _model_of(run_folder: Path) -> str | None:
    cfg = run_folder / "compare.json"
    return json.loads(cfg.read_text()).get("model") if cfg.exists() else None


def _last_step(run_dir: Path) -> dict:
    """The newest step the running strategy logged (hybrid: of its current stage)."""
    logs = sorted(run_dir.rglob("train_log.jsonl"), key=lambda p: p.stat().st_mtime) if run_dir.exists() else []
    if not logs:
        return {}
    lines = logs[-1].read_text().splitlines()
    if not lines:
        return {}
    try:
        rec = json.loads(lines[-1])
    except json.JSONDecodeError:  # caught mid-write
        rec = json.loads(lines[-2]) if len(lines) > 1 else {}
    return {k: rec[k] for k in ("step", "of", "loss") if k in rec}


def _tail(path: Path, lines: int = 12) -> list[str]:
    if not path.exists():
        return []
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, 2) - 8192))
        text = f.read().decode(errors="replace")
    keep = [
        ln
        for ln in text.replace("\r", "\n").splitlines()
        if ln.strip() and "Warning" not in ln and "outputs = func" not in ln
    ]
    return keep[-lines:]
