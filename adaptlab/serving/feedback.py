"""Human feedback -> a training set for the next compare / train round.

Rules, per served request (its latest feedback wins):
- a ``correction`` is the right answer: exported as the label (classification) or target;
- ``rating = 1`` without a correction confirms the served answer: exported as it was served;
- ``rating`` 0 or -1 without a correction says the answer was not right but not what is: skipped
  (counted in the returned stats, so a team sees how much feedback lacks a correction).
"""

from __future__ import annotations

import json
from pathlib import Path

from adaptlab.data.records import Example
from adaptlab.registry import Registry, RegistryError, check_name
from adaptlab.tasks.base import get_task
from adaptlab.utils import atomic_write_text


def export_feedback(registry: Registry, task: str, out: str | Path) -> dict:
    check_name(task, "task")
    rows = registry.requests.feedback(task)
    if not rows:
        raise RegistryError(f"no feedback stored for task {task!r}")
    latest: dict[str, dict] = {}
    for r in rows:  # ordered by id: later feedback on the same request replaces earlier
        latest[r["request_id"]] = r
    lines, skipped, kinds = [], 0, set()
    for r in latest.values():
        answer = r["correction"] if r["correction"] is not None else (r["output"] if r["rating"] == 1 else None)
        if answer is None or not answer.strip():
            skipped += 1
            continue
        task_type = r["task_type"] or "classification"
        kinds.add(task_type)
        # The input as asked (a chat request's conversation), with the corrected (or approved) answer,
        # as a row of the task type's own file.
        row = get_task(task_type).record(Example(r["input"], answer))
        lines.append(json.dumps(row, ensure_ascii=False))
    if len(kinds) > 1:
        raise RegistryError(f"task {task!r} has feedback for versions of different task types "
                            f"({', '.join(sorted(kinds))})")
    atomic_write_text(Path(out), "".join(line + "\n" for line in lines))
    return {"requests": len(latest), "written": len(lines), "skipped_without_answer": skipped,
            "feedback_rows": len(rows)}
