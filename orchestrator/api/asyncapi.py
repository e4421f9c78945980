"""``GET /asyncapi.json``: the AsyncAPI 3.0 document of this deployment."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from orchestrator.api.deps import Services, services
from orchestrator.messaging.asyncapi import deployment_asyncapi

__all__ = ["router"]

router = APIRouter(tags=["docs"])
Svc = Annotated[Services, Depends(services)]


@router.get("/asyncapi.json")
async def asyncapi(svc: Svc) -> dict[str, Any]:
    """Every contract and channel: exchanges, queues, routing keys, each message's JSON
    schema and which saga and step send or receive it. Generated, never hand-written."""
    return deployment_asyncapi(svc.settings, svc.registry)
