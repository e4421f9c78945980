"""What a saga does next: ``decide(definition, state, incoming)`` -> events and messages.

Pure functions, no I/O and no clock: the caller passes ``now``. The runtime stores the
returned events and outgoing messages in one atomic commit, then publishes the messages.

The saga runs its definition's stages in order (a stage is one step or a parallel
group). When a step is refused or runs out of sends, the saga undoes what may have
happened, stage by stage, latest first: in the failed stage, the steps that succeeded
and the one that timed out are compensated at once, in parallel; a step of the group
still waiting is compensated when it answers with a success or times out (it may have
happened), and its refusal is recorded without acting twice; only when the whole stage
is undone does the stage before it start. Retriable steps (after the pivot) are resent
with backoff and never compensated; out of budget or refused, the saga parks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from contracts import Message, SagaCompensated, SagaCompleted, SagaFailed
from orchestrator.saga.definition import SagaDefinition, Step, routing_key
from orchestrator.saga.state import Awaiting, EventType, SagaEvent, SagaState, Status, evolve

__all__ = [
    "Decision",
    "Incoming",
    "Outgoing",
    "command_id",
    "decide",
    "decide_resume",
    "decide_timeout",
    "outcome_key",
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


def outcome_key(saga_name: str, outcome: str) -> str:
    """Routing key of a saga's outcome and progress events: ``<saga>.<completed|...>``."""
    return f"{saga_name}.{outcome}"


def command_id(saga_id: str, step: str, kind: Literal["do", "undo"], round: int = 0) -> str:
    """Message id of a step's command. Stable across resends so participants dedupe it.
    A retriable step an operator resumed is sent in a new ``round`` (``:r<n>``): its
    reply then has an id of its own, not the one of the refusal that parked the saga."""
    base = f"{saga_id}:{step}:{kind}"
    return f"{base}:r{round}" if round else base


def parse_command_id(message_id: str) -> tuple[str, str, str] | None:
    """``(saga_id, step, "do" | "undo")`` of a :func:`command_id`, None for another id."""
    parts = message_id.rsplit(":", 3)
    if len(parts) == 4 and parts[3][:1] == "r" and parts[3][1:].isdigit():
        parts = parts[:3]
    else:
        parts = message_id.rsplit(":", 2)
    if len(parts) != 3 or parts[2] not in ("do", "undo"):
        return None
    return parts[0], parts[1], parts[2]


def command_round(message_id: str) -> int:
    """The round of a :func:`command_id` (0 for the first, or for another id)."""
    last = message_id.rsplit(":", 1)[-1]
    return int(last[1:]) if last[:1] == "r" and last[1:].isdigit() else 0


def decide(
    saga: SagaDefinition, state: SagaState, incoming: Incoming, *, now: datetime
) -> Decision:
    """The saga's reaction to one message."""
    msg = incoming.message
    if incoming.message_id in state.processed:
        return Decision(ignored="duplicate")
    if msg.TYPE == saga.start.TYPE:
        if state.started:
            return Decision(ignored="already_started")
        plan = _Plan(saga, state, now)
        _start(plan, msg, incoming)
        return plan.decision()
    if not state.started:
        return Decision(ignored="unknown_saga")
    found = saga.step_replying(msg)
    if found is None:
        return Decision(ignored=f"not_a_reply_of_saga:{msg.TYPE}")
    step, outcome = found
    plan = _Plan(saga, state, now)
    if not _ON_REPLY[outcome](plan, step, incoming):
        return Decision(ignored=f"unexpected_reply:{msg.TYPE}:status={state.status}")
    return plan.decision()


def decide_timeout(saga: SagaDefinition, state: SagaState, *, now: datetime) -> Decision:
    """The saga's reaction to deadlines passing: for every awaited command whose own
    deadline passed, resend it, give up on its step, or park the saga."""
    due = [a for a in state.awaiting if a.deadline is not None and a.deadline <= now]
    if not due:
        return Decision(ignored="no_deadline_due")
    plan = _Plan(saga, state, now)
    for entry in due:
        if plan.state.pending(entry.step) == entry:  # not settled by an earlier one here
            _expire(plan, saga.step(entry.step), entry)
    return plan.decision()


def decide_resume(saga: SagaDefinition, state: SagaState, *, now: datetime) -> Decision:
    """An operator resumes a parked saga: every command it parked on is sent again with a
    fresh budget (a compensation before the pivot, a retriable step after it)."""
    parked = [a for a in state.awaiting if a.parked]
    if state.status is None or not state.status.parked or not parked:
        return Decision(ignored=f"not_parked:status={state.status}")
    plan = _Plan(saga, state, now)
    plan.record(EventType.SAGA_RESUMED, parked[0].step, 1)
    for entry in parked:
        step = saga.step(entry.step)
        if entry.undo:
            _begin_compensation(plan, step)
        else:
            _begin_step(plan, step, round=entry.round + 1)
    return plan.decision()


# --- the plan of one decision ---------------------------------------------------------


class _Plan:
    """The events and messages of one decision, and the state they lead to: each
    transition sees the effect of the ones before it in the same commit."""

    def __init__(self, saga: SagaDefinition, state: SagaState, now: datetime) -> None:
        self.saga = saga
        self.state = state
        self.now = now
        self.events: list[SagaEvent] = []
        self.outbox: list[Outgoing] = []

    def record(self, kind: EventType, step: str | None, attempt: int, **data: Any) -> None:
        event = SagaEvent(type=kind, at=self.now, step=step, attempt=attempt, data=data)
        self.events.append(event)
        self.state = evolve(self.state, event)

    def send(self, out: Outgoing) -> None:
        self.outbox.append(out)

    def deadline(self, step: Step, attempt: int = 1) -> datetime:
        return self.now + timedelta(seconds=step.wait_after(attempt))

    def decision(self) -> Decision:
        return Decision(events=tuple(self.events), outbox=tuple(self.outbox))


# --- moving forward -------------------------------------------------------------------


def _start(plan: _Plan, msg: Message, incoming: Incoming) -> None:
    saga = plan.saga
    plan.record(
        EventType.SAGA_STARTED,
        None,
        1,
        saga_name=saga.name,
        saga_version=saga.version,
        start=msg.model_dump(mode="json"),
        reference=saga.reference(msg),
        message_id=incoming.message_id,
    )
    for step in saga.stages[0]:
        _begin_step(plan, step)


def _begin_step(plan: _Plan, step: Step, *, round: int = 0) -> None:
    marks: dict[str, Any] = {}
    if step.group is not None:
        marks["group"] = step.group
    if step.retriable:
        marks["retriable"] = True
    if round:
        marks["resumed"] = True
        marks["round"] = round
    plan.record(EventType.STEP_STARTED, step.name, 1, deadline=plan.deadline(step), **marks)
    plan.send(_command(plan.saga, plan.state, step))


def _on_success(plan: _Plan, step: Step, incoming: Incoming) -> bool:
    state = plan.state
    pending = state.pending(step.name)
    if pending is not None and not pending.undo:
        forward = state.status in (Status.RUNNING, Status.COMPLETING_STUCK)
        marks: dict[str, Any] = {}
        if forward and step.name == plan.saga.pivot:
            marks["pivot"] = True
        if not forward:
            marks["late"] = True  # the saga gave up meanwhile: this success is undone
        plan.record(
            EventType.STEP_SUCCEEDED, step.name, incoming.attempts, **_cause(incoming), **marks
        )
        if forward:
            _advance(plan, step)
        else:
            _undo(plan)
        return True
    if _needs_late_compensation(state, step):
        plan.record(
            EventType.LATE_SUCCESS_COMPENSATING, step.name, incoming.attempts, **_cause(incoming)
        )
        plan.send(_compensation(plan.saga, state, step))
        return True
    return False


def _advance(plan: _Plan, step: Step) -> None:
    """After a success: wait for the rest of the stage, start the next, or complete."""
    if plan.state.awaiting:
        return
    saga = plan.saga
    following = saga.stage_index(step.name) + 1
    if following < len(saga.stages):
        for each in saga.stages[following]:
            _begin_step(plan, each)
        return
    plan.record(EventType.SAGA_COMPLETED, None, 1)
    outcome = SagaCompleted(
        saga_name=saga.name,
        reference=plan.state.reference,
        saga_version=saga.version,
        steps=plan.state.done,
    )
    plan.send(_outcome(plan.state, outcome, "completed"))


def _on_failure(plan: _Plan, step: Step, incoming: Incoming) -> bool:
    state = plan.state
    pending = state.pending(step.name)
    if pending is None or pending.undo:
        return False
    reason = str(getattr(incoming.message, "reason", "refused"))
    if step.retriable:
        # Past the pivot nothing is undone, and retrying a refusal would only repeat it.
        plan.record(
            EventType.SAGA_PARKED,
            step.name,
            incoming.attempts,
            reason=f"{step.name} refused: {reason}",
            phase="completion",
            **_cause(incoming),
        )
        return True
    again: dict[str, Any] = {} if state.status is Status.RUNNING else {"again": True}
    plan.record(
        EventType.STEP_FAILED,
        step.name,
        incoming.attempts,
        reason=reason,
        **_cause(incoming),
        **again,
    )
    _undo(plan)
    return True


def _expire(plan: _Plan, step: Step, entry: Awaiting) -> None:
    """One awaited command's deadline passed."""
    gave_up = plan.state.status in (Status.COMPENSATING, Status.COMPENSATION_FAILED)
    if entry.attempt < step.sends and (entry.undo or not gave_up):
        attempt = entry.attempt + 1
        plan.record(
            EventType.COMMAND_RESENT,
            step.name,
            attempt,
            deadline=plan.deadline(step, attempt),
            compensation=entry.undo,
        )
        out = _compensation if entry.undo else _command
        plan.send(out(plan.saga, plan.state, step))
        return
    reason = f"no reply to {step.name} after {entry.attempt} sends"
    if entry.undo or step.retriable:
        phase = "compensation" if entry.undo else "completion"
        plan.record(EventType.SAGA_PARKED, step.name, entry.attempt, reason=reason, phase=phase)
        return
    # The participant may have acted without its reply reaching us: undo this step too.
    # (A step of a group that already failed is not resent: it is undone at once.)
    # Compensations are safe for a step that never happened (participants record that).
    plan.record(EventType.STEP_TIMED_OUT, step.name, entry.attempt, reason=reason)
    _undo(plan, uncertain=step)


# --- undoing --------------------------------------------------------------------------


def _undo(plan: _Plan, uncertain: Step | None = None) -> None:
    """Carry the compensation on: in the latest stage with anything left to undo or to
    wait for, start every compensation not yet started; once no stage has anything
    left, the saga is compensated (or failed, if nothing needed undoing)."""
    state = plan.state
    for stage in reversed(plan.saga.stages):
        start = [s for s in stage if _to_undo(state, s, uncertain)]
        waiting = [s for s in stage if _blocks(state, s)]
        if start or waiting:
            for each in start:
                _begin_compensation(plan, each)
            return
    reason = state.reason or ""
    saga = plan.saga
    if not state.undone:
        plan.record(EventType.SAGA_FAILED, None, 1, reason=reason)
        failed = SagaFailed(
            saga_name=saga.name,
            reference=state.reference,
            reason=reason,
            saga_version=saga.version,
        )
        plan.send(_outcome(plan.state, failed, "failed"))
        return
    plan.record(EventType.SAGA_COMPENSATED, None, 1)
    outcome = SagaCompensated(
        saga_name=saga.name,
        reference=state.reference,
        reason=reason,
        failed_step=state.failed_step or "",
        saga_version=saga.version,
    )
    plan.send(_outcome(plan.state, outcome, "compensated"))


def _to_undo(state: SagaState, step: Step, uncertain: Step | None) -> bool:
    """A step whose compensation must start now: it succeeded (or may have), it can be
    compensated, and its compensation is not under way."""
    if step.compensate is None:
        return False
    pending = state.pending(step.name)
    if pending is not None:
        return False
    return step.name in state.done or step is uncertain


def _blocks(state: SagaState, step: Step) -> bool:
    """A step the compensation waits for before moving to earlier stages: its
    compensation is under way (or parked), or it has not answered yet and may need one."""
    pending = state.pending(step.name)
    return pending is not None and (pending.undo or step.compensate is not None)


def _begin_compensation(plan: _Plan, step: Step) -> None:
    plan.record(EventType.COMPENSATION_STARTED, step.name, 1, deadline=plan.deadline(step))
    plan.send(_compensation(plan.saga, plan.state, step))


def _on_compensated(plan: _Plan, step: Step, incoming: Incoming) -> bool:
    pending = plan.state.pending(step.name)
    if pending is None or not pending.undo:
        return False
    # Also when parked: the compensation did happen after all, so carry on from it.
    plan.record(EventType.STEP_COMPENSATED, step.name, incoming.attempts, **_cause(incoming))
    _undo(plan)
    return True


def _needs_late_compensation(state: SagaState, step: Step) -> bool:
    """A success that came after the saga gave up on its step must itself be undone."""
    gave_up = state.status in (
        Status.COMPENSATING,
        Status.FAILED,
        Status.COMPENSATED,
        Status.COMPENSATION_FAILED,
    )
    return gave_up and step.compensate is not None and step.name not in state.done


_ON_REPLY = {"success": _on_success, "failure": _on_failure, "compensated": _on_compensated}


# --- building blocks ------------------------------------------------------------------


def _cause(incoming: Incoming) -> dict[str, Any]:
    return {"message_type": incoming.message.TYPE, "message_id": incoming.message_id}


def _command(saga: SagaDefinition, state: SagaState, step: Step) -> Outgoing:
    cmd = step.command(saga.load_start(state.data))
    return Outgoing(
        kind="command",
        message=cmd,
        routing_key=routing_key(cmd),
        message_id=command_id(state.saga_id, step.name, "do", _round(state, step)),
    )


def _round(state: SagaState, step: Step) -> int:
    pending = state.pending(step.name)
    return pending.round if pending is not None and not pending.undo else 0


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
        routing_key=outcome_key(str(getattr(event, "saga_name", "saga")), what),
    )
