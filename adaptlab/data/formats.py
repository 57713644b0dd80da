"""The data formats users bring from other tools, read into adaptlab's rows.

- **Files**: Parquet (``.parquet``, read with pyarrow), and a folder written by ``datasets``' ``save_to_disk``
  (read with the ``datasets`` library, from disk only: nothing is fetched from a hub). JSONL, a JSON
  array (as LLaMA-Factory ships Alpaca and ShareGPT sets), CSV and TSV are :mod:`.records`'.
- **Row shapes**: Alpaca (``instruction``, optional ``input``, ``output``, optional ``system`` and
  ``history``) and ShareGPT (``conversations`` of ``{"from", "value"}`` turns, optional ``system``)
  become OpenAI ``messages`` conversations, the chat task's rows, as LLaMA-Factory turns both into
  one conversation format. A column mapping (``columns={"question": "text", "answer": "label"}``)
  renames a file's columns to the task's fields first.

Rows keep a number for errors: the line a JSON array's object starts on; for Parquet and ``datasets``
folders, the row's 1-based index (``file.parquet:12: ...``).
"""

from __future__ import annotations

import json
from pathlib import Path

from adaptlab.data.records import CHAT_FIELD, DataError, read_records

ALPACA_FIELDS = ("instruction", "output")
SHAREGPT_FIELD = "conversations"
# ShareGPT's speaker names as LLaMA-Factory's dataset_info reads them (``from``: human/gpt/system),
# and the OpenAI names some ShareGPT files use instead.
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
}

Records = list[tuple[int, dict]]


# ------------------------------------------------------------------ files
def read_rows(path: str | Path) -> tuple[Records, list[str]]:
    """Any supported file or folder as ``[(line or row number, record)]`` and its column names."""
    path = Path(path)
    if is_datasets_folder(path):
        return read_datasets_folder(path)
    if path.suffix.lower() == ".parquet" and path.is_file():
        return read_parquet(path)
    return read_records(path)


def read_parquet(path: Path) -> tuple[Records, list[str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: not a readable Parquet file: {str(e).splitlines()[0]}") from None
    return _table_rows(path, table.to_pylist(), table.column_names)


def is_datasets_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists())


def is_dataset_dict(path: Path) -> bool:
    """A ``DatasetDict`` folder (one sub-folder per split), not a single ``Dataset``."""
    return path.is_dir() and (path / "dataset_dict.json").exists()


def datasets_splits(path: Path) -> list[str]:
    """The splits of a ``DatasetDict`` folder; [] for a single ``Dataset``."""
    if not is_dataset_dict(path):
        return []
    f = path / "dataset_dict.json"
    try:
        return list(json.loads(f.read_text(encoding="utf-8")).get("splits", []))
    except (json.JSONDecodeError, AttributeError):
        raise DataError(f"{f}: malformed dataset_dict.json") from None


def read_datasets_folder(path: Path) -> tuple[Records, list[str]]:
    """One ``Dataset`` saved by ``save_to_disk`` (a ``DatasetDict``'s split is its sub-folder)."""
    try:
        from datasets import load_from_disk
    except ImportError:
        raise DataError(
            f"{path}: reading a `datasets` folder needs the datasets library (pip install datasets)"
        ) from None
    splits = datasets_splits(path)
    if splits:
        raise DataError(
            f"{path}: a DatasetDict with splits {', '.join(splits)}; pass it as --data (its splits "
            f"become train/dev/test) or name one split's folder ({path / splits[0]})"
        )
    try:
        ds = load_from_disk(str(path))
    except Exception as e:  # datasets raises FileNotFoundError, ValueError, pyarrow errors
        raise DataError(f"{path}: not a readable `datasets` folder: {str(e).splitlines()[0]}") from None
    return _table_rows(path, ds.to_list(), list(ds.column_names))


def write_rows(dst: Path, rows: list[dict], columns: list[str], fmt: str) -> None:
    """Rows written atomically in ``fmt``: ``.jsonl``/``.json`` (JSON lines), ``json-array``, ``.csv``,
    ``.tsv``, ``.parquet`` or ``datasets`` (a ``save_to_disk`` folder)."""
    import csv
    import io
    import os
    import shutil
    import tempfile

    from adaptlab.utils import atomic_write_text

    dst.parent.mkdir(parents=True, exist_ok=True)
    if fmt in (".jsonl", ".json"):
        atomic_write_text(dst, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    elif fmt == "json-array":
        atomic_write_text(dst, json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
    elif fmt in (".csv", ".tsv"):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, delimiter="\t" if fmt == ".tsv" else ",")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(dst, buf.getvalue())
    elif fmt == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        tmp = dst.with_name(f".{dst.name}.tmp")
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, dst)
    elif fmt == "datasets":
        from datasets import Dataset

        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
        Dataset.from_list(rows).save_to_disk(str(tmp / "ds"))
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp / "ds", dst)
        tmp.rmdir()
    else:
        raise DataError(f"{dst}: cannot write format {fmt!r}")


def _table_rows(path: Path, rows: list[dict], columns: list[str]) -> tuple[Records, list[str]]:
    if not rows:
        raise DataError(f"{path}: no rows (no examples)")
    # Parquet holds typed columns: class ids stay ints (as in JSONL); missing cells are None.
    return [(i + 1, row) for i, row in enumerate(rows)], list(columns)


# ------------------------------------------------------------------ row shapes
def rename_columns(path: Path, records: Records, columns: list[str], mapping: dict[str, str] | None):
    """``mapping`` from the file's column names to the task's fields, checked against the columns."""
    if not mapping:
        return records, columns
    missing = [src for src in mapping if src not in columns]
    if missing:
        raise DataError(
            f"{path}: column mapping names {', '.join(map(repr, missing))}, not in the file "
            f"(columns: {', '.join(map(repr, columns))})"
        )
    new_cols = [mapping.get(c, c) for c in columns]
    return [(ln, {mapping.get(k, k): v for k, v in rec.items()}) for ln, rec in records], list(dict.fromkeys(new_cols))


def parse_columns(text: str | None, flag: str = "--columns") -> dict[str, str] | None:
    """``"question=text,answer=label"`` (the file's column = the task's field) as a mapping."""
    if not text:
        return None
    out: dict[str, str] = {}
    for part in text.split(","):
        src, eq, dst = part.partition("=")
        if not eq or not src.strip() or not dst.strip():
            raise DataError(
                f"{flag}: expected FILE_COLUMN=FIELD pairs separated by commas "
                f"(e.g. question=text,answer=label), got {part.strip()!r}"
            )
        if src.strip() in out:
            raise DataError(f"{flag}: column {src.strip()!r} mapped twice")
        out[src.strip()] = dst.strip()
    if len(set(out.values())) != len(out):
        raise DataError(f"{flag}: two columns mapped to the same field")
    return out


def shape_of(columns: list[str]) -> str | None:
    cols = set(columns)
    if SHAREGPT_FIELD in cols and CHAT_FIELD not in cols:
        return "sharegpt"
    if all(f in cols for f in ALPACA_FIELDS) and CHAT_FIELD not in cols:
        return "alpaca"
    return None


def to_conversations(path: Path, records: Records, columns: list[str]) -> tuple[Records, list[str], str | None]:
    """Alpaca and ShareGPT rows as ``messages`` rows (other shapes unchanged), and the shape's name."""
    shape = shape_of(columns)
    if shape is None:
        return records, columns, None
    convert = _from_sharegpt if shape == "sharegpt" else _from_alpaca
    return [(ln, {CHAT_FIELD: convert(rec, f"{path}:{ln}")}) for ln, rec in records], [CHAT_FIELD], shape


def to_pairs(path: Path, records: Records, columns: list[str], fields: tuple[str, ...]) -> tuple[Records, list[str]]:
    """Alpaca rows as a pair task's (input, answer) rows: the instruction and its input joined, the
    output as the answer (a system prompt or a history has no place in a pair and is an error)."""
    if shape_of(columns) != "alpaca":
        return records, columns
    src, dst = fields
    out = []
    for ln, rec in records:
        where = f"{path}:{ln}"
        for f in ("system", "history"):
            if rec.get(f):
                raise DataError(
                    f"{where}: field '{f}' needs the chat task (--task chat); a pair task has no place for it"
                )
        instruction, extra = _text(rec, "instruction", where), _text(rec, "input", where, required=False)
        out.append((ln, {src: f"{instruction}\n\n{extra}" if extra else instruction, dst: _text(rec, "output", where)}))
    return out, [src, dst]


def _text(rec: dict, field: str, where: str, required: bool = True) -> str:
    v = rec.get(field)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            raise DataError(f"{where}: missing field '{field}'" if v is None else f"{where}: empty field '{field}'")
        return ""
    if not isinstance(v, str):
        raise DataError(f"{where}: field '{field}' must be a string, got {type(v).__name__}")
    return v


def _from_alpaca(rec: dict, where: str) -> list[dict]:
    msgs = []
    system = _text(rec, "system", where, required=False)
    if system:
        msgs.append({"role": "system", "content": system})
    history = rec.get("history") or []
    if not isinstance(history, list):
        raise DataError(f"{where}: field 'history' must be a list of [instruction, answer] pairs")
    for i, pair in enumerate(history):
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise DataError(f"{where}: history[{i}]: expected [instruction, answer], two strings")
        msgs += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    instruction = _text(rec, "instruction", where)
    extra = _text(rec, "input", where, required=False)
    msgs.append({"role": "user", "content": f"{instruction}\n\n{extra}" if extra else instruction})
    msgs.append({"role": "assistant", "content": _text(rec, "output", where)})
    return msgs


def _from_sharegpt(rec: dict, where: str) -> list[dict]:
    turns = rec.get(SHAREGPT_FIELD)
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: field '{SHAREGPT_FIELD}' must be a non-empty list of {{from, value}} turns")
    msgs = []
    system = _text(rec, "system", where, required=False)
    if system:
        msgs.append({"role": "system", "content": system})
    for i, t in enumerate(turns):
        at = f"{where}: {SHAREGPT_FIELD}[{i}]"
        if not isinstance(t, dict):
            raise DataError(f"{at}: expected an object with 'from' and 'value', got {type(t).__name__}")
        speaker = t.get("from", t.get("role"))
        role = SHAREGPT_ROLES.get(speaker)
        if role is None:
            raise DataError(
                f"{at}: unsupported speaker {speaker!r}; use one of {', '.join(SHAREGPT_ROLES)} "
                f"(tool calls and observations are not supported)"
            )
        value = t.get("value", t.get("content"))
        if not isinstance(value, str):
            raise DataError(f"{at}: field 'value' must be a string, got {type(value).__name__}")
        msgs.append({"role": role, "content": value})
    return msgs
