"""Human feedback on served requests: a rating and an optional correction, stored for the next round."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from adaptlab.serving.http import Scope, allowed, state
from adaptlab.serving.schemas import FeedbackRequest
from adaptlab.serving.service import ServingError
from adaptlab.tasks.base import has_label_set

router = APIRouter()


@router.post("/v1/feedback")
async def feedback(body: FeedbackRequest, request: Request, scope: list[str] | None = Scope):
    st = state(request)
    registry = st.registry
    if registry is None:
        raise ServingError(400, "no_registry", "feedback needs a registry")
    req = await asyncio.to_thread(registry.requests.get, body.request_id)
    if req is None:
        raise ServingError(404, "unknown_request", f"unknown request id {body.request_id!r}")
    if not allowed(scope, req["task"]):
        raise ServingError(403, "model_not_allowed", "this API key may not give feedback on that task")
    if body.correction is not None and has_label_set(req["task_type"]):
        labels = st.service.labels_of(req["task"], req["version"])
        if labels is not None and body.correction not in labels:
            raise ServingError(
                400,
                "unknown_label",
                f"correction: {body.correction!r} is not a label of {req['task']}@{req['version']}",
            )
    fid = await asyncio.to_thread(
        registry.requests.add_feedback, body.request_id, body.rating, body.correction, body.comment
    )
    return {"id": fid, "object": "feedback", "request_id": body.request_id, "status": "stored"}
