"""Saga outcome events, published on the events exchange when a saga ends."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from contracts.base import Message, message

__all__ = [
    "ProgressEvent",
    "SagaCompensated",
    "SagaCompleted",
    "SagaFailed",
    "SagaOutcome",
    "SagaProgressed",
]


class SagaOutcome(Message):
    """Common shape of the outcome events."""

    saga_name: str
    order_id: str = Field(default="", description="Business reference of the saga, if any")


@message("saga.completed.v1")
class SagaCompleted(SagaOutcome):
    """Every step succeeded: reservations become shipments, authorizations are captured."""


@message("saga.failed.v1")
class SagaFailed(SagaOutcome):
    """The first step was refused; nothing needed compensating."""

    reason: str


@message("saga.compensated.v1")
class SagaCompensated(SagaOutcome):
    """A step was refused and every step done before it was undone, in reverse order."""

    reason: str
    failed_step: str


class ProgressEvent(Message):
    """One stored saga event, as published in :class:`SagaProgressed`."""

    type: str
    at: datetime
    step: str | None = None
    attempt: int = 1
    reason: str | None = None


@message("saga.progressed.v1")
class SagaProgressed(Message):
    """A saga's new events (one commit), for read-side consumers.

    ``version`` orders them per saga; consumers keep the highest version they applied,
    so redelivered or reordered copies change nothing. ``start`` is the saga's start
    message, so any consumer can act on the saga's data without reading the event store.
    """

    saga_name: str
    version: int = Field(ge=1)
    status: str
    step: str | None = None
    reference: str = ""
    started_at: datetime | None = None
    deadline: datetime | None = None
    events: tuple[ProgressEvent, ...]
    start: dict[str, Any] = Field(default_factory=dict)
