"""Compare: start one, watch it live (server-sent events), read its report, register its winner."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, StreamingResponse

from adaptlab.ui.jobs import MODELS, CompareRequest
from adaptlab.ui.routes import guard
from adaptlab.ui.routes.data import source_label, sources
from adaptlab.ui.security import ui_state
from adaptlab.ui.state import UiError
from adaptlab.ui.views import (
    constraints_from,
    examples,
    finished_runs,
    largest_run,
    recommendation,
    report_data,
)
from adaptlab.ui.web import page, redirect

router = APIRouter(dependencies=[Depends(guard)])


def jobs(request: Request):
    return request.app.state.jobs


@router.get("/ui/compare")
async def compare_page(request: Request, source: str = ""):
    from adaptlab.strategies import list_strategies

    st = ui_state(request)
    listed = await asyncio.to_thread(jobs(request).list)
    return page(
        request,
        "compare.html",
        "compare",
        sources=sources(st),
        source=source,
        models=MODELS,
        default_model=st.model,
        strategies=list_strategies(),
        checked=list_strategies(default=True),
        jobs=listed,
    )


@router.post("/ui/compare")
async def start(
    request: Request,
    source: str = Form(""),
    model: str = Form(...),
    train_sizes: str = Form(...),
    seeds: int = Form(1),
    budget: str = Form(""),
    mode: str = Form("adaptive"),
    test_limit: int = Form(0),
    extras: str = Form(""),
    track: str = Form(""),
):
    form = await request.form()
    req = CompareRequest(
        source=source,
        model=model,
        strategies=form.getlist("strategies"),
        train_sizes=train_sizes,
        seeds=seeds,
        budget=budget.strip(),
        adaptive=mode != "full",
        test_limit=test_limit,
        extras=bool(extras),
        track=bool(track),
    )
    job_id = await asyncio.to_thread(jobs(request).start, req, source_label(ui_state(request), source))
    return redirect(f"/ui/compare/{job_id}")


@router.get("/ui/compare/{job_id}")
async def job_page(request: Request, job_id: str):
    status = await asyncio.to_thread(jobs(request).status, job_id)
    return page(request, "job.html", "compare", job=status)


@router.get("/ui/api/compare/{job_id}")
async def job_status(request: Request, job_id: str):
    return await asyncio.to_thread(jobs(request).status, job_id)


@router.get("/ui/api/compare/{job_id}/events")
async def job_events(request: Request, job_id: str):
    """Server-sent events: the status every second while the compare runs, then once more, final."""
    j = jobs(request)
    j.folder(job_id)  # 404 before the stream starts

    async def stream():
        while True:
            status = await asyncio.to_thread(j.status, job_id)
            yield f"data: {json.dumps(status)}\n\n"
            if status["state"] != "running" or await request.is_disconnected():
                return
            await asyncio.sleep(1.0)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


@router.post("/ui/compare/{job_id}/resume")
async def resume(request: Request, job_id: str):
    await asyncio.to_thread(jobs(request).resume, job_id)
    return redirect(f"/ui/compare/{job_id}")


@router.get("/ui/compare/{job_id}/report")
async def report_page(request: Request, job_id: str):
    folder = jobs(request).folder(job_id)
    c = constraints_from(request.query_params)
    records = await asyncio.to_thread(finished_runs, folder)  # read once for both
    rec = await asyncio.to_thread(recommendation, records, c)
    data = await asyncio.to_thread(report_data, records)
    status = await asyncio.to_thread(jobs(request).status, job_id)
    return page(
        request, "report.html", "compare", job=status, rec=rec, data=data, tasks=ui_state(request).registry.tasks()
    )


@router.get("/ui/api/compare/{job_id}/recommend")
async def recommend_api(request: Request, job_id: str):
    folder = jobs(request).folder(job_id)
    c = constraints_from(request.query_params)
    return await asyncio.to_thread(recommendation, await asyncio.to_thread(finished_runs, folder), c)


@router.get("/ui/compare/{job_id}/examples")
async def examples_page(request: Request, job_id: str, strategy: str = ""):
    folder = jobs(request).folder(job_id)
    view = await asyncio.to_thread(examples, folder, strategy or None)
    return page(request, "examples.html", "compare", job_id=job_id, view=view)


@router.get("/ui/compare/{job_id}/report.html")
async def static_report(request: Request, job_id: str):
    path = jobs(request).folder(job_id) / "report" / "report.html"
    if not path.exists():
        raise UiError(404, "the report is written when the compare finishes")
    return FileResponse(path, media_type="text/html")


@router.post("/ui/compare/{job_id}/register")
async def register(
    request: Request, job_id: str, task: str = Form(...), strategy: str = Form(...), alias: str = Form("")
):
    """Register the run of ``strategy`` at the ranked size whose artifact the compare kept."""
    from adaptlab.compare.store import load_results
    from adaptlab.registry import RegistryError

    folder = jobs(request).folder(job_id)
    records = [
        r
        for r in load_results(folder)
        if r["run"]["strategy"] == strategy
        and (folder / "artifacts" / r["run"]["id"] / "adaptlab_artifact.json").exists()
    ]
    if not records:
        raise UiError(400, f"{strategy}: no kept artifact in this compare (it keeps the recommended run's)")
    run = max(records, key=largest_run)["run"]["id"]
    st = ui_state(request)
    try:
        entry = await asyncio.to_thread(
            st.registry.register,
            folder / "artifacts" / run,
            task.strip(),
            run=f"{job_id}/{run}",
            alias=alias.strip() or None,
        )
    except RegistryError as e:
        raise UiError(400, str(e)) from None
    return redirect(f"/ui/registry/{entry.task}?registered={entry.version}")
