"""Saga outcome events, published on the events exchange when a saga ends."""

from __future__ import annotations

from pydantic import Field

from contracts.base import Message, message

__all__ = ["SagaCompensated", "SagaCompleted", "SagaFailed", "SagaOutcome"]


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
