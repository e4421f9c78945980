"""Saga state and the events that change it. Pure: state is a fold over events.

``evolve(state, event)`` is the only way state changes; the store keeps the events and
replays them through ``evolve`` to rebuild a saga. Stored events carry their schema
version and are upcast on read (:mod:`orchestrator.saga.upcasters`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from orchestrator.saga.upcasters import current_schema, upcast_event

__all__ = [
    "Awaiting",
    "EventType",
    "SagaEvent",
    "SagaState",
    "Status",
    "apply_commit",
    "evolve",
    "replay",
]


class Status(StrEnum):
    """Where a saga is. The last five are final or parked."""

    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    FAILED = "failed"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"
    """Parked before the pivot: a compensation kept failing."""
    COMPLETING_STUCK = "completing_stuck"
    """Parked after the pivot: a retriable step kept failing (or was refused)."""

    @property
    def terminal(self) -> bool:
        """Completed, failed or compensated: nothing more will happen by itself."""
        return self in (Status.COMPLETED, Status.FAILED, Status.COMPENSATED)

    @property
    def parked(self) -> bool:
        """Waiting for an operator (``saga resume``)."""
        return self in (Status.COMPENSATION_FAILED, Status.COMPLETING_STUCK)

    @property
    def settled(self) -> bool:
        """Terminal, or parked for an operator: nothing more happens without one."""
        return self.terminal or self.parked


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
        """The stored form, with its type's current schema version."""
        return {
            "type": self.type.value,
            "schema": current_schema(self.type.value),
            "at": self.at,
            "step": self.step,
            "attempt": self.attempt,
            "data": dict(self.data),
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> SagaEvent:
        """Read the stored form back, upcast from the schema it was stored at."""
        doc = upcast_event(doc)
        return cls(
            type=EventType(doc["type"]),
            at=doc["at"],
            step=doc.get("step"),
            attempt=int(doc.get("attempt", 1)),
            data=doc.get("data") or {},
        )


@dataclass(frozen=True, kw_only=True)
class Awaiting:
    """A command whose reply the saga waits for: a step's command (``undo`` False) or its
    compensation. ``attempt`` counts its sends; ``deadline`` is when it times out, None
    once the saga parked on it (nothing happens by itself until an operator resumes)."""

    step: str
    attempt: int = 1
    deadline: datetime | None = None
    undo: bool = False
    round: int = 0
    """How often an operator resumed this (retriable) step: its command's id changes
    with each round, so that its reply is not taken for the one that parked it."""
    sent_at: datetime | None = field(default=None, compare=False)
    """When the command was first sent (resends keep it): where a step's duration starts."""

    @property
    def parked(self) -> bool:
        """The saga gave up waiting on it and waits for an operator instead."""
        return self.deadline is None


@dataclass(frozen=True, kw_only=True)
class SagaState:
    """Everything the orchestrator needs to decide what a saga does next.

    ``version`` is the number of commits applied; ``processed`` holds the ids of messages
    already handled, so a redelivered message changes nothing. ``reason`` says why the
    saga failed (its first refusal or time-out); ``parked_reason`` why it waits for an
    operator. ``awaiting`` lists the commands whose replies are awaited, several at once
    while a parallel group runs or is compensated; ``done`` the steps that succeeded and
    are not compensated, ``undone`` the steps compensated, in order.
    """

    saga_id: str
    saga_name: str = ""
    saga_version: int = 1
    """The version of the definition the saga started on (and is driven by to its end)."""
    reference: str = ""
    """The saga's business reference, taken from the start message by its definition."""
    counted: bool = True
    """Its start commit carries the store's in-flight marker (False for sagas started
    before the markers existed: the store counts those by a scan)."""
    version: int = 0
    status: Status | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    awaiting: tuple[Awaiting, ...] = ()
    done: tuple[str, ...] = ()
    undone: tuple[str, ...] = ()
    failed_step: str | None = None
    reason: str | None = None
    parked_reason: str | None = None
    processed: frozenset[str] = frozenset()
    started_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def started(self) -> bool:
        """Whether a start message has been accepted."""
        return self.status is not None

    @property
    def step(self) -> str | None:
        """The step(s) whose replies are awaited, ``a+b`` for steps running in parallel;
        None if no reply is awaited."""
        names = list(dict.fromkeys(a.step for a in self.awaiting))
        return "+".join(names) if names else None

    @property
    def attempt(self) -> int:
        """Sends of the awaited command (the most of any, when several are awaited)."""
        return max((a.attempt for a in self.awaiting), default=0)

    @property
    def deadline(self) -> datetime | None:
        """The earliest deadline of the awaited commands: when the saga next times out."""
        return min((a.deadline for a in self.awaiting if a.deadline is not None), default=None)

    def pending(self, step: str) -> Awaiting | None:
        """The awaited command of ``step``, if any."""
        return next((a for a in self.awaiting if a.step == step), None)

    @property
    def parked_steps(self) -> tuple[str, ...]:
        """The steps the saga parked on."""
        return tuple(a.step for a in self.awaiting if a.parked)


_PARKED = {Status.COMPENSATION_FAILED: Status.COMPENSATING, Status.COMPLETING_STUCK: Status.RUNNING}


def _awaiting(state: SagaState, entry: Awaiting) -> SagaState:
    """Start (or restart) waiting on ``entry``'s step."""
    rest = tuple(a for a in state.awaiting if a.step != entry.step)
    return _unpark_if_clear(replace(state, awaiting=(*rest, entry)))


def _stop_waiting(state: SagaState, step: str | None) -> SagaState:
    return _unpark_if_clear(
        replace(state, awaiting=tuple(a for a in state.awaiting if a.step != step))
    )


def _unpark_if_clear(state: SagaState) -> SagaState:
    """A parked saga whose parked commands were all answered or restarted is active again."""
    active = _PARKED.get(state.status) if state.status else None
    if active is None or any(a.parked for a in state.awaiting):
        return state
    return replace(state, status=active, parked_reason=None)


def _first_failure(state: SagaState, event: SagaEvent) -> SagaState:
    """The saga's failure is its first: a later refusal in a parallel group is recorded
    in its event but does not change why the saga failed."""
    if state.failed_step is not None:
        return state
    status = Status.COMPENSATING if state.status is Status.RUNNING else state.status
    return replace(state, failed_step=event.step, reason=event.data.get("reason"), status=status)


def _ended(state: SagaState, status: Status) -> SagaState:
    return replace(state, status=status, awaiting=())


def evolve(state: SagaState, event: SagaEvent) -> SagaState:
    """Apply one event. Unknown combinations are applied as stated, never rejected:
    events are facts that were already decided."""
    return _RULES[event.type](replace(state, updated_at=event.at), event)


def _started(s: SagaState, event: SagaEvent) -> SagaState:
    d = event.data
    return replace(
        s,
        saga_name=d["saga_name"],
        saga_version=int(d.get("saga_version", 1)),
        reference=str(d.get("reference") or ""),
        counted=bool(d.get("counted", True)),
        status=Status.RUNNING,
        data=d["start"],
        started_at=event.at,
    )


def _first_sent(s: SagaState, event: SagaEvent, *, undo: bool) -> datetime:
    """When the command now awaited for the event's step was first sent."""
    current = s.pending(event.step or "")
    if current is not None and current.undo == undo and current.sent_at is not None:
        return current.sent_at
    return event.at


def _step_started(s: SagaState, event: SagaEvent) -> SagaState:
    entry = Awaiting(
        step=event.step or "",
        attempt=event.attempt,
        deadline=event.data.get("deadline"),
        round=int(event.data.get("round", 0)),
        sent_at=event.at,
    )
    return _awaiting(s, entry)


def _resent(s: SagaState, event: SagaEvent) -> SagaState:
    undo = event.data.get("compensation", s.status is Status.COMPENSATING)
    current = s.pending(event.step or "")
    entry = Awaiting(
        step=event.step or "",
        attempt=event.attempt,
        deadline=event.data.get("deadline"),
        undo=bool(undo),
        round=current.round if current is not None and not undo else 0,
        sent_at=_first_sent(s, event, undo=bool(undo)),
    )
    return _awaiting(s, entry)


def _succeeded(s: SagaState, event: SagaEvent) -> SagaState:
    return _stop_waiting(replace(s, done=(*s.done, event.step or "")), event.step)


def _failed(s: SagaState, event: SagaEvent) -> SagaState:
    return _first_failure(_stop_waiting(s, event.step), event)


def _compensation_started(s: SagaState, event: SagaEvent) -> SagaState:
    entry = Awaiting(
        step=event.step or "",
        attempt=event.attempt,
        deadline=event.data.get("deadline"),
        undo=True,
        sent_at=event.at,
    )
    if s.status is Status.RUNNING:
        s = replace(s, status=Status.COMPENSATING)
    return _awaiting(s, entry)


def _compensated(s: SagaState, event: SagaEvent) -> SagaState:
    done = tuple(x for x in s.done if x != event.step)
    undone = (*s.undone, event.step or "")
    return _stop_waiting(replace(s, done=done, undone=undone), event.step)


def _resumed(s: SagaState, event: SagaEvent) -> SagaState:
    del event
    active = _PARKED.get(s.status) if s.status else None
    return replace(s, status=active or s.status, parked_reason=None)


def _parked(state: SagaState, event: SagaEvent) -> SagaState:
    completing = event.data.get("phase") == "completion"
    current = state.pending(event.step or "")
    entry = Awaiting(
        step=event.step or "",
        attempt=current.attempt if current else event.attempt,
        deadline=None,
        undo=current.undo if current else not completing,
        round=current.round if current else 0,
        sent_at=current.sent_at if current else None,
    )
    rest = tuple(a for a in state.awaiting if a.step != entry.step)
    return replace(
        state,
        status=Status.COMPLETING_STUCK if completing else Status.COMPENSATION_FAILED,
        awaiting=(*rest, entry),
        parked_reason=event.data.get("reason"),
    )


_RULES: Mapping[EventType, Callable[[SagaState, SagaEvent], SagaState]] = {
    EventType.SAGA_STARTED: _started,
    EventType.STEP_STARTED: _step_started,
    EventType.COMMAND_RESENT: _resent,
    EventType.STEP_SUCCEEDED: _succeeded,
    EventType.STEP_FAILED: _failed,
    EventType.STEP_TIMED_OUT: _failed,
    EventType.COMPENSATION_STARTED: _compensation_started,
    EventType.STEP_COMPENSATED: _compensated,
    EventType.LATE_SUCCESS_COMPENSATING: lambda s, _e: s,
    EventType.SAGA_COMPLETED: lambda s, _e: _ended(s, Status.COMPLETED),
    EventType.SAGA_FAILED: lambda s, _e: _ended(s, Status.FAILED),
    EventType.SAGA_COMPENSATED: lambda s, _e: _ended(s, Status.COMPENSATED),
    EventType.SAGA_PARKED: _parked,
    EventType.SAGA_RESUMED: _resumed,
}


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
