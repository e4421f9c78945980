"""Mounting the UI on the API's app, and what every UI route shares."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from orchestrator.api.deps import Services, services
from orchestrator.errors import TransientError
from orchestrator.ui.auth import LoginRequired, ReadRuleOf, Refused, api_read_rule, identify
from orchestrator.ui.queries import SagaBrowser
from orchestrator.ui.render import PREFIX, page

__all__ = ["PREFIX", "Svc", "UiRoute", "UiState", "browser", "install_ui", "ui_router"]

STATIC = Path(__file__).parent / "static"
log = structlog.get_logger("ui")
Svc = Annotated[Services, Depends(services)]


@dataclass(kw_only=True)
class UiState:
    """The UI's per-process state: its read rule and its summary indexes."""

    read_rule: ReadRuleOf
    indexes_ready: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


async def browser(request: Request, svc: Svc) -> SagaBrowser:
    """The summary reader, its indexes made once per process (before the first read)."""
    state: UiState = request.app.state.ui
    found = SagaBrowser(collection=svc.summaries.docs)
    if not state.indexes_ready:
        async with state.lock:
            if not state.indexes_ready:
                await found.ensure_indexes()
                state.indexes_ready = True
    return found


class UiRoute(APIRoute):
    """A UI route: a login wanted becomes a redirect to the login form, a refused change
    and an unavailable broker or store become pages that say so (not JSON)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired as e:
                target = f"{PREFIX}/login?next={quote(e.next_path, safe='')}"
                return RedirectResponse(target, status_code=303)
            except Refused as e:
                return _problem(request, str(e), e.status_code)
            except TransientError as e:
                return _problem(request, f"temporarily unavailable: {e}", 503)
            except RequestValidationError as e:
                return _problem(request, f"bad request: {_words(e)}", 400)
            except HTTPException:
                raise
            except Exception as e:  # a page that breaks says so, and the log has it all
                log.exception("ui_page_failed", path=request.url.path)
                return _problem(request, f"this page failed ({type(e).__name__}); see the log", 500)

        return handle


def _words(error: RequestValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'input'}: {e.get('msg', '')}"
        for e in error.errors()
    )


def _problem(request: Request, message: str, status_code: int) -> Response:
    return page(
        request, "problem.html", identify(request), status_code=status_code, message=message
    )


def ui_router() -> APIRouter:
    """A router for UI pages (HTML, not in the OpenAPI document)."""
    return APIRouter(route_class=UiRoute, include_in_schema=False)


def install_ui(app: FastAPI, *, read_rule: ReadRuleOf = api_read_rule) -> None:
    """Serve the operator UI under ``/ui`` on ``app`` (the API's app: the UI uses its
    services). ``read_rule`` decides who may read; by default the API's rule."""
    from orchestrator.ui import deadletters, login, sagas  # noqa: PLC0415 - they import this

    app.state.ui = UiState(read_rule=read_rule)
    for module in (sagas, deadletters, login):
        app.include_router(module.router, prefix=PREFIX)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="ui-static")
