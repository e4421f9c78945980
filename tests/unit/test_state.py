"""Saga state as a fold over events: ``evolve``, ``apply_commit`` and ``replay``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from orchestrator.saga.state import (
    Awaiting,
    EventType,
    SagaEvent,
    SagaState,
    Status,
    apply_commit,
    evolve,
    replay,
)
from tests.unit.saga_run import (
    NOW,
    SAGA_ID,
    SagaRun,
    authorized,
    compensated_after_decline,
    completed,
    payment_authorized,
    payment_voided,
    reservation_failed,
    reserved,
    seconds,
    shipment_scheduled,
    shipping_refused,
    started,
    stock_released,
    stock_reserved,
)


def _late_success_after_failure() -> SagaRun:
    run = reservation_failed()
    run.receive(stock_reserved(), message_id="late-1")
    return run


def _resent_then_completed() -> SagaRun:
    run = started()
    run.expire()
    run.receive(stock_reserved(), attempts=2)
    run.receive(payment_authorized())
    run.receive(shipment_scheduled())
    return run


def _parked() -> SagaRun:
    run = shipping_refused()
    run.give_up()
    return run


def _timed_out_and_compensated() -> SagaRun:
    run = reserved()
    run.give_up()
    run.receive(payment_voided())
    run.receive(stock_released())
    return run


def _parked_then_resumed() -> SagaRun:
    run = _parked()
    run.resume(NOW + seconds(3600))
    run.receive(payment_voided())
    return run


RUNS: dict[str, Callable[[], SagaRun]] = {
    "started": started,
    "authorized": authorized,
    "completed": completed,
    "reservation_failed": reservation_failed,
    "compensated_after_decline": compensated_after_decline,
    "shipping_refused": shipping_refused,
    "late_success_after_failure": _late_success_after_failure,
    "resent_then_completed": _resent_then_completed,
    "parked": _parked,
    "timed_out_and_compensated": _timed_out_and_compensated,
    "parked_then_resumed": _parked_then_resumed,
}


@pytest.mark.parametrize("name", RUNS)
def test_replaying_the_commits_reproduces_the_incremental_state(name: str) -> None:
    run = RUNS[name]()

    rebuilt = replay(SAGA_ID, run.commits)

    assert rebuilt == run.state


@pytest.mark.parametrize("name", RUNS)
def test_replaying_the_stored_form_of_the_events_reproduces_the_state(name: str) -> None:
    run = RUNS[name]()
    stored = [
        (version, cause, tuple(SagaEvent.from_doc(e.to_doc()) for e in events))
        for version, cause, events in run.commits
    ]

    assert replay(SAGA_ID, stored) == run.state


def test_replaying_nothing_gives_a_saga_that_has_not_started() -> None:
    state = replay(SAGA_ID, [])

    assert state == SagaState(saga_id=SAGA_ID)
    assert not state.started
    assert state.version == 0


def test_apply_commit_sets_the_version_and_remembers_the_causing_message() -> None:
    state = SagaState(saga_id=SAGA_ID, version=3, processed=frozenset({"a"}))
    event = SagaEvent(type=EventType.LATE_SUCCESS_COMPENSATING, at=NOW, step="reserve_stock")

    after = apply_commit(state, 4, "b", [event])

    assert after.version == 4
    assert after.processed == frozenset({"a", "b"})
    assert after.updated_at == NOW


def test_apply_commit_without_a_causing_message_remembers_nothing() -> None:
    state = SagaState(saga_id=SAGA_ID, processed=frozenset({"a"}))

    after = apply_commit(state, 1, None, [])

    assert after.version == 1
    assert after.processed == frozenset({"a"})


def test_timeouts_are_committed_without_a_causation_id() -> None:
    run = started()
    run.expire()

    assert run.commits[-1][1] is None
    assert run.state.processed == frozenset({"start-1"})


def _event(kind: EventType, step: str | None = None, **data: object) -> SagaEvent:
    return SagaEvent(type=kind, at=NOW, step=step, data=data)


def test_evolve_tracks_done_steps_and_removes_them_when_compensated() -> None:
    state = SagaState(saga_id=SAGA_ID, status=Status.RUNNING)
    for step in ("a", "b"):
        state = evolve(state, _event(EventType.STEP_STARTED, step, deadline=NOW))
        state = evolve(state, _event(EventType.STEP_SUCCEEDED, step))
    assert state.done == ("a", "b")

    state = evolve(state, _event(EventType.COMPENSATION_STARTED, "b", deadline=NOW))
    assert (state.status, state.step, state.deadline) == (Status.COMPENSATING, "b", NOW)
    state = evolve(state, _event(EventType.STEP_COMPENSATED, "b"))

    assert state.done == ("a",)
    assert state.step is None
    assert state.deadline is None


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (EventType.SAGA_COMPLETED, Status.COMPLETED),
        (EventType.SAGA_FAILED, Status.FAILED),
        (EventType.SAGA_COMPENSATED, Status.COMPENSATED),
        (EventType.SAGA_PARKED, Status.COMPENSATION_FAILED),
    ],
)
def test_evolve_to_a_settled_status_clears_the_deadline(kind: EventType, status: Status) -> None:
    waiting = (Awaiting(step="x", deadline=NOW + seconds(10), undo=True),)
    state = SagaState(saga_id=SAGA_ID, status=Status.COMPENSATING, awaiting=waiting)

    after = evolve(state, _event(kind, "x"))

    assert after.status is status
    assert after.status.settled
    assert after.deadline is None


def test_evolve_resumed_puts_a_parked_saga_back_to_compensating() -> None:
    state = SagaState(
        saga_id=SAGA_ID,
        status=Status.COMPENSATION_FAILED,
        awaiting=(Awaiting(step="x", undo=True),),
    )

    assert evolve(state, _event(EventType.SAGA_RESUMED)).status is Status.COMPENSATING


def test_evolve_resumed_puts_a_stuck_saga_back_to_running() -> None:
    state = SagaState(
        saga_id=SAGA_ID, status=Status.COMPLETING_STUCK, awaiting=(Awaiting(step="x"),)
    )

    assert evolve(state, _event(EventType.SAGA_RESUMED)).status is Status.RUNNING


def test_late_success_changes_nothing_but_the_update_time() -> None:
    state = reservation_failed().state

    after = evolve(state, _event(EventType.LATE_SUCCESS_COMPENSATING, "reserve_stock"))

    assert after == dataclasses.replace(state, updated_at=NOW)


@pytest.mark.parametrize(
    ("status", "terminal", "settled"),
    [
        (Status.RUNNING, False, False),
        (Status.COMPENSATING, False, False),
        (Status.COMPLETED, True, True),
        (Status.FAILED, True, True),
        (Status.COMPENSATED, True, True),
        (Status.COMPENSATION_FAILED, False, True),
        (Status.COMPLETING_STUCK, False, True),
    ],
)
def test_status_terminal_and_settled(status: Status, terminal: bool, settled: bool) -> None:
    assert status.terminal is terminal
    assert status.settled is settled


def test_event_stored_form_round_trips() -> None:
    event = SagaEvent(
        type=EventType.COMMAND_RESENT,
        at=NOW,
        step="reserve_stock",
        attempt=2,
        data={"deadline": NOW + seconds(10), "compensation": False},
    )

    doc = event.to_doc()

    assert doc == {
        "type": "command_resent",
        "schema": 1,
        "at": NOW,
        "step": "reserve_stock",
        "attempt": 2,
        "data": {"deadline": NOW + seconds(10), "compensation": False},
    }
    assert SagaEvent.from_doc(doc) == event


def test_event_read_from_a_minimal_document_gets_defaults() -> None:
    event = SagaEvent.from_doc({"type": "saga_completed", "at": NOW})

    assert event == SagaEvent(type=EventType.SAGA_COMPLETED, at=NOW, step=None, attempt=1)
    assert event.data == {}


def test_state_and_events_are_frozen() -> None:
    state = SagaState(saga_id=SAGA_ID)
    event = SagaEvent(type=EventType.SAGA_COMPLETED, at=NOW)

    with pytest.raises(dataclasses.FrozenInstanceError):
        state.version = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.attempt = 2  # type: ignore[misc]
