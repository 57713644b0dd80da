"""The compare's results store: run specs, one JSON file per finished run, claims between workers,
and the list of runs a budget skipped or cut. The folder is the state: every reader (the schedule,
the report, the workbench, a resumed compare) reads it through these functions.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path

from rich.console import Console

from adaptlab.compare.record import RunRecord, RunSpec  # noqa: F401  (RunSpec: the store's callers name it here)
from adaptlab.utils import atomic_write_json

console = Console()


def results_dir(out: Path) -> Path:
    return Path(out) / "results"


def load_results(out: Path) -> list[RunRecord]:
    """Every finished run's record (files that do not parse are reported and ignored): the one loader."""
    recs = []
    for f in sorted(results_dir(out).glob("*.json")):
        try:
            recs.append(RunRecord.load(f))
        except (json.JSONDecodeError, ValueError):
            console.print(f"[yellow]warning:[/] {f}: unreadable result, ignored (it will be re-run)")
    return recs


def write_result(out: Path, rec) -> None:
    """Store a finished run (atomically: the file marks the run done)."""
    rec = RunRecord.of(rec)
    atomic_write_json(results_dir(out) / f"{rec.id}.json", rec.to_json())


def tuning_dir(out: Path) -> Path:
    """Where the tuning fits (``--tune``) are stored, apart from the measured runs."""
    return Path(out) / "results" / "tuning"


def load_tuning(out: Path) -> dict[str, dict]:
    """Every stored tuning fit by id (a file that does not parse is fitted again)."""
    recs = {}
    for f in sorted(tuning_dir(out).glob("*.json")):
        try:
            recs[f.stem] = json.loads(f.read_text())
        except json.JSONDecodeError:
            continue
    return recs


def claims_dir(out: Path) -> Path:
    return Path(out) / "claims"


def _claim_alive(info: dict) -> bool:
    """A claim is live while its process runs (same host) or, from another host, for 24 hours."""
    if info.get("host") != socket.gethostname():
        return time.time() - info.get("time", 0) < 24 * 3600
    try:
        os.kill(int(info["pid"]), 0)
        return True
    except (ProcessLookupError, ValueError, KeyError):
        return False
    except PermissionError:
        return True


def _live_claim(path: Path) -> bool:
    """Whether the claim file at ``path`` holds a live claim (an unreadable one is stale)."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return False
    return bool(info) and _claim_alive(info)


def claim(out: Path, run_id: str) -> bool:
    """Take ``run_id`` for this process (several workers can share one grid folder, even on
    several machines over a shared filesystem). O_EXCL creation is atomic; a claim whose process
    has died is taken over."""
    d = claims_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{run_id}.claim"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _live_claim(path):
                return False
            path.unlink(missing_ok=True)  # stale: its worker died; the loser of a race here retries once
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}, f)
        return True
    return False


def release_claim(out: Path, run_id: str) -> None:
    (claims_dir(out) / f"{run_id}.claim").unlink(missing_ok=True)


def claimed(out: Path, run_id: str) -> bool:
    return _live_claim(claims_dir(out) / f"{run_id}.claim")


def load_skipped(out: Path) -> list[dict]:
    """The runs a compare skipped or cut (``skipped.json``), for the grid, the report and the CLI alike.

    One policy for all three: a missing file is no skipped run; a file that is not a JSON list of
    objects with an ``id`` is an error naming it (treating it as empty would quietly retry runs a
    time limit cut, and drop them from the report's list of runs never made)."""
    from adaptlab.data.loading import DataError

    path = Path(out) / "skipped.json"
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(
            f"{path}: not readable as JSON ({e}); it lists the runs the budget skipped or cut: "
            f"fix or delete it, and a resumed compare estimates them again"
        ) from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("id"), str) for r in rows):
        raise DataError(
            f"{path}: expected a list of objects with an 'id' (the runs skipped or cut); "
            f"fix or delete it, and a resumed compare estimates them again"
        )
    return rows


def write_skipped(out: Path, skipped: list[dict]) -> None:
    """Merge this worker's skips with other workers' (a run another worker finished is not skipped)."""
    finished = {f.stem for f in results_dir(out).glob("*.json")}
    merged = {s["id"]: s for s in load_skipped(out) + skipped if s["id"] not in finished}
    atomic_write_json(out / "skipped.json", list(merged.values()))


SPENT_FILE = "spent.json"


def spent_before(out: Path) -> float:
    """Seconds of the budget earlier sessions of this compare spent (``spent.json``; 0 for a new one).

    ``--budget`` is the compare's whole time: a compare killed at 10 of 15 minutes resumes with 5
    left, and one that finished does not start a fresh 15 minutes of runs when it is run again
    (the tutorial's Python call on a finished CLI compare's folder once ran a second race). A larger
    ``--budget`` given again buys the difference."""
    from adaptlab.data.loading import DataError

    path = Path(out) / SPENT_FILE
    if not path.exists():  # a new compare, or one from before this file: its runs' and tuning's own time
        return 60 * compare_minutes(out, load_results(out)) if results_dir(out).exists() else 0.0
    try:
        seconds = json.loads(path.read_text())["seconds"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(
            f"{path}: not readable ({type(e).__name__}: {e}); it holds the budget seconds earlier sessions "
            f"spent: fix or delete it (deleted, a resumed compare gets its whole budget again)"
        ) from None
    if not isinstance(seconds, (int, float)) or seconds < 0:
        raise DataError(f"{path}: 'seconds' must be a number >= 0, got {seconds!r}")
    return float(seconds)


def record_spent(out: Path, seconds: float) -> None:
    """Save the budget seconds spent so far (the most any worker of this compare has seen)."""
    path = Path(out) / SPENT_FILE
    try:
        before = spent_before(out)
    except Exception:  # noqa: BLE001  (an unreadable file is replaced by what this session knows)
        before = 0.0
    atomic_write_json(path, {"seconds": max(before, seconds)})


def run_seconds(rec) -> float | None:
    """A run's own start-to-finish seconds from its record, or None where it kept no timestamps."""
    import datetime

    rec = RunRecord.of(rec)
    try:
        a = datetime.datetime.strptime(rec.meta["started"], "%Y-%m-%dT%H:%M:%S%z")
        b = datetime.datetime.strptime(rec.meta["finished"], "%Y-%m-%dT%H:%M:%S%z")
    except (KeyError, ValueError):
        return None
    return (b - a).total_seconds()


def compare_minutes(out: Path, records: list) -> float:
    """Wall minutes of a compare's own work: its runs, start to finish, summed (resumed sessions count
    what they ran), and its tuning fits; loading the model and writing the report are left out."""
    total = sum(t.get("seconds", 0.0) for t in load_tuning(out).values())
    total += sum(s for s in map(run_seconds, records) if s is not None)
    return total / 60


def minutes(seconds: float, up: bool = False) -> str:
    m = seconds / 60
    if up:
        return f"{math.ceil(m)}m"
    return f"{m:.1f} min" if m < 10 else f"{m:.0f} min"
