"""What every route shares: the server state, errors, the auth dependency, limits and metrics.

Routers (:mod:`adaptlab.serving.routes`) read the :class:`ServerState` of their app and call the
helpers here; :func:`adaptlab.serving.app.create_app` wires them together (the layout of vLLM's
``entrypoints/openai/api_server.py``: one app builder, routers, module-level handlers).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import torch
from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adaptlab.registry import Registry, RegistryError, check_name
from adaptlab.serving.service import Service, ServingError, Work

KNOWN_ROUTES = {
    "/healthz",
    "/metrics",
    "/v1/models",
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/classify",
    "/v1/feedback",
    "/admin/load",
    "/admin/unload",
}


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "adaptlab_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "adaptlab_request_seconds",
            "Request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.batch_size = Histogram(
            "adaptlab_batch_rows", "Rows per forward batch", registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64)
        )
        self.queue_depth = Gauge("adaptlab_queue_depth", "Rows waiting for the batcher", registry=self.registry)
        self.loaded = Gauge("adaptlab_loaded_adapters", "Adapters in memory", registry=self.registry)
        self.loaded_bytes = Gauge("adaptlab_loaded_adapter_bytes", "Bytes of loaded adapters", registry=self.registry)

        self.sources: list = []  # () -> Prometheus text, registered from outside (add_source)

    def add_source(self, source) -> None:
        """Append another module's gauges to ``/metrics``: ``source()`` returns Prometheus text, and
        must answer at once (the drift gauges of :class:`adaptlab.maintenance.drift.DriftWatch`
        recompute in a thread). Registered from outside, so serving imports no module above it."""
        self.sources.append(source)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry) + "".join(s() for s in self.sources).encode()


@dataclass
class ServerState:
    """One app's service and settings (``app.state.server``)."""

    service: Service
    metrics: Metrics
    auth: bool
    max_body_bytes: int
    max_input_chars: int
    log_requests: bool

    @property
    def registry(self) -> Registry | None:
        return self.service.registry


def state(request: Request) -> ServerState:
    return request.app.state.server


# ---------------------------------------------------------------------------------- errors
def error_response(status: int, code: str, message: str) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status in (401, 403):
        kind = "authentication_error" if status == 401 else "permission_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=status)


async def serving_error(request, e: ServingError):
    return error_response(e.status, e.code, e.message)


async def validation_error(request, e: RequestValidationError):
    first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
    return error_response(400, "invalid_request", f"{where}: {first.get('msg')}")


async def http_error(request, e: StarletteHTTPException):
    code = getattr(e, "code", None) or ("not_found" if e.status_code == 404 else "http_error")
    return error_response(e.status_code, code, str(e.detail))


EXCEPTION_HANDLERS = {
    ServingError: serving_error,
    RequestValidationError: validation_error,
    StarletteHTTPException: http_error,
}


# ---------------------------------------------------------------------------------- limits, metrics
class _TooLarge(HTTPException):
    """Raised while a route reads its body; an HTTPException so FastAPI passes it on as it is
    (any other error while reading a body becomes its generic 400)."""

    code = "request_too_large"


class BodyLimit:
    """ASGI middleware: refuse a body over ``max_bytes`` (413) by its length header or, for a chunked
    upload that has none, as soon as the chunks read pass the limit, never reading all of it."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, scope, receive, send) -> None:
        resp = error_response(413, "request_too_large", f"request body over {self.max_bytes} bytes")
        await resp(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._refuse(scope, receive, send)
        received, started = 0, False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(413, f"request body over {self.max_bytes} bytes")
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(scope, receive, send)


async def count_and_catch(request: Request, call_next):
    """HTTP middleware: request count and latency per known route; never a traceback to the client."""
    metrics = request.app.state.server.metrics
    t0 = time.perf_counter()
    try:
        resp = await call_next(request)
    except Exception as e:  # noqa: BLE001
        resp = error_response(500, "internal_error", f"{type(e).__name__}: {e}")
    route = request.url.path if request.url.path in KNOWN_ROUTES else "other"
    metrics.requests.labels(route, str(resp.status_code)).inc()
    metrics.latency.labels(route).observe(time.perf_counter() - t0)
    return resp


# ---------------------------------------------------------------------------------- auth
def key_scope(request: Request) -> list[str] | None:
    """Dependency: the tasks the caller's API key may use (``None``: no auth on this server)."""
    st = state(request)
    if not st.auth:
        return None
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer ") or not header[7:].strip():
        raise ServingError(401, "missing_api_key", "missing API key: send 'Authorization: Bearer KEY'")
    tasks = st.registry.api_keys.scope(header[7:].strip())
    if tasks is None:
        raise ServingError(401, "invalid_api_key", "invalid or revoked API key")
    return tasks


Scope = Depends(key_scope)


def allowed(scope: list[str] | None, task: str | None) -> bool:
    return scope is None or "*" in scope or (task or "base") in scope


def admin_scope(scope: list[str] | None = Scope) -> None:
    """Dependency: loading and unloading need a key scoped to every task."""
    if scope is not None and "*" not in scope:
        raise ServingError(403, "admin_only", "loading and unloading need a key scoped to '*'")


# ---------------------------------------------------------------------------------- helpers
def adapter_for(st: ServerState, scope: list[str] | None, model: str):
    """``model`` field -> (registry entry or None, adapter), after the name and scope checks."""
    if not isinstance(model, str) or not model or len(model) > 200:
        raise ServingError(400, "invalid_model", "model: a non-empty name of at most 200 characters")
    service = st.service
    try:
        names = ("base", *(b.name for b in service.bases))
        task = None if model in names else check_name(model.partition("@")[0], "task")
    except RegistryError as e:
        raise ServingError(404, "model_not_found", str(e)) from None
    if not allowed(scope, task):  # checked before loading anything
        raise ServingError(403, "model_not_allowed", f"this API key may not use {model!r}")
    return service.resolve(model)


def check_text(st: ServerState, text: str, field: str) -> None:
    if len(text) > st.max_input_chars:
        raise ServingError(413, "input_too_large", f"{field}: {len(text)} characters, limit {st.max_input_chars}")


def max_new(st: ServerState, requested: int | None, adapter) -> int:
    n = requested or adapter.decoding.get("max_new_tokens", 64)
    if n > st.service.config.max_new_tokens:
        raise ServingError(
            400,
            "max_tokens_too_large",
            f"max_tokens={n}: this server allows at most {st.service.config.max_new_tokens}",
        )
    return n


async def log(st: ServerState, request_id: str, entry, adapter, text: str, output: str) -> None:
    if st.log_requests and st.registry is not None and entry is not None:
        await asyncio.to_thread(
            st.registry.requests.log, request_id, entry.task, entry.version, adapter.task_type, text, output
        )


async def classify_texts(st: ServerState, adapter, texts: list[str]) -> list[dict]:
    if not adapter.closed_labels:
        raise ServingError(400, "not_a_classifier", f"{adapter.name} is not a classification model")
    works = [Work("classify", adapter, t) for t in texts]
    futures = [st.service.submit(w) for w in works]
    out = []
    for w, f in zip(works, futures):
        scores = await asyncio.wrap_future(f)
        probs = torch.softmax(scores.double(), dim=-1).tolist()
        best = int(torch.tensor(probs).argmax())
        out.append({"label": adapter.labels[best], "probs": dict(zip(adapter.labels, probs)), "work": w})
    return out
