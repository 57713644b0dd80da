"""Human feedback -> rows for the next training round (``feedback export``, ``adaptlab improve``).

Rules, per served request (its latest feedback wins):
- a ``correction`` is the right answer: the label (classification) or target;
- ``rating = 1`` without a correction confirms the served answer: kept as it was served;
- ``rating`` 0 or -1 without a correction says the served answer was wrong but not what is right:
  a row with only a *rejected* answer (``Example.rejected``). ``improve`` trains on it as a
  penalty on that answer (:class:`adaptlab.training.objectives.TokenNLL`'s unlikelihood term);
  ``feedback export`` skips it (a training file of the task's type has no answer to give it) and
  counts it, so a team sees how much feedback lacks a correction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from adaptlab.data.records import Example
from adaptlab.privacy import redact as redact_text
from adaptlab.privacy import scan_records
from adaptlab.registry import Registry, RegistryError, check_name
from adaptlab.tasks.base import get_task
from adaptlab.utils import atomic_write_text

CORRECTION, CONFIRMED, RATED_DOWN = "correction", "confirmed", "rated_down"


@dataclass(frozen=True)
class FeedbackRow:
    request_id: str
    kind: str  # correction | confirmed | rated_down
    example: Example  # the input as asked, with its right answer or its rejected one
    version: int | None  # the version that served it


def feedback_rows(registry: Registry, task: str, redact: bool = False) -> tuple[list[FeedbackRow], str | None, dict]:
    """The task's feedback as rows (latest feedback per request), the task type they share, and
    counts. ``redact`` replaces personal data in inputs and answers."""
    check_name(task, "task")
    rows = registry.requests.feedback(task)
    if not rows:
        raise RegistryError(f"no feedback stored for task {task!r}")
    latest: dict[str, dict] = {}
    for r in rows:  # ordered by id: later feedback on the same request replaces earlier
        latest[r["request_id"]] = r
    kinds = {r["task_type"] or "classification" for r in latest.values()}
    if len(kinds) > 1:
        raise RegistryError(
            f"task {task!r} has feedback for versions of different task types ({', '.join(sorted(kinds))})"
        )
    clean = redact_text if redact else (lambda s: s)
    out, blank = [], 0
    for r in latest.values():
        text = clean(r["input"])
        if r["correction"] is not None and r["correction"].strip():
            out.append(FeedbackRow(r["request_id"], CORRECTION, Example(text, clean(r["correction"])), r["version"]))
        elif r["rating"] == 1 and r["output"].strip():
            out.append(FeedbackRow(r["request_id"], CONFIRMED, Example(text, clean(r["output"])), r["version"]))
        elif r["rating"] < 1 and r["output"].strip():
            out.append(
                FeedbackRow(r["request_id"], RATED_DOWN, Example(text, "", rejected=clean(r["output"])), r["version"])
            )
        else:
            blank += 1
    counts = {k: sum(f.kind == k for f in out) for k in (CORRECTION, CONFIRMED, RATED_DOWN)}
    return out, kinds.pop(), {"requests": len(latest), "feedback_rows": len(rows), "empty": blank, **counts}


def export_feedback(registry: Registry, task: str, out: str | Path, redact: bool = False) -> dict:
    rows, task_type, counts = feedback_rows(registry, task, redact=redact)
    spec = get_task(task_type)
    # The input as asked (a chat request's conversation), with the corrected (or approved) answer,
    # as a row of the task type's own file.
    records = [spec.record(f.example) for f in rows if f.kind != RATED_DOWN]
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    atomic_write_text(Path(out), "".join(line + "\n" for line in lines))
    found = scan_records(list(enumerate(records, start=1)), str(out))
    return {
        "requests": counts["requests"],
        "written": len(lines),
        "skipped_without_answer": counts[RATED_DOWN] + counts["empty"],
        "feedback_rows": counts["feedback_rows"],
        "personal_data": {"total": found.total, "summary": found.summary(), **found.to_dict()},
    }
