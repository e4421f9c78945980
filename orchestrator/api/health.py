"""Liveness, readiness (broker and store reachable) and Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from fastapi.responses import PlainTextResponse

from orchestrator.api.deps import Services, services

__all__ = ["router"]

router = APIRouter(tags=["health"])
Svc = Annotated[Services, Depends(services)]


@router.get("/health")
async def health() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/ready")
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


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(svc: Svc) -> str:
    """Prometheus text: saga outcomes, durations, compensations, sagas in flight."""
    in_flight: Counter[str] = Counter()
    async for summary in svc.summaries.unsettled():
        in_flight[summary["status"]] += 1
    lines = [
        await svc.analytics.metrics(),
        "# HELP saga_in_flight Sagas not yet ended, by status.\n# TYPE saga_in_flight gauge\n",
    ]
    lines += [f'saga_in_flight{{status="{s}"}} {n}\n' for s, n in sorted(in_flight.items())]
    return "".join(lines)
