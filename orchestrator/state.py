"""Saga state and the events that change it. Pure: state is a fold over events.

``evolve(state, event)`` is the only way state changes; the store keeps the events and
replays them through ``evolve`` to rebuild a saga.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = ["EventType", "SagaEvent", "SagaState", "Status", "apply_commit", "evolve", "replay"]


class Status(StrEnum):
    """Where a saga is. The last four are final or parked."""

    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    FAILED = "failed"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"

    @property
    def terminal(self) -> bool:
        """Completed, failed or compensated: nothing more will happen by itself."""
        return self in (Status.COMPLETED, Status.FAILED, Status.COMPENSATED)

    @property
    def settled(self) -> bool:
        """Terminal, or parked for an operator: nothing more happens without one."""
        return self.terminal or self is Status.COMPENSATION_FAILED


class EventType(StrEnum):
    """What can happen to a saga."""

    SAGA_STARTED = "saga_started"
    STEP_STARTED = "step_started"
    STEP_SUCCEEDED = "step_succeeded"
    STEP_FAILED = "step_failed"
    STEP_TIMED_OUT = "step_timed_out"
    COMMAND_RESENT = "command_resent"
    COMPENSATION_STARTED = "compensation_started"
    STEP_COMPENSATED = "step_compensated"
    LATE_SUCCESS_COMPENSATING = "late_success_compensating"
    SAGA_COMPLETED = "saga_completed"
    SAGA_FAILED = "saga_failed"
    SAGA_COMPENSATED = "saga_compensated"
    SAGA_PARKED = "saga_parked"
    SAGA_RESUMED = "saga_resumed"


@dataclass(frozen=True, kw_only=True)
class SagaEvent:
    """One stored fact about a saga.

    ``step`` names the step it concerns, ``attempt`` counts sends of that step's command
    (or the participant's delivery attempts reported in the reply), ``data`` holds the
    rest: the start message, a reason, the type and id of the message that caused it.
    """

    type: EventType
    at: datetime
    step: str | None = None
    attempt: int = 1
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_doc(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "type": self.type.value,
            "at": self.at,
            "step": self.step,
            "attempt": self.attempt,
            "data": dict(self.data),
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> SagaEvent:
        """Read the stored form back."""
        return cls(
            type=EventType(doc["type"]),
            at=doc["at"],
            step=doc.get("step"),
            attempt=int(doc.get("attempt", 1)),
            data=doc.get("data") or {},
        )


@dataclass(frozen=True, kw_only=True)
class SagaState:
    """Everything the orchestrator needs to decide what a saga does next.

    ``version`` is the number of commits applied; ``processed`` holds the ids of messages
    already handled, so a redelivered message changes nothing. ``reason`` says why the
    saga failed; ``parked_reason`` why it waits for an operator. ``deadline`` is when the
    current step (or compensation) times out, if a reply is awaited.
    """

    saga_id: str
    saga_name: str = ""
    version: int = 0
    status: Status | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    step: str | None = None
    attempt: int = 0
    done: tuple[str, ...] = ()
    failed_step: str | None = None
    reason: str | None = None
    parked_reason: str | None = None
    deadline: datetime | None = None
    processed: frozenset[str] = frozenset()
    started_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def started(self) -> bool:
        """Whether a start message has been accepted."""
        return self.status is not None


def evolve(state: SagaState, event: SagaEvent) -> SagaState:
    """Apply one event. Unknown combinations are applied as stated, never rejected:
    events are facts that were already decided."""
    d = event.data
    s = replace(state, updated_at=event.at)
    match event.type:
        case EventType.SAGA_STARTED:
            return replace(
                s,
                saga_name=d["saga_name"],
                status=Status.RUNNING,
                data=d["start"],
                started_at=event.at,
            )
        case EventType.STEP_STARTED | EventType.COMMAND_RESENT:
            return replace(s, step=event.step, attempt=event.attempt, deadline=d.get("deadline"))
        case EventType.STEP_SUCCEEDED:
            return replace(s, done=(*s.done, event.step or ""), step=None, deadline=None)
        case EventType.STEP_FAILED | EventType.STEP_TIMED_OUT:
            return replace(
                s, failed_step=event.step, reason=d.get("reason"), step=None, deadline=None
            )
        case EventType.COMPENSATION_STARTED:
            return replace(
                s,
                status=Status.COMPENSATING,
                parked_reason=None,
                step=event.step,
                attempt=event.attempt,
                deadline=d.get("deadline"),
            )
        case EventType.STEP_COMPENSATED:
            return replace(
                s, done=tuple(x for x in s.done if x != event.step), step=None, deadline=None
            )
        case EventType.LATE_SUCCESS_COMPENSATING:
            return s
        case EventType.SAGA_COMPLETED:
            return replace(s, status=Status.COMPLETED, step=None, deadline=None)
        case EventType.SAGA_FAILED:
            return replace(s, status=Status.FAILED, step=None, deadline=None)
        case EventType.SAGA_COMPENSATED:
            return replace(s, status=Status.COMPENSATED, step=None, deadline=None)
        case EventType.SAGA_PARKED:
            return replace(
                s,
                status=Status.COMPENSATION_FAILED,
                step=event.step,
                parked_reason=d.get("reason"),
                deadline=None,
            )
        case EventType.SAGA_RESUMED:
            return replace(s, status=Status.COMPENSATING, parked_reason=None)
    return s  # pragma: no cover - the match is exhaustive over EventType


def apply_commit(
    state: SagaState, version: int, causation_id: str | None, events: Iterable[SagaEvent]
) -> SagaState:
    """Apply one commit: its events, its version, and the id of the message that caused it."""
    for event in events:
        state = evolve(state, event)
    processed = state.processed | {causation_id} if causation_id else state.processed
    return replace(state, version=version, processed=processed)


def replay(
    saga_id: str, commits: Iterable[tuple[int, str | None, Iterable[SagaEvent]]]
) -> SagaState:
    """Rebuild a saga from its commits: (version, causing message id, events), in order."""
    state = SagaState(saga_id=saga_id)
    for version, causation_id, events in commits:
        state = apply_commit(state, version, causation_id, events)
    return state
