"""Registry: tasks, versions with their metrics and source run, aliases with their history; promote
and rollback after a confirmation page; two versions' metrics side by side."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends, Form, Request

from adaptlab.registry import RegistryError, check_name, lineage_text
from adaptlab.ui.routes import guard
from adaptlab.ui.security import ui_state
from adaptlab.ui.state import UiError
from adaptlab.ui.web import page, redirect

router = APIRouter(dependencies=[Depends(guard)])


def flat_metrics(metrics: dict, prefix: str = "") -> dict[str, float | str]:
    """Nested metrics -> ``{"train.final_loss": 0.31, ...}``; scalars only (lists are histories)."""
    out: dict[str, float | str] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_metrics(v, key + "."))
        elif isinstance(v, (int, float, str)) and not isinstance(v, bool):
            out[key] = v
    return out


def _task(request: Request, task: str) -> str:
    try:
        check_name(task, "task")
    except RegistryError as e:
        raise UiError(404, str(e)) from None
    if task not in ui_state(request).registry.tasks():
        raise UiError(404, f"no task {task!r} in the registry")
    return task


@router.get("/ui/registry")
async def registry_page(request: Request):
    reg = ui_state(request).registry
    entries = await asyncio.to_thread(reg.entries)
    aliases = await asyncio.to_thread(reg.aliases)
    tasks = {}
    for e in entries:
        t = tasks.setdefault(
            e.task, {"task": e.task, "versions": 0, "latest": None, "aliases": aliases.get(e.task, {})}
        )
        t["versions"] += 1
        t["latest"] = e
    return page(request, "registry.html", "registry", tasks=list(tasks.values()))


@router.get("/ui/registry/{task}")
async def task_page(request: Request, task: str, registered: int | None = None):
    reg = ui_state(request).registry
    task = _task(request, task)
    entries = await asyncio.to_thread(reg.entries, task)
    lineage = await asyncio.to_thread(reg.lineage, task)
    view = [
        {
            "e": e,
            "headline": _headline(e.metrics),
            "when": time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created_at)),
            "lineage": lineage_text(lineage.get(e.version)),
        }
        for e in entries
    ]
    history = [
        {**h, "when": time.strftime("%Y-%m-%d %H:%M", time.localtime(h["set_at"]))}
        for h in await asyncio.to_thread(reg.history, task)
    ]
    return page(
        request,
        "task.html",
        "registry",
        task=task,
        versions=view,
        aliases=reg.aliases(task).get(task, {}),
        history=history[::-1],
        registered=registered,
    )


def _headline(metrics: dict) -> str:
    flat = flat_metrics(metrics)
    keys = [
        k
        for k in (
            "test.accuracy",
            "test.rouge_l",
            "test.preference_accuracy",
            "dev.metric",
            "dev.accuracy",
            "train.final_loss",
        )
        if k in flat
    ]
    return ", ".join(f"{k} {flat[k]:.3f}" if isinstance(flat[k], float) else f"{k} {flat[k]}" for k in keys[:3])


@router.post("/ui/registry/{task}/{action}")
async def change_alias(
    request: Request,
    task: str,
    action: str,
    alias: str = Form("prod"),
    version: int | None = Form(None),
    confirmed: str = Form(""),
):
    """Promote or roll back: the first POST shows what will change; the confirmed one changes it."""
    reg = ui_state(request).registry
    task = _task(request, task)
    if action not in ("promote", "rollback"):
        raise UiError(404, f"unknown action {action!r}")
    try:
        check_name(alias, "alias")
        now = reg.aliases(task).get(task, {}).get(alias)
        if action == "promote":
            if version is None:
                raise UiError(400, "version: choose the version to promote")
            reg.get(task, version)
        if confirmed != "yes":
            return page(
                request, "confirm.html", "registry", task=task, action=action, alias=alias, version=version, current=now
            )
        entry = await asyncio.to_thread(
            reg.promote if action == "promote" else reg.rollback,
            task,
            *((version, alias) if action == "promote" else (alias,)),
        )
    except RegistryError as e:
        raise UiError(400, str(e)) from None
    return redirect(f"/ui/registry/{task}?changed={alias}@{entry.version}")


@router.get("/ui/registry/{task}/diff")
async def diff_page(request: Request, task: str, a: int, b: int):
    reg = ui_state(request).registry
    task = _task(request, task)
    try:
        ea, eb = reg.get(task, a), reg.get(task, b)
    except RegistryError as e:
        raise UiError(404, str(e)) from None
    fa, fb = flat_metrics(ea.metrics), flat_metrics(eb.metrics)
    rows = []
    for k in sorted(set(fa) | set(fb)):
        va, vb = fa.get(k), fb.get(k)
        delta = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
        rows.append({"key": k, "a": va, "b": vb, "delta": delta})
    return page(request, "diff.html", "registry", task=task, a=ea, b=eb, rows=rows)
