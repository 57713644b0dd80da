"""Page rendering and errors shared by the UI's routers."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from adaptlab.ui.security import CSRF_COOKIE, csrf_token, ui_state
from adaptlab.ui.state import UiError

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
NAV = [
    ("data", "Data", "/ui/data"),
    ("compare", "Compare", "/ui/compare"),
    ("registry", "Registry", "/ui/registry"),
    ("playground", "Playground", "/ui/playground"),
    ("feedback", "Feedback", "/ui/feedback"),
]


def page(request: Request, name: str, section: str, status: int = 200, **ctx) -> HTMLResponse:
    st = ui_state(request)
    token = csrf_token(request)
    resp = templates.TemplateResponse(
        request,
        name,
        {"csrf": token, "nav": NAV, "section": section, "key_required": st.key_required, **ctx},
        status_code=status,
    )
    set_csrf_cookie(request, resp)
    return resp


def set_csrf_cookie(request: Request, resp) -> None:
    new = getattr(request.state, "new_csrf", None)
    if new:
        resp.set_cookie(CSRF_COOKIE, new, httponly=False, samesite="strict", path="/")


def wants_json(request: Request) -> bool:
    return "/api/" in request.url.path or "application/json" in request.headers.get("accept", "")


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)  # after a POST: the browser GETs the next page


async def ui_error(request: Request, exc: UiError):
    if exc.status == 401 and not wants_json(request):
        from urllib.parse import quote

        return redirect(f"/ui/login?next={quote(request.url.path)}")
    if wants_json(request):
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    return page(request, "error.html", "", status=exc.status, message=exc.message)
