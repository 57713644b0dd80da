"""Operations: health, Prometheus metrics, loading and unloading adaptations."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from adaptlab.registry import RegistryError
from adaptlab.serving.http import admin_scope, state
from adaptlab.serving.schemas import AdminModelRequest
from adaptlab.serving.service import ServingError

router = APIRouter()


@router.get("/healthz")
async def healthz(request: Request):
    service = state(request).service
    bases = service.bases
    return {
        "status": "ok",
        "base_model": service.base.name,
        "fingerprint": service.base.fingerprint,
        "base_models": [{"name": b.name, "fingerprint": b.fingerprint} for b in bases],
        "loaded_adapters": len(service.cache),
        "queue_depth": service.queue_depth(),
    }


@router.get("/metrics")
async def prometheus(request: Request):
    return PlainTextResponse(state(request).metrics.text(), media_type="text/plain; version=0.0.4")


@router.post("/admin/load", dependencies=[Depends(admin_scope)])
async def admin_load(body: AdminModelRequest, request: Request):
    """Load (or refresh the recency of) an adaptation now, instead of at its first request."""
    service = state(request).service
    entry, _ = await asyncio.to_thread(service.resolve, body.model)
    return {
        "model": body.model,
        "resolved": entry.ref if entry else service.resolve(body.model)[1].base.name,
        "loaded": len(service.cache),
        "loaded_bytes": service.loaded_bytes(),
    }


@router.post("/admin/unload", dependencies=[Depends(admin_scope)])
async def admin_unload(body: AdminModelRequest, request: Request):
    """Drop an adaptation from memory (it reloads at its next request)."""
    st = state(request)
    if st.registry is None:
        raise ServingError(404, "model_not_found", "no registry is configured")
    try:
        entry = await asyncio.to_thread(st.registry.resolve, body.model)
    except RegistryError as e:
        raise ServingError(404, "model_not_found", str(e)) from None
    gone = st.service.unload(entry.digest)
    return {"model": body.model, "resolved": entry.ref, "unloaded": gone, "loaded": len(st.service.cache)}
