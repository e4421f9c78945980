"""Saga outcome events, published on the events exchange when a saga ends."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from contracts.base import Message, NonNegativeInt, PositiveInt, message, upcaster

__all__ = [
    "ProgressEvent",
    "SagaCompensated",
    "SagaCompleted",
    "SagaFailed",
    "SagaOutcome",
    "SagaProgressBatch",
    "SagaProgressed",
    "SagaProgressedItem",
]


class SagaOutcome(Message):
    """Common shape of the outcome events, published as ``<saga_name>.<outcome>``."""

    saga_name: str
    reference: str = Field(
        default="",
        max_length=500,
        description="The saga's business reference (its definition's ``reference``), if any",
    )
    saga_version: PositiveInt | None = Field(
        default=None,
        description="The definition version the saga ran on (None: published by a release "
        "that did not say; those ran on version 1)",
    )


@message("saga.completed.v2")
class SagaCompleted(SagaOutcome):
    """Every step succeeded."""

    steps: tuple[str, ...] = Field(
        default=(),
        description="The steps done, in order (empty: published by a release that did "
        "not say); a subscriber can tell from it whether the saga did a step itself",
    )


@message("saga.failed.v2")
class SagaFailed(SagaOutcome):
    """A step was refused before anything needed compensating."""

    reason: str


@message("saga.compensated.v2")
class SagaCompensated(SagaOutcome):
    """A step was refused and every step done before it was undone, in reverse order."""

    reason: str
    failed_step: str


class ProgressEvent(Message):
    """One stored saga event, as published in :class:`SagaProgressed`."""

    type: str
    at: datetime
    step: str | None = None
    attempt: NonNegativeInt = 1
    reason: str | None = None


@message("saga.progressed.v1")
class SagaProgressed(Message):
    """A saga's new events (one commit), for read-side consumers.

    ``version`` orders them per saga; consumers keep the highest version they applied,
    so redelivered or reordered copies change nothing. ``start`` is the saga's start
    message, so any consumer can act on the saga's data without reading the event store.
    """

    saga_name: str
    saga_version: PositiveInt = Field(default=1, description="Version of the saga's definition")
    version: PositiveInt
    status: str
    step: str | None = None
    reference: str = ""
    started_at: datetime | None = None
    deadline: datetime | None = None
    events: tuple[ProgressEvent, ...]
    start: dict[str, Any] = Field(default_factory=dict)


class SagaProgressedItem(Message):
    """One saga's progress event inside a :class:`SagaProgressBatch`."""

    saga_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")
    progressed: SagaProgressed


@message("saga.progress_batch.v1")
class SagaProgressBatch(Message):
    """The progress events of concurrent commits of one saga type, in one message.

    Published as ``<saga_name>.progressed``, beside single :class:`SagaProgressed`
    messages (a commit alone in its batch goes as one of those), when the orchestrator
    runs with ``SAGA_PROGRESS_BATCH`` above 1. Items are in the order their commits
    were dispatched; a saga appears at most once per version. A consumer applies them
    in order and acks the message once every item is applied; a redelivery applies
    them again, which changes nothing (``version`` per saga, as for single events).
    """

    saga_name: str
    progress: tuple[SagaProgressedItem, ...] = Field(min_length=1, max_length=1000)


def _order_id_to_reference(body: dict[str, Any]) -> dict[str, Any]:
    """v1 outcome events carried the order saga's ``order_id``; v2 has a generic
    ``reference`` for any saga."""
    body["reference"] = body.pop("order_id", "") or body.get("reference", "")
    return body


for _outcome in ("completed", "failed", "compensated"):
    upcaster(f"saga.{_outcome}.v1", f"saga.{_outcome}.v2")(_order_id_to_reference)
