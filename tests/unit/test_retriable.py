"""Retriable steps after the pivot through ``decide`` / ``decide_timeout`` /
``decide_resume``: the toy saga prep -> (left, right) -> finish (pivot) -> settle[, notify].

Retriable steps wait 10 s after the first send, doubling per send up to 60 s, for 4
sends; then the saga parks as ``completing_stuck``.
"""

from __future__ import annotations

import dataclasses

import pytest

from orchestrator.saga.state import EventType, Status
from tests.unit.saga_run import NOW, SagaRun, event_types, seconds
from tests.unit.test_parallel import FINISH, LEFT, PREP, RIGHT, SETTLE, commands
from tests.unit.toy_saga import RETRY, TIMEOUT, Toy, start, toy_saga

E = EventType
NOTIFY = Toy("notify")


def past_the_pivot(
    retriable: tuple[str, ...] = ("settle",), *, retriable_group: bool = False
) -> SagaRun:
    """Every compensatable step done: the retriable step(s) have been sent."""
    run = SagaRun(definition=toy_saga(2, retriable=retriable, retriable_group=retriable_group))
    run.receive(start(), message_id="start-1")
    for reply in (PREP.done(), LEFT.done(), RIGHT.done()):
        run.receive(reply)
    run.receive(FINISH.done(), message_id="finish-done")
    return run


def test_the_pivot_success_is_marked_and_the_retriable_step_starts() -> None:
    run = past_the_pivot()

    decision = run.decisions[-1]

    assert event_types(decision) == [E.STEP_SUCCEEDED, E.STEP_STARTED]
    assert decision.events[0].data["pivot"] is True
    assert decision.events[1].data["retriable"] is True
    assert commands(decision) == [("settle", "do")]
    assert run.state.status is Status.RUNNING


def test_the_saga_completes_only_when_the_retriable_steps_are_done() -> None:
    run = past_the_pivot(("settle", "notify"))

    settled = run.receive(SETTLE.done())
    notified = run.receive(NOTIFY.done())

    assert event_types(settled) == [E.STEP_SUCCEEDED, E.STEP_STARTED]
    assert commands(settled) == [("notify", "do")]
    assert event_types(notified) == [E.STEP_SUCCEEDED, E.SAGA_COMPLETED]
    assert [o.routing_key for o in notified.outbox] == ["toy.completed"]
    assert run.state.status is Status.COMPLETED
    assert run.state.done[-2:] == ("settle", "notify")


def test_a_retriable_step_is_resent_with_backoff_and_the_same_message_id() -> None:
    run = past_the_pivot()
    first_id = run.decisions[-1].outbox[0].message_id
    waits = []
    for attempt in range(2, RETRY.max_sends + 1):
        before = run.state.deadline
        assert before is not None
        decision = run.timeout(before)
        assert event_types(decision) == [E.COMMAND_RESENT]
        assert decision.events[0].attempt == attempt
        assert decision.outbox[0].message_id == first_id
        after = run.state.deadline
        assert after is not None
        waits.append((after - before).total_seconds())

    # 10 s after the first send, then 20, 40, and capped at 60
    assert waits == [2 * TIMEOUT, 4 * TIMEOUT, min(8 * TIMEOUT, RETRY.max_interval)]
    assert run.state.status is Status.RUNNING


def test_a_retriable_step_out_of_budget_parks_the_saga_and_never_compensates() -> None:
    run = past_the_pivot()

    parked = run.give_up()

    reason = f"no reply to settle after {RETRY.max_sends} sends"
    assert event_types(parked) == [E.SAGA_PARKED]
    assert parked.events[0].data == {"reason": reason, "phase": "completion"}
    assert parked.outbox == ()
    state = run.state
    assert state.status is Status.COMPLETING_STUCK
    assert state.status.settled
    assert not state.status.terminal
    assert (state.step, state.deadline, state.parked_reason) == ("settle", None, reason)
    assert state.done == ("prep", "left", "right", "finish")
    assert not any(kind == "undo" for d in run.decisions for _, kind in commands(d))
    assert run.timeout(NOW + seconds(10**6)).ignored == "no_deadline_due"


def test_resume_sends_the_stuck_step_again_with_a_fresh_budget() -> None:
    run = past_the_pivot()
    run.give_up()
    later = NOW + seconds(3600)

    resumed = run.resume(later)

    assert event_types(resumed) == [E.SAGA_RESUMED, E.STEP_STARTED]
    assert resumed.events[1].data == {
        "deadline": later + seconds(TIMEOUT),
        "retriable": True,
        "resumed": True,
        "round": 1,
    }
    assert commands(resumed) == [("settle", "do")]
    # a new round: its reply's id is not the one of whatever parked the saga
    assert [o.message_id for o in resumed.outbox] == [f"{run.state.saga_id}:settle:do:r1"]
    assert (run.state.status, run.state.attempt) == (Status.RUNNING, 1)
    assert event_types(run.receive(SETTLE.done())) == [E.STEP_SUCCEEDED, E.SAGA_COMPLETED]


def test_a_success_arriving_while_stuck_completes_without_an_operator() -> None:
    run = past_the_pivot()
    run.give_up()

    decision = run.receive(SETTLE.done(), message_id="settle-late")

    assert event_types(decision) == [E.STEP_SUCCEEDED, E.SAGA_COMPLETED]
    assert run.state.status is Status.COMPLETED
    assert run.state.parked_reason is None


def test_a_refusal_of_a_retriable_step_parks_the_saga_with_the_reason() -> None:
    run = past_the_pivot()

    decision = run.receive(Toy("settle").refused("account closed"), message_id="settle-no")

    assert event_types(decision) == [E.SAGA_PARKED]
    assert decision.events[0].data["reason"] == "settle refused: account closed"
    assert decision.events[0].data["phase"] == "completion"
    assert decision.outbox == ()
    assert run.state.status is Status.COMPLETING_STUCK
    assert run.state.failed_step is None, "past the pivot nothing failed: it is stuck"

    resumed = run.resume(NOW + seconds(60))
    assert commands(resumed) == [("settle", "do")]


def test_a_retriable_step_without_a_refusal_reply_treats_one_as_no_reply_of_the_saga() -> None:
    saga = toy_saga(2)
    no_refusal = dataclasses.replace(saga.step("settle"), failure=None)
    steps = tuple(no_refusal if s.name == "settle" else s for s in saga.steps)
    run = SagaRun(definition=dataclasses.replace(saga, steps=steps))
    run.receive(start())

    decision = run.receive(Toy("settle").refused())

    assert decision.ignored == "not_a_reply_of_saga:settle.settle_refused.v1"


def test_retriable_steps_in_a_group_are_resent_and_parked_each_on_its_own() -> None:
    run = past_the_pivot(("settle", "notify"), retriable_group=True)
    assert commands(run.decisions[-1]) == [("settle", "do"), ("notify", "do")]
    run.receive(NOTIFY.done())

    parked = run.give_up()

    assert [e.step for e in parked.events] == ["settle"]
    assert run.state.status is Status.COMPLETING_STUCK
    resumed = run.resume(NOW + seconds(3600))
    assert commands(resumed) == [("settle", "do")]
    assert event_types(run.receive(SETTLE.done())) == [E.STEP_SUCCEEDED, E.SAGA_COMPLETED]


@pytest.mark.parametrize("status", [Status.RUNNING, Status.COMPLETED])
def test_only_a_parked_saga_is_resumed(status: Status) -> None:
    run = past_the_pivot()
    if status is Status.COMPLETED:
        run.receive(SETTLE.done())

    decision = run.resume(NOW + seconds(60))

    assert decision.ignored == f"not_parked:status={status.value}"
