"""What every store contract test builds on: the adapters' common type and commits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from orchestrator.ports import (
    DeadlineStore,
    HistoryRetention,
    OutboxStore,
    ParkedWorkStore,
    SagaStore,
)
from orchestrator.saga.commits import Commit, OutboxEntry
from orchestrator.saga.state import EventType, SagaEvent

T0 = datetime(2030, 1, 1, 12, 0, 0, 123_000, tzinfo=UTC)


class Store(SagaStore, OutboxStore, DeadlineStore, ParkedWorkStore, HistoryRetention, Protocol):
    """Every store port: what ``MongoSagaStore`` and ``InMemorySagaStore`` implement."""


def at(seconds: float) -> datetime:
    """``T0`` plus some seconds."""
    return T0 + timedelta(seconds=seconds)


def started(reference: str = "trip-1", name: str = "travel") -> SagaEvent:
    return SagaEvent(
        type=EventType.SAGA_STARTED,
        at=T0,
        data={
            "saga_name": name,
            "saga_version": 2,
            "start": {"trip_id": reference, "nights": 3},
            "reference": reference,
        },
    )


def step_started(step: str, deadline: datetime) -> SagaEvent:
    return SagaEvent(type=EventType.STEP_STARTED, at=T0, step=step, data={"deadline": deadline})


def entry(n: int = 1, *, type_: str = "saga.completed.v2") -> OutboxEntry:
    return OutboxEntry(
        kind="event",
        type=type_,
        body={"saga_name": "travel", "reference": f"trip-{n}"},
        message_id=f"out-{n}",
        routing_key="travel.completed",
    )


def commit(saga_id: str = "s1", version: int = 1, **changes: Any) -> Commit:
    """Commit ``version`` of a saga (the first one starts it), stored at ``at(version)``."""
    fields: dict[str, Any] = {
        "saga_id": saga_id,
        "saga_name": "travel",
        "version": version,
        "causation_id": f"msg-{version}",
        "events": (started(),) if version == 1 else (),
        "outbox": (),
        "created_at": at(version),
        "status": "running",
    }
    return Commit(**{**fields, **changes})
