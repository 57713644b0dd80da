"""The shapes task data takes in memory, and reading a file's rows before any task type reads them.

:class:`Example` and :class:`TaskData` are what every layer passes around; :func:`read_records`
turns a JSONL/CSV/TSV file into ``(line, record)`` pairs with one-line errors naming file and line;
conversations (OpenAI's ``messages``) are checked here because chat files and served chat requests
share the check. What a record *means* is its task type's (:mod:`adaptlab.tasks`).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

# A registered task type's name (:mod:`adaptlab.tasks`: classification, generation, chat, ...).
TaskType = str
CHAT_FIELD = "messages"  # OpenAI's fine-tuning file format
CHAT_ROLES = ("system", "user", "assistant")
SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")  # and a `datasets` folder (.formats)


class DataError(ValueError):
    """A problem with input data; the message is one line naming file, line and field."""

    def __init__(self, message: str):
        # Column names and values from the file may hold line breaks: keep the message one line.
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))


@dataclass(frozen=True)
class Example:
    """One labelled example.

    For classification ``text`` is the input and ``label`` the class name; for generation
    ``text`` is the input and ``label`` the target text; for chat ``text`` is the conversation
    before its last assistant turn (JSON: a list of ``{"role", "content"}``, see
    :func:`chat_messages`) and ``label`` that last assistant turn. ``line`` is the 1-based line
    of the source file (0 when the example did not come from a file).

    ``rejected`` is an answer that is *not* wanted for ``text``: a preference pair's rejected
    completion, an unpaired row marked undesirable (then ``label`` is ``""``: no wanted answer is
    known), or a served answer rated down without a correction (feedback, ``adaptlab improve``).
    """

    text: str
    label: str
    line: int = 0
    rejected: str | None = None


@dataclass
class TaskData:
    """A list of examples with what is known about where they came from."""

    task: TaskType
    examples: list[Example]
    source: str
    label_names: list[str] | None = None  # classification: label set in a stable order
    text_field: str = "text"
    label_field: str = "label"
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def labels(self) -> list[str]:
        """The label set: declared names if known, else labels in order of first appearance."""
        if self.label_names is not None:
            return list(self.label_names)
        return list(dict.fromkeys(a for ex in self.examples for a in (ex.label, ex.rejected) if a))

    @property
    def spec(self):
        """The task type (:class:`adaptlab.tasks.base.TaskSpec`): what a row is, how it is evaluated."""
        from adaptlab.tasks.base import get_task  # here, not above: the task types import this module

        return get_task(self.task)

    @property
    def label_set(self) -> list[str] | None:
        """The labels answers are chosen from; None when answers are free text."""
        return self.spec.label_set(self)

    def fingerprint(self) -> str:
        """sha256 of the rows as the task type writes them (not of a file: a split or subsample has one too)."""
        import hashlib

        h = hashlib.sha256(self.task.encode())
        for ex in self.examples:
            h.update(json.dumps(self.spec.record(ex), ensure_ascii=False, sort_keys=True).encode() + b"\n")
        return h.hexdigest()

    def with_examples(self, examples: list[Example], source: str | None = None) -> TaskData:
        """A copy holding other examples (a split or subsample) with the same label set."""
        return TaskData(
            task=self.task,
            examples=list(examples),
            source=source or self.source,
            label_names=self.labels if self.spec.closed_labels else None,
            text_field=self.text_field,
            label_field=self.label_field,
            meta=dict(self.meta),
        )


def read_records(path: Path) -> tuple[list[tuple[int, dict]], list[str]]:
    """Return ``[(line_number, record)]`` and the column names seen (CSV header or JSON keys)."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(
            f"{path}: is a directory, expected a {', '.join(SUPPORTED_SUFFIXES)} file or a folder "
            f"written by datasets' save_to_disk"
        )
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type '{suffix or '(none)'}'; use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: file is empty (no examples)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {e.start}); re-save the file as UTF-8") from None
    if suffix == ".json" and text.lstrip().startswith("["):
        return _read_json_array(path, text)
    if suffix in (".jsonl", ".json"):
        return _read_jsonl(path, text)
    return _read_delimited(path, text, "\t" if suffix == ".tsv" else ",")


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSON Lines text: split at "\n" only, a trailing "\r" dropped ("\r\n" files).

    Not ``str.splitlines()``: it also breaks at U+2028/U+2029, \\x85, \\x0b, \\x0c and \\x1c-\\x1e,
    which JSON allows raw inside strings, so a valid row was cut in two and the line numbers after
    it no longer matched an editor's."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _read_jsonl(path: Path, text: str) -> tuple[list[tuple[int, dict]], list[str]]:
    def rows():
        for lineno, line in enumerate(jsonl_lines(text), start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line), ""
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON: {e.msg} (column {e.colno})") from None

    return _objects(path, rows())


def _read_json_array(path: Path, text: str) -> tuple[list[tuple[int, dict]], list[str]]:
    """A JSON array of objects (how LLaMA-Factory ships Alpaca and ShareGPT sets); each row numbered by
    the line its object starts on."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON: {e.msg} (column {e.colno})") from None
    starts = _item_lines(text, len(items))
    return _objects(
        path, ((starts[i] if i < len(starts) else 1, obj, f"item {i} of the array: ") for i, obj in enumerate(items))
    )


def _objects(path: Path, rows) -> tuple[list[tuple[int, dict]], list[str]]:
    """``(line, value, where)`` rows as records, each an object, and the columns in first-seen order."""
    records: list[tuple[int, dict]] = []
    columns: dict[str, None] = {}
    for line, obj, where in rows:
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{line}: {where}expected a JSON object, got {type(obj).__name__}")
        columns.update(dict.fromkeys(obj))
        records.append((line, obj))
    if not records:
        raise DataError(f"{path}: file is empty (no examples)")
    return records, list(columns)


def _item_lines(text: str, n: int) -> list[int]:
    """The line each item of the top-level array starts on (objects, or anything else a malformed
    file holds): one pass over the text, strings skipped (the json module gives no positions)."""
    starts: list[int] = []
    depth, line, in_str, esc, expecting = 0, 1, False, False, False
    for ch in text:
        if ch == "\n":
            line += 1
        if in_str:
            esc, in_str = (False, True) if esc else (ch == "\\", ch != '"')
            continue
        if depth == 1 and expecting and not ch.isspace() and ch not in ",]":
            starts.append(line)
            expecting = False
            if len(starts) >= n:
                break
        if ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            expecting = expecting or depth == 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 1:
            expecting = True
    return starts


def _read_delimited(path: Path, text: str, delimiter: str) -> tuple[list[tuple[int, dict]], list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: file is empty (no examples)") from None
    except csv.Error as e:
        raise DataError(f"{path}:1: malformed header: {e}") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise DataError(f"{path}:1: empty header row; the first line must name the columns")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"{path}:1: duplicate column name(s) {', '.join(map(repr, dupes))} in header")
    records: list[tuple[int, dict]] = []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(f"{path}:{start}: malformed {'TSV' if delimiter == chr(9) else 'CSV'}: {e}") from None
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) > len(header):
            raise DataError(f"{path}:{start}: {len(row)} cells but the header has {len(header)} columns")
        rec = {h: (row[i] if i < len(row) else None) for i, h in enumerate(header)}
        records.append((start, rec))
    if not records:
        raise DataError(f"{path}: file has a header but no examples")
    return records, header


def chat_messages(example: Example) -> list[dict]:
    """A chat example's whole conversation: the turns before the answer, then the answer."""
    return json.loads(example.text) + [{"role": "assistant", "content": example.label}]


def check_conversation(messages, where: str) -> list[dict]:
    """A conversation as OpenAI's files hold it, or a one-line DataError naming the turn and field."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field '{CHAT_FIELD}' must be a non-empty list of {{role, content}} objects")
    out = []
    for i, m in enumerate(messages):
        at = f"{where}: {CHAT_FIELD}[{i}]"
        if not isinstance(m, dict):
            raise DataError(f"{at}: expected an object with 'role' and 'content', got {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in CHAT_ROLES:
            raise DataError(f"{at}: unknown role {role!r}; use one of {', '.join(CHAT_ROLES)}")
        if not isinstance(content, str):
            raise DataError(f"{at}: field 'content' must be a string, got {type(content).__name__}")
        if not content.strip():
            raise DataError(f"{at}: empty content ({role})")
        if role == "system" and i != 0:
            raise DataError(f"{at}: a system message may only come first")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise DataError(f"{where}: no assistant turn: nothing to learn or to compare with")
    if out[-1]["role"] != "assistant":
        raise DataError(
            f"{where}: the conversation ends with a {out[-1]['role']} turn; it must end with the assistant's answer"
        )
    return out
