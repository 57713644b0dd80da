"""The HTTP layer's one app builder: state, middleware, exception handlers and routers.

OpenAI-compatible routes (``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` with
streaming) plus ``/v1/classify`` and ``/v1/feedback``, ``/healthz``, ``/metrics`` and the admin
routes, each router in :mod:`adaptlab.serving.routes`. The ``model`` field names a registry entry
(``task``, ``task@3``, ``task@prod``) or the base model; it is parsed by the registry's name
rules, so no file path ever comes from a request. Decoding is greedy: ``temperature`` and
``top_p`` are accepted for client compatibility and ignored.
"""

from __future__ import annotations

from fastapi import FastAPI

from adaptlab.serving.http import EXCEPTION_HANDLERS, BodyLimit, Metrics, ServerState, count_and_catch
from adaptlab.serving.routes import feedback, openai, ops
from adaptlab.serving.service import Service


def create_app(
    service: Service,
    auth: bool = True,
    max_body_bytes: int = 1 << 20,
    max_input_chars: int = 20_000,
    log_requests: bool = True,
) -> FastAPI:
    """The FastAPI app over a running :class:`Service`. ``auth=False`` serves without API keys.
    Other modules' gauges join ``/metrics`` through ``service.metrics.add_source`` (the CLI adds
    the drift gauges of :class:`adaptlab.maintenance.drift.DriftWatch`)."""
    if auth and (service.registry is None or not service.registry.api_keys.any()):
        raise ValueError(
            "no API keys exist: create one with `adaptlab keys add NAME --tasks ...` or serve with "
            "--no-auth (loopback development only)"
        )
    service.metrics = service.metrics or Metrics()
    app = FastAPI(title="adaptlab", docs_url=None, redoc_url=None, exception_handlers=EXCEPTION_HANDLERS)
    app.state.server = ServerState(service, service.metrics, auth, max_body_bytes, max_input_chars, log_requests)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)  # inner: sees the body as it arrives
    app.middleware("http")(count_and_catch)  # outer: counts every answer, 413s included
    for module in (openai, feedback, ops):
        app.include_router(module.router)
    return app
