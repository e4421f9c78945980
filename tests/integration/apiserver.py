"""The HTTP API served for real by uvicorn on a free port, for the API tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn

from orchestrator.api import create_app
from orchestrator.dev.embedded import free_port
from orchestrator.settings import Settings
from tests.helpers import eventually

__all__ = ["serve_api", "serving_api"]


@asynccontextmanager
async def serving_api(settings: Settings) -> AsyncIterator[str]:
    """The API served by uvicorn on a free port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: asyncio.sleep(0, server.started), what="API started")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


@asynccontextmanager
async def serve_api(
    settings: Settings, headers: dict[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The API served by uvicorn, and a client for it (sending ``headers``)."""
    async with (
        serving_api(settings) as url,
        httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as http,
    ):
        yield http
