"""What a saga does next: ``decide(definition, state, incoming)`` -> events and messages.

Pure functions, no I/O and no clock: the caller passes ``now``. The runtime stores the
returned events and outgoing messages in one atomic commit, then publishes the messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from contracts import Message, SagaCompensated, SagaCompleted, SagaFailed
from orchestrator.definition import SagaDefinition, Step, routing_key
from orchestrator.state import EventType, SagaEvent, SagaState, Status, evolve

__all__ = [
    "Decision",
    "Incoming",
    "Outgoing",
    "command_id",
    "decide",
    "decide_resume",
    "decide_timeout",
]


@dataclass(frozen=True, kw_only=True)
class Incoming:
    """A message for a saga, with the delivery facts the decision records."""

    message: Message
    message_id: str
    attempts: int = 1
    """How many deliveries the sender needed (participants report their retries)."""


@dataclass(frozen=True, kw_only=True)
class Outgoing:
    """A message the saga sends: a command to a participant or an outcome event."""

    kind: Literal["command", "event"]
    message: Message
    message_id: str
    routing_key: str


@dataclass(frozen=True, kw_only=True)
class Decision:
    """Events to store and messages to send; ``ignored`` says why nothing happens."""

    events: tuple[SagaEvent, ...] = ()
    outbox: tuple[Outgoing, ...] = ()
    ignored: str | None = None


def command_id(saga_id: str, step: str, kind: Literal["do", "undo"]) -> str:
    """Message id of a step's command. Stable across resends so participants dedupe it."""
    return f"{saga_id}:{step}:{kind}"


def decide(
    saga: SagaDefinition, state: SagaState, incoming: Incoming, *, now: datetime
) -> Decision:
    """The saga's reaction to one message."""
    msg = incoming.message
    if incoming.message_id in state.processed:
        return Decision(ignored="duplicate")
    if isinstance(msg, saga.start):
        if state.started:
            return Decision(ignored="already_started")
        return _start(saga, state, msg, incoming, now)
    if not state.started:
        return Decision(ignored="unknown_saga")
    found = saga.step_replying(msg)
    if found is None:
        return Decision(ignored=f"not_a_reply_of_saga:{msg.TYPE}")
    step, outcome = found
    current = state.step == step.name
    if state.status is Status.RUNNING and current and outcome == "success":
        return _collect(_succeed(saga, state, step, incoming, now))
    if state.status is Status.RUNNING and current and outcome == "failure":
        reason = str(getattr(msg, "reason", "refused"))
        failed = _event(
            EventType.STEP_FAILED,
            now,
            step.name,
            incoming.attempts,
            reason=reason,
            message_type=msg.TYPE,
            message_id=incoming.message_id,
        )
        return _collect(_fail(saga, state, failed, now))
    compensating = state.status in (Status.COMPENSATING, Status.COMPENSATION_FAILED)
    if compensating and current and outcome == "compensated":
        # Also when parked: the compensation did happen after all, so carry on from it.
        return _collect(_compensated(saga, state, step, incoming, now))
    if outcome == "success" and _needs_late_compensation(state, step):
        return _late_success(saga, state, step, incoming, now)
    return Decision(ignored=f"unexpected_reply:{msg.TYPE}:status={state.status}")


def decide_timeout(saga: SagaDefinition, state: SagaState, *, now: datetime) -> Decision:
    """The saga's reaction to its deadline passing: resend, give up on the step, or park."""
    if state.deadline is None or state.deadline > now or state.step is None:
        return Decision(ignored="no_deadline_due")
    step = saga.step(state.step)
    compensating = state.status is Status.COMPENSATING
    if state.attempt < step.max_sends:
        attempt = state.attempt + 1
        resent = _event(
            EventType.COMMAND_RESENT,
            now,
            step.name,
            attempt,
            deadline=now + timedelta(seconds=step.timeout),
            compensation=compensating,
        )
        out = _compensation(saga, state, step) if compensating else _command(saga, state, step)
        return Decision(events=(resent,), outbox=(out,))
    reason = f"no reply to {step.name} after {state.attempt} sends"
    if compensating:
        parked = _event(EventType.SAGA_PARKED, now, step.name, state.attempt, reason=reason)
        return Decision(events=(parked,))
    timed_out = _event(EventType.STEP_TIMED_OUT, now, step.name, state.attempt, reason=reason)
    # The participant may have acted without its reply reaching us: undo this step too.
    # Compensations are safe for a step that never happened (participants record that).
    return _collect(_fail(saga, state, timed_out, now, uncertain=step))


def decide_resume(saga: SagaDefinition, state: SagaState, *, now: datetime) -> Decision:
    """An operator resumes a parked saga: its compensation starts again from the step
    that failed to compensate, with a fresh resend budget."""
    if state.status is not Status.COMPENSATION_FAILED or state.step is None:
        return Decision(ignored=f"not_parked:status={state.status}")
    resumed = _event(EventType.SAGA_RESUMED, now, state.step, 1)
    return _collect(iter((resumed, *_begin_compensation(saga, state, saga.step(state.step), now))))


# --- transitions: each yields events and outgoing messages in order -------------------

Emitted = Iterator[SagaEvent | Outgoing]


def _start(
    saga: SagaDefinition, state: SagaState, msg: Message, incoming: Incoming, now: datetime
) -> Decision:
    started = _event(
        EventType.SAGA_STARTED,
        now,
        None,
        1,
        saga_name=saga.name,
        start=msg.model_dump(mode="json"),
        reference=saga.reference(msg),
        message_id=incoming.message_id,
    )
    return _collect(iter((started, *_begin(saga, evolve(state, started), saga.steps[0], now))))


def _begin(saga: SagaDefinition, state: SagaState, step: Step, now: datetime) -> Emitted:
    yield _event(
        EventType.STEP_STARTED, now, step.name, 1, deadline=now + timedelta(seconds=step.timeout)
    )
    yield _command(saga, state, step)


def _succeed(
    saga: SagaDefinition, state: SagaState, step: Step, incoming: Incoming, now: datetime
) -> Emitted:
    yield _event(
        EventType.STEP_SUCCEEDED,
        now,
        step.name,
        incoming.attempts,
        message_type=incoming.message.TYPE,
        message_id=incoming.message_id,
    )
    position = saga.index(step.name) + 1
    if position < len(saga.steps):
        yield from _begin(saga, state, saga.steps[position], now)
        return
    yield _event(EventType.SAGA_COMPLETED, now, None, 1)
    outcome = SagaCompleted(saga_name=saga.name, order_id=_reference(saga, state))
    yield _outcome(state, outcome, "completed")


def _fail(
    saga: SagaDefinition,
    state: SagaState,
    failure: SagaEvent,
    now: datetime,
    uncertain: Step | None = None,
) -> Emitted:
    """After a step failed or timed out: compensate what is done, or fail outright."""
    yield failure
    reason = str(failure.data.get("reason", ""))
    undoable = [saga.step(name) for name in state.done if saga.step(name).compensate]
    if uncertain is not None and uncertain.compensate is not None:
        undoable.append(uncertain)
    if not undoable:
        yield _event(EventType.SAGA_FAILED, now, None, 1, reason=reason)
        yield _outcome(
            state,
            SagaFailed(saga_name=saga.name, order_id=_reference(saga, state), reason=reason),
            "failed",
        )
        return
    yield from _begin_compensation(
        saga, replace(state, failed_step=failure.step, reason=reason), undoable[-1], now
    )


def _begin_compensation(
    saga: SagaDefinition, state: SagaState, step: Step, now: datetime
) -> Emitted:
    yield _event(
        EventType.COMPENSATION_STARTED,
        now,
        step.name,
        1,
        deadline=now + timedelta(seconds=step.timeout),
    )
    yield _compensation(saga, state, step)


def _compensated(
    saga: SagaDefinition, state: SagaState, step: Step, incoming: Incoming, now: datetime
) -> Emitted:
    yield _event(
        EventType.STEP_COMPENSATED,
        now,
        step.name,
        incoming.attempts,
        message_type=incoming.message.TYPE,
        message_id=incoming.message_id,
    )
    remaining = [saga.step(n) for n in state.done if n != step.name and saga.step(n).compensate]
    if remaining:
        yield from _begin_compensation(saga, state, remaining[-1], now)
        return
    yield _event(EventType.SAGA_COMPENSATED, now, None, 1)
    reason = state.reason or ""
    yield _outcome(
        state,
        SagaCompensated(
            saga_name=saga.name,
            order_id=_reference(saga, state),
            reason=reason,
            failed_step=state.failed_step or "",
        ),
        "compensated",
    )


def _needs_late_compensation(state: SagaState, step: Step) -> bool:
    """A success that came after the saga gave up on its step must itself be undone."""
    gave_up = state.status in (
        Status.COMPENSATING,
        Status.FAILED,
        Status.COMPENSATED,
        Status.COMPENSATION_FAILED,
    )
    return gave_up and step.compensate is not None and step.name not in state.done


def _late_success(
    saga: SagaDefinition, state: SagaState, step: Step, incoming: Incoming, now: datetime
) -> Decision:
    late = _event(
        EventType.LATE_SUCCESS_COMPENSATING,
        now,
        step.name,
        incoming.attempts,
        message_type=incoming.message.TYPE,
        message_id=incoming.message_id,
    )
    return Decision(events=(late,), outbox=(_compensation(saga, state, step),))


# --- building blocks ------------------------------------------------------------------


def _collect(emitted: Emitted) -> Decision:
    events: list[SagaEvent] = []
    outbox: list[Outgoing] = []
    for item in emitted:
        if isinstance(item, SagaEvent):
            events.append(item)
        else:
            outbox.append(item)
    return Decision(events=tuple(events), outbox=tuple(outbox))


def _event(
    kind: EventType, now: datetime, step: str | None, attempt: int, **data: object
) -> SagaEvent:
    return SagaEvent(type=kind, at=now, step=step, attempt=attempt, data=data)


def _command(saga: SagaDefinition, state: SagaState, step: Step) -> Outgoing:
    cmd = step.command(saga.load_start(state.data))
    return Outgoing(
        kind="command",
        message=cmd,
        routing_key=routing_key(cmd),
        message_id=command_id(state.saga_id, step.name, "do"),
    )


def _compensation(saga: SagaDefinition, state: SagaState, step: Step) -> Outgoing:
    assert step.compensate is not None  # callers check; a definition error otherwise
    cmd = step.compensate(saga.load_start(state.data))
    return Outgoing(
        kind="command",
        message=cmd,
        routing_key=routing_key(cmd),
        message_id=command_id(state.saga_id, step.name, "undo"),
    )


def _outcome(state: SagaState, event: Message, what: str) -> Outgoing:
    return Outgoing(
        kind="event",
        message=event,
        message_id=f"{state.saga_id}:{what}",
        routing_key=f"{getattr(event, 'saga_name', 'saga')}.{what}",
    )


def _reference(saga: SagaDefinition, state: SagaState) -> str:
    return saga.reference(saga.load_start(state.data))
