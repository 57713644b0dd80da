"""Data: pick a named dataset or upload a file, and read ``data check``'s verdict before anything runs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from pathlib import Path

from fastapi import APIRouter, Depends, File, Request, UploadFile

from adaptlab.data.loading import DataError
from adaptlab.ui.jobs import upload_name, upload_path
from adaptlab.ui.routes import guard
from adaptlab.ui.security import ui_state
from adaptlab.ui.state import UiError, UiState
from adaptlab.ui.web import page, redirect
from adaptlab.utils import atomic_write_json

router = APIRouter(dependencies=[Depends(guard)])
SUFFIXES = (".jsonl", ".csv", ".tsv")
FILE = File(...)


def sources(st: UiState) -> list[dict]:
    """Every dataset the forms offer: the named ones, then uploads, newest first."""
    from adaptlab.data.named import list_named

    out = [{"value": f"named:{n}", "label": n, "kind": "named"} for n in list_named(st.data_dir)]
    metas = sorted(st.uploads.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for m in metas:
        meta = json.loads(m.read_text())
        out.append(
            {
                "value": f"upload:{m.stem}",
                "label": f"{meta['name']} (uploaded)",
                "kind": "upload",
                "bytes": meta["bytes"],
                "uploaded": meta["uploaded"],
            }
        )
    return out


def source_label(st: UiState, source: str) -> str:
    kind, _, name = source.partition(":")
    return upload_name(st, name) if kind == "upload" else name


@router.get("/ui/")
async def home():
    return redirect("/ui/data")


@router.get("/ui/data")
async def data_page(request: Request):
    st = ui_state(request)
    return page(request, "data.html", "data", sources=sources(st), max_mb=st.max_upload_bytes / (1 << 20))


@router.post("/ui/data/upload")
async def upload(request: Request, file: UploadFile = FILE):
    st = ui_state(request)
    display = re.sub(r"[^\w.\- ]", "_", Path(file.filename or "upload").name)[:80] or "upload"
    suffix = Path(display).suffix.lower()
    if suffix not in SUFFIXES:
        raise UiError(400, f"{display}: use a .jsonl, .csv or .tsv file")
    data = await file.read(st.max_upload_bytes + 1)
    if len(data) > st.max_upload_bytes:
        raise UiError(413, f"{display}: larger than the upload limit of {st.max_upload_bytes >> 20} MB")
    if not data.strip():
        raise UiError(400, f"{display}: file is empty (no examples)")
    upload_id = "u" + hashlib.sha256(data).hexdigest()[:15]  # the name is ours: no path comes from the request
    target = st.uploads / f"{upload_id}{suffix}"
    if not target.exists():
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.rename(target)
    atomic_write_json(st.uploads / f"{upload_id}.json", {"name": display, "bytes": len(data), "uploaded": time.time()})
    return redirect(f"/ui/data/check?source=upload:{upload_id}")


def _line_of(message: str) -> int:
    m = re.search(r":(\d+):", message)
    return int(m.group(1)) if m else 0


def check(st: UiState, source: str) -> dict:
    """``data check`` on a source: every row error of an upload (with its line), or the report."""
    from adaptlab.data.named import load_task
    from adaptlab.data.validation import file_errors, validate
    from adaptlab.ui.jobs import data_arg

    kind, _, name = source.partition(":")
    data = data_arg(st, source)  # refuses anything but a named dataset or an upload of ours
    label = source_label(st, source)
    shown = lambda msg: msg.replace(data, label)  # (the upload's stored path is ours, not theirs)
    if kind == "upload":
        errors = file_errors(upload_path(st, name))
        if errors:
            return {"label": label, "errors": [shown(e) for e in sorted(errors, key=_line_of)]}
    try:
        splits = load_task(data, data_dir_override=st.data_dir)
        report = validate(splits.train, {"dev": splits.dev, "test": splits.test})
    except DataError as e:
        return {"label": label, "errors": [shown(str(e))]}
    return {
        "label": label,
        "errors": [],
        "task": report.task,
        "warnings": [shown(w) for w in report.warnings],
        "splits": [{**s.__dict__, "source": shown(s.source)} for s in report.splits],
        "labels": splits.train.label_set,
    }


@router.get("/ui/data/check")
async def check_page(request: Request, source: str = ""):
    st = ui_state(request)
    result = await asyncio.to_thread(check, st, source)
    return page(request, "check.html", "data", source=source, result=result)
