"""Sign-in and CSRF for the workbench.

- **Keys.** Where a key is required (always when the UI is bound beyond loopback), a person signs
  in once with an API key from the registry's key store, scoped to ``*`` (the UI promotes, rolls
  back and reads every task). The browser then holds an HttpOnly, SameSite=Strict cookie: the key's
  hash, signed with this process's secret (a restart signs everyone out). Scripts may send
  ``Authorization: Bearer KEY`` instead. Revoking the key ends its sessions at the next request.
- **CSRF.** Double-submit: every page sets a random ``adaptlab_csrf`` cookie (SameSite=Strict) and
  puts the same value in its forms and in a ``<meta>`` the scripts send back as ``X-CSRF-Token``.
  Every request that changes something must carry it; a cross-site form cannot read the cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from fastapi import Request

from adaptlab.registry.keys import hash_key
from adaptlab.ui.state import UiError, UiState

CSRF_COOKIE, SESSION_COOKIE = "adaptlab_csrf", "adaptlab_session"
SESSION_SECONDS = 12 * 3600
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def ui_state(request: Request) -> UiState:
    return request.app.state.ui


def csrf_token(request: Request) -> str:
    """The page's token: the cookie's value, or a new one the response will set."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token or len(token) != 43:
        token = getattr(request.state, "new_csrf", None) or secrets.token_urlsafe(32)
        request.state.new_csrf = token
    return token


async def check_csrf(request: Request) -> None:
    if request.method in SAFE_METHODS:
        return
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = request.headers.get("x-csrf-token", "")
    if not sent and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        sent = str((await request.form()).get("csrf", ""))  # starlette keeps the parsed form for the route
    if not cookie or not sent or not hmac.compare_digest(cookie, sent):
        raise UiError(403, "missing or wrong CSRF token: reload the page and try again")


def _sign(st: UiState, payload: str) -> str:
    return hmac.new(st.secret, payload.encode(), hashlib.sha256).hexdigest()


def session_cookie(st: UiState, key: str) -> str:
    payload = f"{hash_key(key)}.{int(time.time()) + SESSION_SECONDS}"
    return f"{payload}.{_sign(st, payload)}"


def key_ok(st: UiState, key: str) -> bool:
    scope = st.registry.api_keys.scope(key)
    return scope is not None and "*" in scope


def _session_ok(st: UiState, cookie: str) -> bool:
    try:
        key_hash, expires, sig = cookie.split(".")
    except ValueError:
        return False
    if not hmac.compare_digest(sig, _sign(st, f"{key_hash}.{expires}")) or int(expires) < time.time():
        return False
    scope = st.registry.api_keys.scope_of_hash(key_hash)  # still an active '*' key? (revocation ends the session)
    return scope is not None and "*" in scope


def signed_in(request: Request) -> bool:
    st = ui_state(request)
    if not st.key_required:
        return True
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return key_ok(st, header[7:].strip())
    return _session_ok(st, request.cookies.get(SESSION_COOKIE, ""))


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path inside the UI, never another site."""
    if target and target.startswith("/ui") and "//" not in target and "\\" not in target:
        return target
    return "/ui/"
