"""Deadlines through ``decide_timeout``: resend, give up on the step, or park the saga.

The saga under test has ``timeout=10`` and ``max_sends=2`` on every step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime

import pytest

from contracts import (
    AuthorizePayment,
    CancelShipment,
    PlaceOrder,
    ReleaseStock,
    ReserveStock,
    SagaCompensated,
    SagaFailed,
    ScheduleShipment,
    VoidPayment,
)
from orchestrator.packs.order_fulfilment.definition import order_fulfilment
from orchestrator.saga.decide import Decision, decide_resume, decide_timeout
from orchestrator.saga.definition import SagaDefinition
from orchestrator.saga.state import EventType, SagaState
from orchestrator.saga.state import Status as S
from tests.unit.saga_run import (
    MAX_SENDS,
    NOW,
    ORDER_ID,
    SAGA,
    SAGA_ID,
    START_ID,
    TIMEOUT,
    SagaRun,
    authorized,
    completed,
    event_types,
    payment_authorized,
    payment_refused,
    payment_voided,
    place_order,
    reservation_failed,
    reserved,
    seconds,
    sent,
    shipment_cancelled,
    shipment_scheduled,
    shipping_refused,
    started,
    stock_released,
    stock_reserved,
)

E = EventType
DEADLINE = NOW + seconds(TIMEOUT)


# --- nothing due ----------------------------------------------------------------------


@pytest.mark.parametrize("now", [NOW, NOW + seconds(5), DEADLINE - seconds(0.001)])
def test_before_the_deadline_nothing_happens(now: datetime) -> None:
    run = started()
    before = run.state

    decision = run.timeout(now)

    assert decision == Decision(ignored="no_deadline_due")
    assert run.state == before


@pytest.mark.parametrize(
    "setup", [completed, reservation_failed], ids=["completed", "reservation_failed"]
)
def test_a_saga_without_deadline_never_times_out(setup: Callable[[], SagaRun]) -> None:
    run = setup()

    assert run.state.deadline is None
    assert run.timeout(NOW + seconds(10_000)).ignored == "no_deadline_due"


def test_an_unknown_saga_never_times_out() -> None:
    decision = decide_timeout(SAGA, SagaState(saga_id=SAGA_ID), now=NOW + seconds(10_000))

    assert decision.ignored == "no_deadline_due"


# --- resends --------------------------------------------------------------------------


def test_after_the_deadline_the_command_is_resent_with_the_same_message_id() -> None:
    run = started()
    first = run.decisions[0].outbox[0]
    later = DEADLINE + seconds(3)

    decision = run.timeout(later)

    assert event_types(decision) == [E.COMMAND_RESENT]
    resent = decision.events[0]
    assert resent.step == "reserve_stock"
    assert resent.attempt == 2
    assert resent.at == later
    assert resent.data == {"deadline": later + seconds(TIMEOUT), "compensation": False}
    assert decision.outbox == (first,)
    assert run.state.attempt == 2
    assert run.state.deadline == later + seconds(TIMEOUT)
    assert run.state.status is S.RUNNING
    assert run.state.step == "reserve_stock"


def test_the_deadline_is_due_at_its_exact_instant() -> None:
    run = started()

    assert event_types(run.timeout(DEADLINE)) == [E.COMMAND_RESENT]


def test_the_resent_deadline_must_pass_again_before_the_next_timeout() -> None:
    run = started()
    run.timeout(DEADLINE)

    assert run.timeout(DEADLINE + seconds(1)).ignored == "no_deadline_due"


@pytest.mark.parametrize(
    ("setup", "step", "command"),
    [
        (started, "reserve_stock", ReserveStock),
        (reserved, "authorize_payment", AuthorizePayment),
        (authorized, "schedule_shipment", ScheduleShipment),
    ],
)
def test_every_step_resends_its_own_command(
    setup: Callable[[], SagaRun], step: str, command: type
) -> None:
    run = setup()

    decision = run.expire()

    assert event_types(decision) == [E.COMMAND_RESENT]
    assert decision.events[0].step == step
    assert [type(o.message) for o in decision.outbox] == [command]
    assert decision.outbox[0].message_id == f"{SAGA_ID}:{step}:do"


def test_a_reply_after_a_resend_still_moves_the_saga_on() -> None:
    run = started()
    run.expire()

    decision = run.receive(stock_reserved(), attempts=2)

    assert event_types(decision) == [E.STEP_SUCCEEDED, E.STEP_STARTED]
    assert decision.events[0].attempt == 2
    assert run.state.step == "authorize_payment"
    assert run.state.attempt == 1


# --- giving up on a step --------------------------------------------------------------
#
# Since commit 964865b a step that runs out of sends is compensated itself as well as the
# steps done before it, latest first: the participant may have acted without its reply
# reaching the orchestrator, and compensating a step that never happened is harmless.


def _no_undo_for_reserve_stock() -> SagaDefinition:
    """The order saga whose first step has no compensation."""
    no_undo = dataclasses.replace(
        SAGA.steps[0], compensate=None, compensation_type=None, compensated=None
    )
    return SagaDefinition(
        name=SAGA.name, start=PlaceOrder, steps=(no_undo, *SAGA.steps[1:]), reference=SAGA.reference
    )


def test_first_step_out_of_sends_is_itself_undone() -> None:
    run = started()
    run.expire()  # second and last send

    decision = run.expire()

    reason = "no reply to reserve_stock after 2 sends"
    assert event_types(decision) == [E.STEP_TIMED_OUT, E.COMPENSATION_STARTED]
    timed_out, compensation = decision.events
    assert timed_out.step == "reserve_stock"
    assert timed_out.attempt == MAX_SENDS
    assert timed_out.data == {"reason": reason}
    assert compensation.step == "reserve_stock"
    assert compensation.attempt == 1
    assert sent(decision) == [
        (
            "command",
            "inventory.release_stock.v1",
            "saga-42:reserve_stock:undo",
            "inventory.release_stock",
        )
    ]
    assert run.state.status is S.COMPENSATING
    assert run.state.failed_step == "reserve_stock"
    assert run.state.reason == reason

    released = run.receive(stock_released())

    assert event_types(released) == [E.STEP_COMPENSATED, E.SAGA_COMPENSATED]
    assert released.outbox[0].message == SagaCompensated(
        saga_name="order_fulfilment",
        reference=ORDER_ID,
        reason=reason,
        failed_step="reserve_stock",
        saga_version=1,
    )
    assert run.state.status is S.COMPENSATED


def test_a_step_without_compensation_out_of_sends_with_nothing_done_fails_the_saga() -> None:
    run = SagaRun(definition=_no_undo_for_reserve_stock())
    run.receive(place_order(), message_id=START_ID)

    decision = run.give_up()

    reason = "no reply to reserve_stock after 2 sends"
    assert event_types(decision) == [E.STEP_TIMED_OUT, E.SAGA_FAILED]
    assert [o.kind for o in decision.outbox] == ["event"]
    assert sent(decision) == [
        ("event", "saga.failed.v2", "saga-42:failed", "order_fulfilment.failed")
    ]
    assert decision.outbox[0].message == SagaFailed(
        saga_name="order_fulfilment", reference=ORDER_ID, reason=reason, saga_version=1
    )
    assert run.state.status is S.FAILED
    assert run.state.failed_step == "reserve_stock"
    assert run.state.reason == reason
    assert run.state.deadline is None


def test_payment_out_of_sends_voids_the_payment_then_releases_the_stock() -> None:
    run = reserved()

    timed_out = run.give_up()
    voided = run.receive(payment_voided())
    released = run.receive(stock_released())

    assert event_types(timed_out) == [E.STEP_TIMED_OUT, E.COMPENSATION_STARTED]
    assert [e.step for e in timed_out.events] == ["authorize_payment", "authorize_payment"]
    assert [(o.message, o.message_id) for o in timed_out.outbox] == [
        (VoidPayment(order_id=ORDER_ID), "saga-42:authorize_payment:undo")
    ]
    assert event_types(voided) == [E.STEP_COMPENSATED, E.COMPENSATION_STARTED]
    assert [e.step for e in voided.events] == ["authorize_payment", "reserve_stock"]
    assert [(o.message, o.message_id) for o in voided.outbox] == [
        (ReleaseStock(order_id=ORDER_ID, lines=place_order().lines), "saga-42:reserve_stock:undo")
    ]
    assert event_types(released) == [E.STEP_COMPENSATED, E.SAGA_COMPENSATED]
    assert released.outbox[0].message == SagaCompensated(
        saga_name="order_fulfilment",
        reference=ORDER_ID,
        reason="no reply to authorize_payment after 2 sends",
        failed_step="authorize_payment",
        saga_version=1,
    )


def test_shipping_out_of_sends_undoes_every_step_latest_first() -> None:
    run = authorized()

    timed_out = run.give_up()
    cancelled = run.receive(shipment_cancelled())
    voided = run.receive(payment_voided())
    released = run.receive(stock_released())

    compensations = [o.message for d in (timed_out, cancelled, voided) for o in d.outbox]
    assert compensations == [
        CancelShipment(order_id=ORDER_ID),
        VoidPayment(order_id=ORDER_ID),
        ReleaseStock(order_id=ORDER_ID, lines=place_order().lines),
    ]
    assert event_types(released) == [E.STEP_COMPENSATED, E.SAGA_COMPENSATED]
    assert released.outbox[0].message == SagaCompensated(
        saga_name="order_fulfilment",
        reference=ORDER_ID,
        reason="no reply to schedule_shipment after 2 sends",
        failed_step="schedule_shipment",
        saga_version=1,
    )
    assert run.state.done == ()


def test_max_sends_of_one_gives_up_at_the_first_deadline() -> None:
    run = SagaRun(definition=order_fulfilment(timeout=TIMEOUT, max_sends=1))
    run.receive(place_order(), message_id=START_ID)

    decision = run.expire()

    assert event_types(decision) == [E.STEP_TIMED_OUT, E.COMPENSATION_STARTED]
    assert decision.events[0].attempt == 1
    assert decision.events[0].data["reason"] == "no reply to reserve_stock after 1 sends"


def test_late_success_of_the_timed_out_step_is_undone_again() -> None:
    run = reserved()
    run.give_up()

    decision = run.receive(payment_authorized(), message_id="late-1")

    assert event_types(decision) == [E.LATE_SUCCESS_COMPENSATING]
    assert [o.message for o in decision.outbox] == [VoidPayment(order_id=ORDER_ID)]
    assert decision.outbox[0].message_id == "saga-42:authorize_payment:undo"
    # the compensation under way is not disturbed
    assert run.state.status is S.COMPENSATING
    assert run.state.step == "authorize_payment"


def test_late_shipment_after_shipping_timed_out_is_cancelled() -> None:
    run = authorized()
    run.give_up()

    decision = run.receive(shipment_scheduled(), message_id="late-1")

    assert [o.message for o in decision.outbox] == [CancelShipment(order_id=ORDER_ID)]


# --- compensations timing out ---------------------------------------------------------


def test_a_compensation_is_resent_with_its_undo_id_while_compensating() -> None:
    run = payment_refused()
    later = DEADLINE + seconds(1)

    decision = run.timeout(later)

    assert event_types(decision) == [E.COMMAND_RESENT]
    assert decision.events[0].step == "reserve_stock"
    assert decision.events[0].attempt == 2
    assert decision.events[0].data == {"deadline": later + seconds(TIMEOUT), "compensation": True}
    assert sent(decision) == [
        (
            "command",
            "inventory.release_stock.v1",
            "saga-42:reserve_stock:undo",
            "inventory.release_stock",
        )
    ]
    assert run.state.status is S.COMPENSATING
    assert run.state.attempt == 2


def test_a_compensation_out_of_sends_parks_the_saga() -> None:
    run = payment_refused()
    run.expire()

    decision = run.expire()

    reason = "no reply to reserve_stock after 2 sends"
    assert event_types(decision) == [E.SAGA_PARKED]
    parked = decision.events[0]
    assert parked.step == "reserve_stock"
    assert parked.attempt == MAX_SENDS
    assert parked.data == {"reason": reason, "phase": "compensation"}
    assert decision.outbox == ()
    state = run.state
    assert state.status is S.COMPENSATION_FAILED
    assert state.status.settled
    assert not state.status.terminal
    assert state.step == "reserve_stock"
    assert state.parked_reason == reason
    assert state.reason == "card declined"
    assert state.deadline is None
    assert state.done == ("reserve_stock",)
    # parked: no deadline any more, so nothing happens by itself
    assert run.timeout(NOW + seconds(10_000)).ignored == "no_deadline_due"


def test_a_parked_saga_still_undoes_a_late_success() -> None:
    run = shipping_refused()
    run.give_up()
    assert run.state.status is S.COMPENSATION_FAILED
    assert run.state.step == "authorize_payment"

    decision = run.receive(shipment_scheduled(), message_id="late-1")

    assert event_types(decision) == [E.LATE_SUCCESS_COMPENSATING]
    assert [o.message for o in decision.outbox] == [CancelShipment(order_id=ORDER_ID)]


# --- an operator resumes a parked saga ------------------------------------------------


def _parked() -> SagaRun:
    """Payment declined and ReleaseStock never answered: parked on reserve_stock."""
    run = payment_refused()
    run.give_up()
    assert run.state.status is S.COMPENSATION_FAILED
    return run


def test_resume_restarts_the_parked_compensation_with_a_fresh_budget() -> None:
    run = _parked()
    later = NOW + seconds(3600)

    decision = run.resume(later)

    assert event_types(decision) == [E.SAGA_RESUMED, E.COMPENSATION_STARTED]
    assert [e.step for e in decision.events] == ["reserve_stock", "reserve_stock"]
    assert decision.events[1].attempt == 1
    assert decision.events[1].data == {"deadline": later + seconds(TIMEOUT)}
    assert sent(decision) == [
        (
            "command",
            "inventory.release_stock.v1",
            "saga-42:reserve_stock:undo",
            "inventory.release_stock",
        )
    ]
    state = run.state
    assert state.status is S.COMPENSATING
    assert (state.step, state.attempt, state.deadline) == (
        "reserve_stock",
        1,
        later + seconds(TIMEOUT),
    )

    assert event_types(run.expire()) == [E.COMMAND_RESENT]
    released = run.receive(stock_released())

    assert event_types(released) == [E.STEP_COMPENSATED, E.SAGA_COMPENSATED]
    outcome = released.outbox[0].message
    assert isinstance(outcome, SagaCompensated)
    assert (outcome.reference, outcome.failed_step) == (ORDER_ID, "authorize_payment")
    assert outcome.reason == "card declined", "parking keeps the original failure reason"
    assert run.state.status is S.COMPENSATED


@pytest.mark.parametrize(
    ("setup", "status"),
    [
        (SagaRun, "None"),
        (started, "running"),
        (payment_refused, "compensating"),
        (completed, "completed"),
        (reservation_failed, "failed"),
    ],
    ids=["unknown", "running", "compensating", "completed", "failed"],
)
def test_only_a_parked_saga_can_be_resumed(setup: Callable[[], SagaRun], status: str) -> None:
    run = setup()
    before = run.state

    decision = run.resume(NOW + seconds(3600))

    assert decision == Decision(ignored=f"not_parked:status={status}")
    assert run.state == before


def test_resume_is_a_pure_function_of_state() -> None:
    state = _parked().state

    first = decide_resume(SAGA, state, now=NOW)
    second = decide_resume(SAGA, state, now=NOW)

    assert first == second


def test_a_compensation_reply_arriving_after_parking_finishes_the_saga() -> None:
    """The undo did happen, only late: no operator is needed."""
    run = _parked()

    decision = run.receive(stock_released(), message_id="released-late")

    assert event_types(decision) == [E.STEP_COMPENSATED, E.SAGA_COMPENSATED]
    assert run.state.status is S.COMPENSATED
    assert run.state.parked_reason is None or run.state.status is not S.COMPENSATION_FAILED
