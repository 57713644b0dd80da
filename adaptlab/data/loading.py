"""Load task data from JSONL, a JSON array, CSV, TSV, Parquet or a ``datasets`` folder into one shape.

Every problem with a file is raised as a :class:`DataError` whose message is one line naming the
file, the line and the field, so that a user with a few thousand hand-labelled rows can fix the
row and not guess. The file's rows are read by :func:`adaptlab.data.formats.read_rows` (Alpaca and
ShareGPT rows become conversations there, and a column mapping renames columns first); what
each row must hold is its task type's (:meth:`adaptlab.tasks.base.TaskSpec.read`). The checks that
need the whole file (one class only, labels unseen in train) live in :mod:`adaptlab.data.validation`.
"""

from __future__ import annotations

import json
from pathlib import Path

from adaptlab.data.records import (  # noqa: F401  (the data layer's public names, here as before)
    CHAT_FIELD,
    CHAT_ROLES,
    SUPPORTED_SUFFIXES,
    DataError,
    Example,
    TaskData,
    TaskType,
    chat_messages,
    check_conversation,
    jsonl_lines,
    read_records,
)
from adaptlab.tasks.base import get_task, list_tasks


def _detect_task(
    path: Path, columns: list[str], records: list[tuple[int, dict]], text_field: str | None, label_field: str | None
) -> TaskType:
    """The task type a file's columns name: under default field names, the first registered type all of
    whose fields are present (the more specific types first, :attr:`TaskSpec.specificity`: a conversation
    column names its task more surely than a pair), then one with some of them (so that the row check names the missing field); under custom names,
    few distinct short answers mean a closed label set."""
    cols = set(columns)
    specs = sorted((get_task(t) for t in list_tasks()), key=lambda s: -s.specificity)
    if text_field is None and label_field is None:
        for spec in specs:
            if spec.matches(cols):
                return spec.name
        for spec in specs:
            if any(f in cols for f in spec.fields):
                return spec.name
        named = [f"{'+'.join(map(repr, get_task(t).fields))} ({t})" for t in list_tasks()]
        expected = ", ".join(named[:-1]) + f" or {named[-1]}" if len(named) > 1 else named[0]
        raise DataError(
            f"{path}: cannot tell the task from the columns ({', '.join(map(repr, columns))}); expected "
            f"{expected}, or pass --task/--text-field/--label-field"
        )
    pairs = [s for s in specs if not s.conversation and len(s.fields) == 2]
    closed = next(s for s in pairs if s.closed_labels)
    free = next(s for s in pairs if not s.closed_labels)
    lf = label_field or closed.fields[1]
    values = [str(r.get(lf, "")) for _, r in records]
    distinct = len(set(values))
    short = sum(len(v.split()) for v in values) / max(1, len(values)) <= 4
    return closed.name if short and distinct <= max(2, len(values) // 2) else free.name


def load_file(
    path: str | Path,
    task: TaskType | None = None,
    text_field: str | None = None,
    label_field: str | None = None,
    label_names: list[str] | None = None,
    columns: dict[str, str] | None = None,
) -> TaskData:
    """Load one file (JSONL, JSON array, CSV, TSV, Parquet) or ``datasets`` folder.

    ``task`` is detected from the columns when not given. ``label_names`` (e.g. a
    ``labels.json``) declares the label set: any other label is an error. ``columns`` maps the
    file's column names to the task's fields (``{"question": "text", "answer": "label"}``).
    Alpaca and ShareGPT rows are read as chat conversations, or, when ``task`` names a pair task
    (generation, classification), as its input and target.
    """
    from adaptlab.data.formats import read_rows, rename_columns, to_conversations, to_pairs

    path = Path(path)
    if task is not None and task not in list_tasks():
        raise DataError(f"unknown task '{task}'; use one of {', '.join(list_tasks())}")
    records, cols = read_rows(path)
    records, cols = rename_columns(path, records, cols, columns)
    spec = get_task(task) if task is not None else None
    if spec is not None and not spec.conversation and len(spec.fields) == 2:
        records, cols = to_pairs(path, records, cols, spec.fields)
    else:
        records, cols, _ = to_conversations(path, records, cols)
    columns = cols
    if task is None:
        task = _detect_task(path, columns, records, text_field, label_field)
    return get_task(task).read(path, records, text_field, label_field, label_names)


def load_label_names(path: str | Path) -> list[str]:
    """Read a ``labels.json`` (a JSON list of class names in id order)."""
    path = Path(path)
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON: {e.msg}") from None
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise DataError(f"{path}: expected a JSON list of non-empty label names")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: duplicate label names")
    return names


def write_jsonl(path: str | Path, data: TaskData) -> None:
    """Write examples as JSONL with the task's default field names, atomically."""
    from adaptlab.utils import atomic_write_text

    spec = get_task(data.task)
    lines = [json.dumps(spec.record(ex), ensure_ascii=False) for ex in data.examples]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
