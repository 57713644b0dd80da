"""Playground (one input or a conversation, several adaptations side by side, rated) and the
feedback inbox (rated requests per task, exported as a training file)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import torch
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from adaptlab.registry import RegistryError, check_name
from adaptlab.serving.service import ServingError
from adaptlab.tasks.base import has_label_set
from adaptlab.ui.routes import guard
from adaptlab.ui.security import ui_state
from adaptlab.ui.state import UiError, UiState
from adaptlab.ui.web import page

router = APIRouter(dependencies=[Depends(guard)])
MAX_INPUT_CHARS = 20_000
MAX_MODELS = 6
ROLE_LINE = re.compile(r"^(system|user|assistant):\s?(.*)$")


class PlayRequest(BaseModel):
    input: str = Field(max_length=MAX_INPUT_CHARS)
    conversation: bool = False
    models: list[str] = Field(min_length=1, max_length=MAX_MODELS)
    max_new_tokens: int = Field(default=64, ge=1, le=256)


class Rating(BaseModel):
    request_id: str = Field(min_length=1, max_length=100)
    rating: int = Field(ge=-1, le=1)
    correction: str | None = Field(default=None, max_length=MAX_INPUT_CHARS)


def parse_conversation(text: str) -> list[dict]:
    """``role: content`` lines (a line without a role continues the turn before it) -> messages."""
    msgs: list[dict] = []
    for n, line in enumerate(text.splitlines(), start=1):
        m = ROLE_LINE.match(line)
        if m:
            msgs.append({"role": m.group(1), "content": m.group(2)})
        elif msgs:
            msgs[-1]["content"] += "\n" + line
        elif line.strip():
            raise UiError(400, f"conversation line {n}: start a turn with 'user:', 'assistant:' or 'system:'")
    msgs = [{"role": m["role"], "content": m["content"].strip()} for m in msgs]
    if not msgs or msgs[-1]["role"] != "user" or any(not m["content"] for m in msgs):
        raise UiError(400, "conversation: non-empty turns, ending with a user turn")
    return msgs


def choices(st: UiState) -> list[dict]:
    """What the playground offers: the base model, each task's aliases and its latest version."""
    out = [{"ref": "base", "label": f"base model ({st.model})"}]
    aliases = st.registry.aliases()
    latest: dict[str, int] = {}
    for e in st.registry.entries():
        latest[e.task] = e.version
    for task, v in latest.items():
        for alias, version in sorted(aliases.get(task, {}).items()):
            out.append({"ref": f"{task}@{alias}", "label": f"{task}@{alias} (v{version})"})
        out.append({"ref": f"{task}@{v}", "label": f"{task}@{v} (latest)"})
    return out


def answer(st: UiState, ref: str, body: PlayRequest) -> dict:
    """One adaptation's answer, timed, logged as a request (so that it can be rated)."""
    from adaptlab.models.runtime import ChatTemplateError, render_chat

    service = st.get_service()
    if ref != "base":
        try:
            check_name(ref.partition("@")[0], "task")
        except RegistryError as e:
            raise UiError(400, str(e)) from None
    try:
        entry, adapter = service.resolve(ref)
    except ServingError as e:
        return {"model": ref, "error": e.message}
    msgs = parse_conversation(body.input) if body.conversation else [{"role": "user", "content": body.input}]
    if adapter.task_type is not None:  # the server's rule (ServingAdapter.request_input)
        try:
            text = adapter.request_input(msgs)
        except ValueError as e:
            return {"model": ref, "error": str(e)}
    else:  # the base model: the conversation in its chat format, or the text as it is
        try:
            text = render_chat(service.base.tokenizer, msgs) if body.conversation else body.input
        except ChatTemplateError as e:
            return {"model": ref, "error": f"messages: {e}"}
    t0 = time.perf_counter()
    out = {"model": ref, "name": adapter.name, "task_type": adapter.task_type or "base", "kind": adapter.kind}
    if adapter.closed_labels:
        scores = service.classify(adapter, [text])[0]
        probs = torch.softmax(scores.double(), dim=-1).tolist()
        ranked = sorted(zip(adapter.labels, probs), key=lambda x: -x[1])
        out.update(output=ranked[0][0], probs=[{"label": lab, "p": p} for lab, p in ranked[:10]], labels=adapter.labels)
    else:
        out["output"] = service.generate(
            adapter, [text], min(body.max_new_tokens, adapter.decoding.get("max_new_tokens", 64))
        )[0]
    out["latency_ms"] = round(1000 * (time.perf_counter() - t0), 1)
    if entry is not None:  # the base model has no task to collect feedback for
        out["request_id"] = f"ui-{uuid.uuid4().hex[:20]}"
        st.registry.requests.log(out["request_id"], entry.task, entry.version, adapter.task_type, text, out["output"])
    return out


@router.get("/ui/playground")
async def playground_page(request: Request):
    st = ui_state(request)
    return page(
        request, "playground.html", "playground", choices=choices(st), loaded=st.service is not None, model=st.model
    )


@router.post("/ui/api/playground")
async def play(request: Request, body: PlayRequest):
    st = ui_state(request)
    if not body.input.strip():
        raise UiError(400, "input: type something first")
    answers = []
    for ref in dict.fromkeys(body.models):  # one after another: they share the model
        answers.append(await asyncio.to_thread(answer, st, ref, body))
    return {"answers": answers}


@router.post("/ui/api/feedback")
async def rate(request: Request, body: Rating):
    """As ``/v1/feedback``: a correction of a classifier must be one of its labels."""
    reg = ui_state(request).registry
    req = await asyncio.to_thread(reg.requests.get, body.request_id)
    if req is None:
        raise UiError(404, f"unknown request id {body.request_id!r}")
    correction = body.correction.strip() if body.correction and body.correction.strip() else None
    if correction is not None and has_label_set(req["task_type"]):
        from adaptlab.strategies.base import read_artifact_meta

        labels = read_artifact_meta(reg.get(req["task"], req["version"]).path).get("labels") or []
        if correction not in labels:
            raise UiError(400, f"correction: {correction!r} is not a label of {req['task']}@{req['version']}")
    fid = await asyncio.to_thread(reg.requests.add_feedback, body.request_id, body.rating, correction, "ui")
    return {"id": fid, "status": "stored"}


@router.get("/ui/feedback")
async def inbox(request: Request, task: str = "", rating: str = ""):
    reg = ui_state(request).registry
    tasks = reg.tasks()
    if task and task not in tasks:
        raise UiError(404, f"no task {task!r} in the registry")
    task = task or (tasks[0] if tasks else "")
    rows = (await asyncio.to_thread(reg.requests.feedback, task)) if task else []
    if rating in ("-1", "0", "1"):
        rows = [r for r in rows if r["rating"] == int(rating)]
    for r in rows:
        r["when"] = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created_at"]))
    return page(request, "feedback.html", "feedback", tasks=tasks, task=task, rating=rating, rows=rows[::-1])


@router.post("/ui/feedback/export")
async def export(request: Request, task: str = Form(...)):
    """The same file as ``adaptlab feedback export``, downloaded."""
    from adaptlab.serving.feedback import export_feedback

    st = ui_state(request)
    if task not in st.registry.tasks():
        raise UiError(404, f"no task {task!r} in the registry")
    out = st.workdir / "exports" / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    try:
        stats = await asyncio.to_thread(export_feedback, st.registry, task, out)
    except RegistryError as e:
        raise UiError(400, str(e)) from None
    return FileResponse(
        out,
        media_type="application/jsonl",
        filename=f"{task}-feedback.jsonl",
        headers={"x-adaptlab-export": json.dumps(stats)},
    )
