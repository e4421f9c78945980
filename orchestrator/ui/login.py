"""Logging in to the UI with a token, and out."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from orchestrator.ui.app import PREFIX, ui_router
from orchestrator.ui.auth import COOKIE, Viewer, identify, role_of_token, session_value
from orchestrator.ui.render import page

__all__ = ["router"]

router = ui_router()
SESSION_SECONDS = 12 * 3600


def _local(target: str) -> str:
    """Where to go after logging in: only a page of this UI (never another site)."""
    if target.startswith(f"{PREFIX}/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{PREFIX}/sagas"


@router.get("/login")
async def login_form(
    request: Request,
    viewer: Annotated[Viewer, Depends(identify)],
    next_path: Annotated[str, Query(alias="next", max_length=1000)] = "",
) -> Response:
    """The login form."""
    return page(request, "login.html", viewer, next_path=_local(next_path), error=None)


@router.post("/login")
async def login(
    request: Request,
    token: Annotated[str, Form(max_length=1000)] = "",
    next_path: Annotated[str, Form(alias="next", max_length=1000)] = "",
) -> Response:
    """Check the token and set the session cookie (a digest of the token, HttpOnly,
    SameSite=Strict, for ``/ui`` only)."""
    role = role_of_token(request, token.strip())
    if role is None:
        return page(
            request,
            "login.html",
            Viewer(),
            status_code=401,
            next_path=_local(next_path),
            error="that is not the operator token (nor a read token)",
        )
    response = RedirectResponse(_local(next_path), status_code=303)
    response.set_cookie(
        COOKIE,
        session_value(role, token.strip()),
        max_age=SESSION_SECONDS,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout() -> Response:
    """Forget the session cookie."""
    response = RedirectResponse(f"{PREFIX}/login?notice=logged_out", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response
