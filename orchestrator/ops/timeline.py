"""A saga's history as readable lines, for the CLI and the development runner.

Steps of a parallel group are marked ``‖`` and their commands say they left together;
the pivot's success says the saga only moves forward from there, and retriable steps
are marked as such. Each command is shown on the line of the event that sent it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from orchestrator.saga.decide import parse_command_id
from orchestrator.saga.state import EventType, SagaEvent

if TYPE_CHECKING:
    from orchestrator.saga.commits import Commit, OutboxEntry

__all__ = ["describe", "timeline_lines"]

PARALLEL = "‖ "
_WORDS = {
    EventType.SAGA_STARTED: "saga started",
    EventType.STEP_STARTED: "command sent",
    EventType.STEP_SUCCEEDED: "succeeded",
    EventType.STEP_FAILED: "refused",
    EventType.STEP_TIMED_OUT: "timed out",
    EventType.COMMAND_RESENT: "command resent",
    EventType.COMPENSATION_STARTED: "compensating",
    EventType.STEP_COMPENSATED: "compensated",
    EventType.LATE_SUCCESS_COMPENSATING: "late success, compensating it",
    EventType.SAGA_COMPLETED: "saga completed",
    EventType.SAGA_FAILED: "saga failed",
    EventType.SAGA_COMPENSATED: "saga compensated",
    EventType.SAGA_PARKED: "saga parked for an operator",
    EventType.SAGA_RESUMED: "saga resumed",
}
_SENDS = (
    EventType.STEP_STARTED,
    EventType.COMMAND_RESENT,
    EventType.COMPENSATION_STARTED,
    EventType.LATE_SUCCESS_COMPENSATING,
)


def describe(kind: EventType) -> str:
    """Words for an event type."""
    return _WORDS.get(kind, kind.value)


def _words(event: SagaEvent) -> str:
    """Words for one event, with what its marks say (parallel, pivot, retriable)."""
    d = event.data
    kind = event.type
    if kind is EventType.STEP_SUCCEEDED and d.get("pivot"):
        return "succeeded: pivot passed, the saga only moves forward now"
    if kind is EventType.STEP_SUCCEEDED and d.get("late"):
        return "succeeded after the saga gave up: compensating it"
    if kind is EventType.STEP_FAILED and d.get("again"):
        return "refused too (recorded; already compensating)"
    if kind is EventType.SAGA_PARKED and d.get("phase") == "completion":
        return "saga parked, completing stuck (past the pivot: resume to retry)"
    if kind is EventType.STEP_STARTED:
        words = "command sent"
        if d.get("resumed"):
            words = "command sent again (resumed)"
        if d.get("group"):
            words += f" in parallel ({d['group']})"
        if d.get("retriable"):
            words += ", retriable"
        return words
    return describe(kind)


def _command_step(entry: OutboxEntry) -> str | None:
    """The step a stored command belongs to (its id is a ``command_id``)."""
    if entry.kind != "command":
        return None
    parts = parse_command_id(entry.message_id)
    return parts[1] if parts else None


def timeline_lines(commits: Iterable[Commit]) -> Iterator[str]:
    """One line per event: time, version, step (``‖`` if in a parallel group), what
    happened, attempt, reason, and the messages it sent."""
    grouped: set[str] = set()
    for commit in commits:
        by_step: dict[str, list[str]] = {}
        rest: list[str] = []
        for entry in commit.outbox:
            step = _command_step(entry)
            if step is not None:
                by_step.setdefault(step, []).append(entry.type)
            elif not entry.type.startswith("saga.progressed."):
                rest.append(entry.type)
        for event in commit.events:
            if event.step and event.data.get("group"):
                grouped.add(event.step)
            sent = by_step.pop(event.step, []) if event.type in _SENDS and event.step else []
            if event is commit.events[-1]:
                sent = [*sent, *(t for types in by_step.values() for t in types), *rest]
            yield _line(commit.version, event, sent, parallel=event.step in grouped)


def _line(version: int, event: SagaEvent, sent: list[str], *, parallel: bool) -> str:
    at = event.at.strftime("%H:%M:%S.%f")[:-3]
    detail = []
    if event.attempt > 1:
        detail.append(f"attempt {event.attempt}")
    if reason := event.data.get("reason"):
        detail.append(str(reason))
    if sent:
        detail.append("-> " + ", ".join(sent))
    tail = f"  ({'; '.join(detail)})" if detail else ""
    step = (PARALLEL if parallel else "") + (event.step or "")
    return f"{at}  v{version:<3} {step:<18} {_words(event)}{tail}"
