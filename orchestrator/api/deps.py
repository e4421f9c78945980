"""What every route needs: connections opened once per process, and the operator check."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Header, HTTPException, Request, status

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from orchestrator.client import SagaClient
    from orchestrator.settings import Settings
    from participants.readside import SagaAnalytics, SagaSummaries, StockProjection

__all__ = ["Operator", "Services", "operator", "services"]


@dataclass
class Services:
    """Connections and stores shared by the routes."""

    settings: Settings
    client: SagaClient
    db: AsyncDatabase[dict[str, Any]]
    summaries: SagaSummaries
    stock: StockProjection
    analytics: SagaAnalytics


def services(request: Request) -> Services:
    """The app's services (set up in the lifespan)."""
    found: Services = request.app.state.services
    return found


def operator(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_operator_token: Annotated[str | None, Header()] = None,
) -> None:
    """Changes need the operator token: ``Authorization: Bearer <token>`` or
    ``X-Operator-Token``. Without a configured token every change is refused."""
    expected = request.app.state.services.settings.operator_token
    given = x_operator_token
    if authorization and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    if not expected:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "changes are disabled: no operator token is configured (set SAGA_OPERATOR_TOKEN)",
        )
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or wrong operator token (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )


Operator = Annotated[None, Depends(operator)]
