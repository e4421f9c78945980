"""A saga's history as readable lines, for the CLI and the development runner."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from orchestrator.state import EventType

if TYPE_CHECKING:
    from orchestrator.store import Commit

__all__ = ["describe", "timeline_lines"]

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


def describe(kind: EventType) -> str:
    """Words for an event type."""
    return _WORDS.get(kind, kind.value)


def timeline_lines(commits: Iterable[Commit]) -> Iterator[str]:
    """One line per event: time, version, step, what happened, attempt and reason."""
    for commit in commits:
        for event in commit.events:
            at = event.at.strftime("%H:%M:%S.%f")[:-3]
            detail = []
            if event.attempt > 1:
                detail.append(f"attempt {event.attempt}")
            if reason := event.data.get("reason"):
                detail.append(str(reason))
            sent = [o.type for o in commit.outbox] if event is commit.events[-1] else []
            if sent:
                detail.append("-> " + ", ".join(sent))
            tail = f"  ({'; '.join(detail)})" if detail else ""
            yield f"{at}  v{commit.version:<3} {event.step or '':<18} {describe(event.type)}{tail}"
