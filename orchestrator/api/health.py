"""Liveness, readiness (broker and store reachable) and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from orchestrator.api.deps import Services, services
from orchestrator.api.models import errors
from orchestrator.ops.work import live_work, live_work_families
from orchestrator.readside.analytics import Snapshot, in_flight_family

__all__ = ["router"]

router = APIRouter(tags=["health"])
LIVE_WORK_CAP = 10_000
"""A scrape counts each live set up to this many (from its own index): the cost of a
scrape is bounded whatever the backlog, and a gauge at the cap means at least that."""
Svc = Annotated[Services, Depends(services)]


@router.get("/health")
async def health() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get(
    "/ready",
    responses={503: {"model": dict[str, str], "description": "Which one does not answer"}},
)
async def ready(svc: Svc, response: Response) -> dict[str, str]:
    """Broker and store answer; 503 otherwise, saying which one does not."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(svc.db.command("ping"), timeout=3)
        checks["store"] = "ok"
    except Exception as e:  # any failure means not ready; the message says which
        checks["store"] = f"unreachable: {e}"
    connection = svc.client.bus.connection if svc.client.bus.connected else None
    checks["broker"] = (
        "ok"
        if connection is not None and not connection.is_closed
        else "unreachable: connection closed"
    )
    if any(v != "ok" for v in checks.values()):
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return checks


@router.get("/metrics", response_class=PlainTextResponse, responses=errors(503))
async def metrics(svc: Svc) -> Response:
    """Prometheus text (``prometheus_client``): this process's metrics, and the exact
    totals of the read side (``saga_analytics_*``, ``saga_in_flight``), and the sizes of the
    live sets (``saga_outbox_pending``, ``saga_deadlines_active``, ``saga_outbox_parked``,
    ``saga_deadlines_parked``). Reads one counter document per saga name, one for the
    sagas in flight, and the live sets' own indexes (each up to 10,000 entries), whatever
    the number of sagas ever run."""
    in_flight = in_flight_family(await svc.summaries.in_flight_counts())
    work = live_work_families(await live_work(svc.client.store, cap=LIVE_WORK_CAP))
    totals = CollectorRegistry(auto_describe=False)
    totals.register(Snapshot([*await svc.analytics.families(), in_flight, *work]))
    body = generate_latest(REGISTRY) + generate_latest(totals)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
