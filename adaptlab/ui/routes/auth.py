"""Sign-in with an API key (where the UI requires one) and sign-out."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request

from adaptlab.ui.security import (
    SESSION_COOKIE,
    check_csrf,
    key_ok,
    safe_next,
    session_cookie,
    ui_state,
)
from adaptlab.ui.web import page, redirect

router = APIRouter()


@router.get("/ui/login")
async def login_page(request: Request, next: str = "/ui/"):
    return page(request, "login.html", "", next=safe_next(next))


@router.post("/ui/login")
async def login(request: Request, key: str = Form(""), next: str = Form("/ui/")):
    await check_csrf(request)
    st = ui_state(request)
    if not key_ok(st, key.strip()):
        return page(
            request,
            "login.html",
            "",
            status=401,
            next=safe_next(next),
            message="that key is unknown, revoked, or not scoped to '*'",
        )
    resp = redirect(safe_next(next))
    resp.set_cookie(SESSION_COOKIE, session_cookie(st, key.strip()), httponly=True, samesite="strict", path="/")
    return resp


@router.post("/ui/logout")
async def logout(request: Request):
    await check_csrf(request)
    resp = redirect("/ui/login")
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp
