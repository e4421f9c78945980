"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contracts import OrderLine

__all__ = [
    "DeadLetterFilter",
    "OrderAccepted",
    "OrderRequest",
    "RestockRequest",
    "SagaView",
    "StockView",
    "StuckSaga",
    "TimelineEvent",
]


class OrderRequest(BaseModel):
    """An order to fulfil."""

    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, max_length=128)
    customer_id: str = Field(min_length=1, max_length=128)
    lines: list[OrderLine] = Field(min_length=1, max_length=100)
    amount_cents: int = Field(ge=0)
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    ship_to: str = Field(default="", max_length=500)


class OrderAccepted(BaseModel):
    """The saga that fulfils the order."""

    saga_id: str
    idempotency_key: str
    created: bool = Field(description="False if the key was seen before (same saga)")
    status_url: str


class TimelineEvent(BaseModel):
    """One stored event of a saga."""

    version: int
    type: str
    at: datetime
    step: str | None
    attempt: int
    error: str | None = None
    sent: list[str] = Field(default_factory=list, description="Messages this commit sent")


class SagaView(BaseModel):
    """A saga's state and, on request, its full timeline."""

    saga_id: str
    saga_name: str
    status: str | None
    step: str | None
    attempt: int
    version: int
    started_at: datetime | None
    updated_at: datetime | None
    deadline: datetime | None
    failed_step: str | None
    reason: str | None
    parked_reason: str | None
    data: dict[str, Any]
    timeline: list[TimelineEvent] = Field(default_factory=list)


class StuckSaga(BaseModel):
    """A saga that needs a look, and why."""

    saga_id: str
    status: str
    step: str | None
    updated_at: datetime
    reason: str


class StockView(BaseModel):
    """Stock of one SKU from the read side."""

    sku: str
    available: int
    reserved: int
    shipped: int


class RestockRequest(BaseModel):
    """Units to add."""

    model_config = ConfigDict(extra="forbid")

    units: int = Field(gt=0, le=10_000_000)
    reason: str = Field(default="", max_length=500)


class DeadLetterFilter(BaseModel):
    """Which dead letters an operation applies to (all given conditions must hold)."""

    model_config = ConfigDict(extra="forbid")

    all: bool = False
    message_id: str | None = None
    saga_id: str | None = None
    type: str | None = None
    reason: str | None = None
