"""Generic invariants of one saga's history, for any saga: pure functions of its stored
commits and its definition, each returning its violations (empty if it holds).

* :func:`compensation_order`: the steps done are undone stage by stage in reverse order
  (the failing stage first, with the step that timed out, in case it happened), both the
  compensation commands sent and the compensations recorded;
* :func:`no_command_after_end`: once a saga has ended (completed, failed, compensated)
  no commit sends a command, except the compensation of a success that came late;
* :func:`steps_answered`: every step started has its outcome (succeeded, failed, timed
  out) and every compensation started is recorded as done, unless the saga is parked on
  it; what a saga still running awaits has a deadline (several steps at once while a
  parallel group runs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from orchestrator.saga.decide import command_id, parse_command_id
from orchestrator.saga.state import EventType, SagaEvent, Status

if TYPE_CHECKING:
    from orchestrator.saga.commits import Commit, OutboxEntry
    from orchestrator.saga.definition import SagaDefinition
    from orchestrator.saga.state import SagaState

__all__ = ["compensation_order", "no_command_after_end", "steps_answered"]

ENDED = (EventType.SAGA_COMPLETED, EventType.SAGA_FAILED, EventType.SAGA_COMPENSATED)
OUTCOMES = (EventType.STEP_SUCCEEDED, EventType.STEP_FAILED, EventType.STEP_TIMED_OUT)


def compensation_order(saga: SagaDefinition, commits: Sequence[Commit]) -> list[str]:
    """Compensations run stage by stage in reverse order of the stages, and all of them
    once the saga is compensated: first the failing stage's steps that succeeded or
    timed out (in any order: a group's compensations run in parallel, and a step still
    pending when the group failed is undone once it answers), then each earlier stage."""
    saga_id = commits[0].saga_id if commits else "?"
    tiers = _plan(saga, _events(commits))
    late = {c.version for c in commits if _has(c.events, EventType.LATE_SUCCESS_COMPENSATING)}
    sent = _distinct(
        _undone_step(entry)
        for c in commits
        if c.version not in late
        for entry in c.outbox
        if _undone_step(entry) is not None
    )
    recorded = _distinct(e.step for e in _events(commits) if e.type is EventType.STEP_COMPENSATED)
    problems = []
    if tiers is None:
        if sent or recorded:
            problems.append(f"saga {saga_id} compensated {sent or recorded} without a failure")
        return problems
    compensated = _has(_events(commits), EventType.SAGA_COMPENSATED)
    if all(len(t) == 1 for t in tiers):
        expected = str([next(iter(t)) for t in tiers])
    else:  # a parallel stage's steps in any order
        expected = " then ".join("{" + ", ".join(sorted(t)) + "}" for t in tiers)
    for what, steps in (("compensation commands sent", sent), ("compensations", recorded)):
        if not _in_tiers(steps, tiers) or (compensated and set(steps) != set().union(*tiers)):
            problems.append(f"saga {saga_id}: {what} {steps}, expected in the order {expected}")
    return problems


def no_command_after_end(saga: SagaDefinition, commits: Sequence[Commit]) -> list[str]:
    """The commit that ends the saga sends no command, and later commits only the
    compensation of the late success they record."""
    ended = next((i for i, c in enumerate(commits) if _has(c.events, *ENDED)), None)
    if ended is None:
        return []
    problems = []
    for commit in commits[ended:]:
        allowed = {
            command_id(commit.saga_id, e.step or "", "undo")
            for e in commit.events
            if e.type is EventType.LATE_SUCCESS_COMPENSATING and _compensable(saga, e.step)
        }
        for entry in commit.outbox:
            if entry.kind == "command" and entry.message_id not in allowed:
                problems.append(
                    f"saga {commit.saga_id} v{commit.version} sent {entry.type} "
                    f"({entry.message_id}) after it ended"
                )
    return problems


def steps_answered(state: SagaState, commits: Sequence[Commit]) -> list[str]:
    """No step is left waiting without its reply or a deadline."""
    open_steps: dict[str, None] = {}
    open_undos: dict[str, None] = {}
    for event in _events(commits):
        step = event.step or ""
        if event.type is EventType.STEP_STARTED:
            open_steps[step] = None
        elif event.type in OUTCOMES:
            open_steps.pop(step, None)
        elif event.type is EventType.COMPENSATION_STARTED:
            open_undos[step] = None
        elif event.type is EventType.STEP_COMPENSATED:
            open_undos.pop(step, None)
    waiting = [f"step {s}" for s in open_steps] + [f"compensation of {s}" for s in open_undos]
    status = state.status
    if status is not None and not status.terminal:
        # What the saga still awaits may stay open: with a deadline while it runs or
        # compensates, or parked on it for an operator (several at once in a group).
        parked = status in (Status.COMPENSATION_FAILED, Status.COMPLETING_STUCK)
        awaited = {
            f"compensation of {a.step}" if a.undo else f"step {a.step}"
            for a in state.awaiting
            if a.deadline is not None or parked
        }
        waiting = [w for w in waiting if w not in awaited]
    if not waiting:
        return []
    where = status.value if status else "not started"
    return [f"saga {state.saga_id} ({where}) left {', '.join(waiting)} without a reply"]


# --- helpers --------------------------------------------------------------------------


def _events(commits: Iterable[Commit]) -> list[SagaEvent]:
    return [e for c in commits for e in c.events]


def _has(events: Iterable[SagaEvent], *kinds: EventType) -> bool:
    return any(e.type in kinds for e in events)


def _compensable(saga: SagaDefinition, step: str | None) -> bool:
    return step is not None and saga.has_step(step) and saga.step(step).compensate is not None


def _plan(saga: SagaDefinition, events: Iterable[SagaEvent]) -> list[set[str]] | None:
    """The compensations the first failure calls for: one set per stage, the failing
    stage first, then the stages before it in reverse order; None if none failed."""
    done: list[str] = []
    failing: int | None = None
    for event in events:
        step = event.step
        if not step or not saga.has_step(step):
            continue
        if event.type is EventType.STEP_SUCCEEDED:
            done.append(step)  # before the failure, or late in the failing group
        elif event.type is EventType.STEP_TIMED_OUT:
            done.append(step)  # it may have happened: it is undone too
        if event.type in (EventType.STEP_FAILED, EventType.STEP_TIMED_OUT) and failing is None:
            failing = saga.stage_index(step)
    if failing is None:
        return None
    undo = {s for s in done if _compensable(saga, s)}
    tiers = [{s.name for s in saga.stages[i] if s.name in undo} for i in range(failing, -1, -1)]
    return [t for t in tiers if t]


def _in_tiers(steps: Sequence[str], tiers: Sequence[set[str]]) -> bool:
    """Whether ``steps`` (in the order they happened) undo only planned steps, a stage
    only once every step of the stage after it was undone."""
    position = {s: i for i, tier in enumerate(tiers) for s in tier}
    seen: set[str] = set()
    for step in steps:
        if step not in position:
            return False
        earlier = tiers[: position[step]]
        if any(not tier <= seen for tier in earlier):
            return False
        seen.add(step)
    return True


def _undone_step(entry: OutboxEntry) -> str | None:
    """The step a compensation command undoes: its message id is
    :func:`~orchestrator.saga.decide.command_id` ``(saga, step, "undo")``."""
    parts = parse_command_id(entry.message_id) if entry.kind == "command" else None
    return parts[1] if parts and parts[2] == "undo" else None


def _distinct(steps: Iterable[str | None]) -> list[str]:
    """Steps in the order they first appear, repeats (a resend, a resume) dropped."""
    return list(dict.fromkeys(s for s in steps if s is not None))
