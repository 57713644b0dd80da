"""The workbench app: :func:`create_ui` builds it for ``adaptlab ui``; :func:`include_ui` adds the
same pages to another FastAPI app (``adaptlab serve --ui``), sharing its model service."""

from __future__ import annotations

import contextlib

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from adaptlab.serving.http import BodyLimit
from adaptlab.ui.jobs import Jobs
from adaptlab.ui.routes import auth, compare, data, playground, registry
from adaptlab.ui.state import UiError, UiState
from adaptlab.ui.web import HERE, redirect, ui_error

# Everything the pages load comes from this server: no CDN, no inline script.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


async def security_headers(request: Request, call_next):
    resp = await call_next(request)
    if request.url.path.startswith("/ui"):
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"
    return resp


async def invalid_request(request: Request, exc: RequestValidationError):
    """A form or JSON body the UI cannot take: one line naming the field."""
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(x) for x in first.get("loc", ())[1:]) or "request"
    return (
        await ui_error(request, UiError(422, f"{where}: {first.get('msg', 'invalid')}"))
        if request.url.path.startswith("/ui")
        else JSONResponse({"detail": exc.errors()}, status_code=422)
    )


def include_ui(app: FastAPI, st: UiState) -> FastAPI:
    app.state.ui = st
    app.state.jobs = Jobs(st)
    app.add_exception_handler(UiError, ui_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.middleware("http")(security_headers)
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")
    for module in (auth, data, compare, registry, playground):
        app.include_router(module.router)
    return app


def create_ui(st: UiState) -> FastAPI:
    """The standalone workbench. Uploads over ``st.max_upload_bytes`` are refused as they arrive."""

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        st.close()

    app = FastAPI(title="adaptlab ui", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=st.max_upload_bytes + (1 << 20))  # the form around the file
    include_ui(app, st)

    @app.get("/")
    async def root():
        return redirect("/ui/")

    return app
