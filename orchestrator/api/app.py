"""The FastAPI application: routes, shared connections, and errors as 4xx/503."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from orchestrator.api import asyncapi, deadletters, health, sagas, starts
from orchestrator.api.deps import Access, Services
from orchestrator.api.idempotency import DEFAULT_RETENTION, ensure_key_retention
from orchestrator.api.limits import BodyLimit
from orchestrator.client import SagaClient
from orchestrator.errors import TransientError
from orchestrator.observability import tracing
from orchestrator.readside import SagaAnalytics, SagaSummaries
from orchestrator.settings import ConfigError, Settings, env_int

__all__ = ["create_app"]

DESCRIPTION = """Start any registered saga, follow it, find the stuck ones, look at the
dead-letter queues, and repair; plus what each saga pack adds (the order pack: orders and
stock).

Every call but health, readiness, metrics and the list of definitions needs a bearer
token (`Authorization: Bearer <token>`); none has a default, and a role without a
configured token is refused (401):

* `SAGA_OPERATOR_TOKEN`: everything, including changes (restock, replay, discard, resume);
* `SAGA_CLIENT_TOKEN`: start sagas (`POST /orders`, `POST /definitions/{name}/sagas`);
* `SAGA_READ_TOKEN`: reads (sagas with their data, dead letters with their bodies,
  stock). `SAGA_READS_OPEN=true` opens reads to anyone (development only).

Numbers and booleans in bodies are strict JSON types (no `"5"` for 5, no `true` for 1);
request bodies are limited to `SAGA_MAX_BODY_BYTES` (413)."""


def create_app(settings: Settings) -> FastAPI:
    """The API for one deployment: generic routes, a start route per registered saga,
    and the routes of every pack that has an ``api`` part."""
    registry = settings.registry()
    retention = env_int(settings.env(), "SAGA_IDEMPOTENCY_RETENTION", DEFAULT_RETENTION)
    if retention < 1:
        raise ConfigError("SAGA_IDEMPOTENCY_RETENTION must be at least 1 second")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = SagaClient(settings, name="api")
        await client.connect()
        db = client.store.commits.database
        summaries = SagaSummaries(database=db)
        await summaries.ensure_indexes()
        await ensure_key_retention(db, retention)
        app.state.services = Services(
            settings=settings,
            client=client,
            db=db,
            summaries=summaries,
            analytics=SagaAnalytics(database=db),
            registry=registry,
            access=Access.of(settings),
        )
        print(f"api ready on {settings.api_host}:{settings.api_port}", file=sys.stderr, flush=True)
        try:
            yield
        finally:
            await client.close()

    app = FastAPI(
        title="saga-orchestrator", version="0.1.0", description=DESCRIPTION, lifespan=lifespan
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.include_router(starts.router_for(registry))
    for module in (sagas, deadletters, health, asyncapi):
        app.include_router(module.router)
    for pack in settings.packs():
        router = pack.part("api")
        if router is not None:
            app.include_router(router)
    from orchestrator.ui import install_ui  # noqa: PLC0415 - the UI imports the API's deps

    install_ui(app)

    @app.exception_handler(TransientError)
    async def unavailable(request: Request, exc: TransientError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"temporarily unavailable: {exc}"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )

    tracing.instrument_app(app)  # tracing: request spans, if tracing is on
    return app
