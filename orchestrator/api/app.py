"""The FastAPI application: routes, shared connections, and errors as 4xx/503."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from orchestrator.api import deadletters, health, orders, sagas, stock
from orchestrator.api.deps import Services
from orchestrator.client import SagaClient
from orchestrator.errors import TransientError
from orchestrator.settings import Settings
from participants.readside import SagaAnalytics, SagaSummaries, StockProjection

__all__ = ["create_app"]

DESCRIPTION = """Start order sagas, follow them, find the stuck ones, look at stock and
dead-letter queues, and repair. Reads are open; changes need the operator token
(`Authorization: Bearer <SAGA_OPERATOR_TOKEN>`)."""


def create_app(settings: Settings) -> FastAPI:
    """The API for one deployment."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = SagaClient(settings, name="api")
        await client.connect()
        db = client.store.commits.database
        summaries = SagaSummaries(database=db)
        await summaries.ensure_indexes()
        await db["api_idempotency_keys"].create_index("at")
        app.state.services = Services(
            settings=settings,
            client=client,
            db=db,
            summaries=summaries,
            stock=StockProjection(database=db),
            analytics=SagaAnalytics(database=db),
        )
        print(f"api ready on {settings.api_host}:{settings.api_port}", file=sys.stderr, flush=True)
        try:
            yield
        finally:
            await client.close()

    app = FastAPI(
        title="saga-orchestrator", version="0.1.0", description=DESCRIPTION, lifespan=lifespan
    )
    for module in (orders, sagas, stock, deadletters, health):
        app.include_router(module.router)

    @app.exception_handler(TransientError)
    async def unavailable(request: Request, exc: TransientError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"temporarily unavailable: {exc}"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )

    return app
