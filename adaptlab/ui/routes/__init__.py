"""The workbench's routers, one per page group; :func:`guard` is every router's dependency but sign-in's."""

from fastapi import Request

from adaptlab.ui.security import check_csrf, signed_in
from adaptlab.ui.state import UiError


async def guard(request: Request) -> None:
    """Signed in (where a key is required), and the CSRF token on anything that changes state."""
    if not signed_in(request):
        raise UiError(401, "sign in with an API key scoped to '*'")
    await check_csrf(request)
