"""Every reply outcome of the order saga through ``decide``, applied with ``apply_commit``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from contracts import (
    AuthorizePayment,
    Message,
    OrderLine,
    ReleaseStock,
    ReserveStock,
    SagaCompensated,
    SagaCompleted,
    SagaFailed,
    ScheduleShipment,
    VoidPayment,
)
from orchestrator.saga.decide import Decision, Incoming, command_id, command_round, decide
from orchestrator.saga.state import EventType, SagaState, Status
from tests.unit.saga_run import (
    NOW,
    ORDER_ID,
    SAGA,
    SAGA_ID,
    START_ID,
    TIMEOUT,
    SagaRun,
    authorized,
    compensated_after_decline,
    completed,
    event_types,
    payment_authorized,
    payment_declined,
    payment_refused,
    payment_voided,
    place_order,
    reservation_failed,
    reserved,
    seconds,
    sent,
    shipment_cancelled,
    shipment_failed,
    shipment_scheduled,
    shipping_refused,
    started,
    stock_released,
    stock_reservation_failed,
    stock_reserved,
)

E = EventType


def commands(decision: Decision) -> list[Message]:
    """The commands a decision sends, in order."""
    return [o.message for o in decision.outbox if o.kind == "command"]


# --- start ----------------------------------------------------------------------------


def test_start_records_the_saga_and_its_first_step_and_sends_reserve_stock() -> None:
    order = place_order()
    incoming = Incoming(message=order, message_id=START_ID)

    decision = decide(SAGA, SagaState(saga_id=SAGA_ID), incoming, now=NOW)

    assert decision.ignored is None
    assert event_types(decision) == [E.SAGA_STARTED, E.STEP_STARTED]
    saga_started, step_started = decision.events
    assert saga_started.at == NOW
    assert saga_started.step is None
    assert saga_started.data == {
        "saga_name": "order_fulfilment",
        "saga_version": 1,
        "start": order.model_dump(mode="json"),
        "reference": ORDER_ID,
        "message_id": START_ID,
    }
    assert step_started.step == "reserve_stock"
    assert step_started.attempt == 1
    assert step_started.data["deadline"] == NOW + seconds(TIMEOUT)
    assert sent(decision) == [
        (
            "command",
            "inventory.reserve_stock.v1",
            "saga-42:reserve_stock:do",
            "inventory.reserve_stock",
        )
    ]
    assert decision.outbox[0].message == ReserveStock(order_id=ORDER_ID, lines=order.lines)


def test_start_leaves_the_saga_running_on_its_first_step() -> None:
    state = started().state

    assert state.started
    assert state.saga_name == "order_fulfilment"
    assert state.status is Status.RUNNING
    assert state.step == "reserve_stock"
    assert state.attempt == 1
    assert state.deadline == NOW + seconds(TIMEOUT)
    assert state.done == ()
    assert state.started_at == NOW
    assert state.version == 1
    assert state.processed == frozenset({START_ID})
    assert SAGA.load_start(state.data) == place_order()


def test_command_round_reads_the_round_of_a_command_id() -> None:
    assert command_round(command_id("s", "refund_payment", "do")) == 0
    assert command_round(command_id("s", "refund_payment", "do", 3)) == 3
    assert command_round("a raw publish's id") == 0


def test_command_id_is_saga_step_and_direction() -> None:
    assert command_id("s", "reserve_stock", "do") == "s:reserve_stock:do"
    assert command_id("s", "reserve_stock", "undo") == "s:reserve_stock:undo"


def test_start_redelivered_with_the_same_message_id_is_a_duplicate() -> None:
    run = started()
    before = run.state

    decision = run.receive(place_order(), message_id=START_ID)

    assert decision == Decision(ignored="duplicate")
    assert run.state == before


def test_second_start_with_another_message_id_is_already_started() -> None:
    run = started()
    before = run.state

    decision = run.receive(place_order(amount_cents=1), message_id="start-2")

    assert decision == Decision(ignored="already_started")
    assert run.state == before


def test_start_of_a_finished_saga_is_already_started() -> None:
    assert completed().receive(place_order()).ignored == "already_started"


@pytest.mark.parametrize(
    "reply", [stock_reserved, stock_reservation_failed, stock_released, payment_authorized]
)
def test_reply_for_an_unknown_saga_is_ignored(reply: Callable[[], Message]) -> None:
    incoming = Incoming(message=reply(), message_id="r-1")

    decision = decide(SAGA, SagaState(saga_id="nobody"), incoming, now=NOW)

    assert decision == Decision(ignored="unknown_saga")


def test_message_that_is_no_reply_of_the_saga_is_ignored() -> None:
    run = started()

    decision = run.receive(SagaCompleted(saga_name="order_fulfilment", reference=ORDER_ID))

    assert decision == Decision(ignored="not_a_reply_of_saga:saga.completed.v2")


# --- success path ---------------------------------------------------------------------


def test_stock_reserved_starts_payment_with_authorize_payment() -> None:
    run = started()

    decision = run.receive(stock_reserved(), message_id="reserved-1")

    assert event_types(decision) == [E.STEP_SUCCEEDED, E.STEP_STARTED]
    succeeded, step_started = decision.events
    assert succeeded.step == "reserve_stock"
    assert succeeded.data == {
        "message_type": "inventory.stock_reserved.v1",
        "message_id": "reserved-1",
    }
    assert step_started.step == "authorize_payment"
    assert step_started.attempt == 1
    assert step_started.data["deadline"] == NOW + seconds(TIMEOUT)
    assert sent(decision) == [
        (
            "command",
            "payment.authorize_payment.v1",
            "saga-42:authorize_payment:do",
            "payment.authorize_payment",
        )
    ]
    assert commands(decision) == [
        AuthorizePayment(order_id=ORDER_ID, customer_id="cust-7", amount_cents=4200, currency="EUR")
    ]
    assert run.state.status is Status.RUNNING
    assert run.state.step == "authorize_payment"
    assert run.state.done == ("reserve_stock",)


def test_payment_authorized_starts_shipping_with_schedule_shipment() -> None:
    run = reserved()

    decision = run.receive(payment_authorized(), message_id="authorized-1")

    assert event_types(decision) == [E.STEP_SUCCEEDED, E.STEP_STARTED]
    assert [e.step for e in decision.events] == ["authorize_payment", "schedule_shipment"]
    assert sent(decision) == [
        (
            "command",
            "shipping.schedule_shipment.v1",
            "saga-42:schedule_shipment:do",
            "shipping.schedule_shipment",
        )
    ]
    assert commands(decision) == [
        ScheduleShipment(order_id=ORDER_ID, ship_to="1 Main Street", units=5)
    ]
    assert run.state.step == "schedule_shipment"
    assert run.state.done == ("reserve_stock", "authorize_payment")


def test_shipment_scheduled_completes_the_saga_and_publishes_saga_completed() -> None:
    run = authorized()

    decision = run.receive(shipment_scheduled(), message_id="scheduled-1")

    assert event_types(decision) == [E.STEP_SUCCEEDED, E.SAGA_COMPLETED]
    assert decision.events[0].step == "schedule_shipment"
    assert sent(decision) == [
        ("event", "saga.completed.v2", "saga-42:completed", "order_fulfilment.completed")
    ]
    assert decision.outbox[0].message == SagaCompleted(
        saga_name="order_fulfilment",
        reference=ORDER_ID,
        saga_version=1,
        steps=("reserve_stock", "authorize_payment", "schedule_shipment"),
    )
    state = run.state
    assert state.status is Status.COMPLETED
    assert state.done == ("reserve_stock", "authorize_payment", "schedule_shipment")
    assert state.step is None
    assert state.deadline is None
    assert state.failed_step is None


# --- refusals and compensation --------------------------------------------------------


def test_reservation_failure_fails_the_saga_without_any_command() -> None:
    run = started()

    decision = run.receive(stock_reservation_failed(), message_id="reservation-failed-1")

    assert event_types(decision) == [E.STEP_FAILED, E.SAGA_FAILED]
    step_failed, saga_failed = decision.events
    assert step_failed.step == "reserve_stock"
    assert step_failed.data == {
        "reason": "out of stock",
        "message_type": "inventory.stock_reservation_failed.v1",
        "message_id": "reservation-failed-1",
    }
    assert saga_failed.data == {"reason": "out of stock"}
    assert commands(decision) == []
    assert sent(decision) == [
        ("event", "saga.failed.v2", "saga-42:failed", "order_fulfilment.failed")
    ]
    assert decision.outbox[0].message == SagaFailed(
        saga_name="order_fulfilment", reference=ORDER_ID, reason="out of stock", saga_version=1
    )
    state = run.state
    assert state.status is Status.FAILED
    assert state.failed_step == "reserve_stock"
    assert state.reason == "out of stock"
    assert state.step is None
    assert state.deadline is None


def test_payment_declined_compensates_the_reservation_with_release_stock() -> None:
    run = reserved()

    decision = run.receive(payment_declined(), message_id="declined-1")

    assert event_types(decision) == [E.STEP_FAILED, E.COMPENSATION_STARTED]
    step_failed, compensation = decision.events
    assert step_failed.step == "authorize_payment"
    assert step_failed.data["reason"] == "card declined"
    assert compensation.step == "reserve_stock"
    assert compensation.attempt == 1
    assert compensation.data["deadline"] == NOW + seconds(TIMEOUT)
    assert sent(decision) == [
        (
            "command",
            "inventory.release_stock.v1",
            "saga-42:reserve_stock:undo",
            "inventory.release_stock",
        )
    ]
    assert commands(decision) == [ReleaseStock(order_id=ORDER_ID, lines=place_order().lines)]
    state = run.state
    assert state.status is Status.COMPENSATING
    assert state.step == "reserve_stock"
    assert state.failed_step == "authorize_payment"
    assert state.reason == "card declined"
    assert state.deadline == NOW + seconds(TIMEOUT)


def test_stock_released_after_decline_compensates_the_saga() -> None:
    run = payment_refused()

    decision = run.receive(stock_released(), message_id="released-1")

    assert event_types(decision) == [E.STEP_COMPENSATED, E.SAGA_COMPENSATED]
    assert decision.events[0].step == "reserve_stock"
    assert decision.events[0].data == {
        "message_type": "inventory.stock_released.v1",
        "message_id": "released-1",
    }
    assert sent(decision) == [
        ("event", "saga.compensated.v2", "saga-42:compensated", "order_fulfilment.compensated")
    ]
    assert decision.outbox[0].message == SagaCompensated(
        saga_name="order_fulfilment",
        reference=ORDER_ID,
        reason="card declined",
        failed_step="authorize_payment",
        saga_version=1,
    )
    state = run.state
    assert state.status is Status.COMPENSATED
    assert state.done == ()
    assert state.step is None
    assert state.deadline is None


def test_shipping_failure_undoes_payment_then_stock_in_reverse_order() -> None:
    run = authorized()

    failed = run.receive(shipment_failed(), message_id="shipment-failed-1")
    voided = run.receive(payment_voided(), message_id="voided-1")
    released = run.receive(stock_released(), message_id="released-1")

    assert event_types(failed) == [E.STEP_FAILED, E.COMPENSATION_STARTED]
    assert [e.step for e in failed.events] == ["schedule_shipment", "authorize_payment"]
    assert commands(failed) == [VoidPayment(order_id=ORDER_ID)]
    assert sent(failed)[0][2:] == ("saga-42:authorize_payment:undo", "payment.void_payment")

    assert event_types(voided) == [E.STEP_COMPENSATED, E.COMPENSATION_STARTED]
    assert [e.step for e in voided.events] == ["authorize_payment", "reserve_stock"]
    assert commands(voided) == [ReleaseStock(order_id=ORDER_ID, lines=place_order().lines)]
    assert sent(voided)[0][2:] == ("saga-42:reserve_stock:undo", "inventory.release_stock")

    assert event_types(released) == [E.STEP_COMPENSATED, E.SAGA_COMPENSATED]
    assert released.outbox[0].message == SagaCompensated(
        saga_name="order_fulfilment",
        reference=ORDER_ID,
        reason="address unreachable",
        failed_step="schedule_shipment",
        saga_version=1,
    )

    every_command = [m for d in run.decisions for m in commands(d)]
    assert [type(m) for m in every_command] == [
        ReserveStock,
        AuthorizePayment,
        ScheduleShipment,
        VoidPayment,
        ReleaseStock,
    ]
    assert run.state.status is Status.COMPENSATED


def test_failed_step_and_reason_are_kept_while_compensating() -> None:
    run = shipping_refused()
    run.receive(payment_voided(), message_id="voided-1")

    state = run.state
    assert state.status is Status.COMPENSATING
    assert state.step == "reserve_stock"
    assert state.done == ("reserve_stock",)
    assert state.failed_step == "schedule_shipment"
    assert state.reason == "address unreachable"


# --- duplicates -----------------------------------------------------------------------

SCENARIOS: dict[str, list[Callable[[], Message]]] = {
    "happy": [stock_reserved, payment_authorized, shipment_scheduled],
    "reservation_failed": [stock_reservation_failed],
    "declined": [stock_reserved, payment_declined, stock_released],
    "shipping_failed": [
        stock_reserved,
        payment_authorized,
        shipment_failed,
        payment_voided,
        stock_released,
    ],
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_applied_message_redelivered_with_its_id_is_a_duplicate(scenario: str) -> None:
    run = started()
    for n, reply in enumerate(SCENARIOS[scenario]):
        message_id = f"reply-{n}"
        applied = run.receive(reply(), message_id=message_id)
        assert applied.ignored is None
        assert message_id in run.state.processed
        before = run.state

        again = run.receive(reply(), message_id=message_id, attempts=2)

        assert again == Decision(ignored="duplicate"), reply.__name__
        assert run.state == before
    assert run.receive(place_order(), message_id=START_ID).ignored == "duplicate"


def test_each_commit_bumps_the_version_by_one() -> None:
    run = shipping_refused()

    assert [version for version, _, _ in run.commits] == [1, 2, 3, 4]
    assert [cause for _, cause, _ in run.commits] == [
        START_ID,
        "reserved-1",
        "authorized-1",
        "shipment-failed-1",
    ]


# --- replies that do not fit ----------------------------------------------------------

NOT_EXPECTED: list[tuple[Callable[[], SagaRun], Callable[[], Message], Status]] = [
    # running, reply of a step that is already done
    (reserved, stock_reserved, Status.RUNNING),
    (authorized, payment_authorized, Status.RUNNING),
    # running, reply of a step that has not started
    (started, payment_authorized, Status.RUNNING),
    (started, payment_declined, Status.RUNNING),
    (started, shipment_failed, Status.RUNNING),
    (reserved, shipment_scheduled, Status.RUNNING),
    # running: a compensation reply when nothing is being compensated
    (reserved, stock_released, Status.RUNNING),
    (authorized, payment_voided, Status.RUNNING),
    # completed
    (completed, shipment_scheduled, Status.COMPLETED),
    (completed, shipment_failed, Status.COMPLETED),
    (completed, payment_declined, Status.COMPLETED),
    (completed, shipment_cancelled, Status.COMPLETED),
    # failed
    (reservation_failed, stock_reservation_failed, Status.FAILED),
    (reservation_failed, stock_released, Status.FAILED),
    (reservation_failed, payment_declined, Status.FAILED),
    # compensating
    (payment_refused, payment_declined, Status.COMPENSATING),
    (payment_refused, stock_reserved, Status.COMPENSATING),
    (payment_refused, stock_reservation_failed, Status.COMPENSATING),
    (payment_refused, payment_voided, Status.COMPENSATING),
    (shipping_refused, stock_released, Status.COMPENSATING),
    (shipping_refused, shipment_cancelled, Status.COMPENSATING),
    # compensated
    (compensated_after_decline, stock_released, Status.COMPENSATED),
    (compensated_after_decline, payment_declined, Status.COMPENSATED),
]


@pytest.mark.parametrize(
    ("setup", "reply", "status"),
    NOT_EXPECTED,
    ids=[f"{s.__name__}-{r.__name__}" for s, r, _ in NOT_EXPECTED],
)
def test_reply_that_is_not_for_the_current_step_is_ignored_with_a_reason(
    setup: Callable[[], SagaRun], reply: Callable[[], Message], status: Status
) -> None:
    run = setup()
    before = run.state
    message = reply()

    decision = run.receive(message, message_id="stray-1")

    assert decision == Decision(ignored=f"unexpected_reply:{message.TYPE}:status={status.value}")
    assert run.state == before


# --- late successes -------------------------------------------------------------------


def test_late_stock_reserved_after_the_saga_failed_is_released() -> None:
    run = reservation_failed()
    before = run.state

    decision = run.receive(stock_reserved(), message_id="late-1", attempts=3)

    assert event_types(decision) == [E.LATE_SUCCESS_COMPENSATING]
    late = decision.events[0]
    assert late.step == "reserve_stock"
    assert late.attempt == 3
    assert late.data == {"message_type": "inventory.stock_reserved.v1", "message_id": "late-1"}
    assert sent(decision) == [
        (
            "command",
            "inventory.release_stock.v1",
            "saga-42:reserve_stock:undo",
            "inventory.release_stock",
        )
    ]
    assert commands(decision) == [ReleaseStock(order_id=ORDER_ID, lines=place_order().lines)]
    assert run.state.status is Status.FAILED
    assert run.state.done == before.done
    assert run.state.version == before.version + 1
    assert run.receive(stock_reserved(), message_id="late-1").ignored == "duplicate"


def test_late_payment_authorized_while_compensating_is_voided() -> None:
    run = payment_refused()

    decision = run.receive(payment_authorized(), message_id="late-1")

    assert event_types(decision) == [E.LATE_SUCCESS_COMPENSATING]
    assert decision.events[0].step == "authorize_payment"
    assert commands(decision) == [VoidPayment(order_id=ORDER_ID)]
    assert decision.outbox[0].message_id == "saga-42:authorize_payment:undo"
    # the compensation under way is not disturbed
    assert run.state.status is Status.COMPENSATING
    assert run.state.step == "reserve_stock"
    assert run.state.deadline == NOW + seconds(TIMEOUT)


def test_late_payment_authorized_after_compensation_is_voided() -> None:
    run = compensated_after_decline()

    decision = run.receive(payment_authorized(), message_id="late-1")

    assert event_types(decision) == [E.LATE_SUCCESS_COMPENSATING]
    assert commands(decision) == [VoidPayment(order_id=ORDER_ID)]
    assert run.state.status is Status.COMPENSATED


def test_late_shipment_scheduled_while_compensating_is_cancelled() -> None:
    run = shipping_refused()

    decision = run.receive(shipment_scheduled(), message_id="late-1")

    assert event_types(decision) == [E.LATE_SUCCESS_COMPENSATING]
    assert decision.events[0].step == "schedule_shipment"
    assert sent(decision) == [
        (
            "command",
            "shipping.cancel_shipment.v1",
            "saga-42:schedule_shipment:undo",
            "shipping.cancel_shipment",
        )
    ]


def test_late_failure_is_not_a_late_success() -> None:
    run = payment_refused()

    decision = run.receive(stock_reservation_failed(), message_id="late-1")

    assert decision.ignored is not None
    assert decision.ignored.startswith("unexpected_reply:")


# --- delivery attempts ----------------------------------------------------------------


@pytest.mark.parametrize("attempts", [1, 2, 5])
def test_participant_attempts_land_in_step_succeeded(attempts: int) -> None:
    run = started()

    decision = run.receive(stock_reserved(), attempts=attempts)

    assert decision.events[0].type is E.STEP_SUCCEEDED
    assert decision.events[0].attempt == attempts
    # the next step starts at its own first send
    assert decision.events[1].attempt == 1
    assert run.state.attempt == 1


def test_participant_attempts_land_in_step_failed_and_step_compensated() -> None:
    run = reserved()

    failed = run.receive(payment_declined(), attempts=4)
    compensated = run.receive(stock_released(), attempts=3)

    assert (failed.events[0].type, failed.events[0].attempt) == (E.STEP_FAILED, 4)
    assert (compensated.events[0].type, compensated.events[0].attempt) == (E.STEP_COMPENSATED, 3)


def test_the_start_message_is_what_commands_are_built_from() -> None:
    order = place_order(
        lines=(OrderLine(sku="A", quantity=1), OrderLine(sku="B", quantity=10)),
        ship_to="2 Side Road",
    )
    run = SagaRun()
    run.receive(order)
    run.receive(stock_reserved())

    decision = run.receive(payment_authorized())

    assert commands(decision) == [
        ScheduleShipment(order_id=ORDER_ID, ship_to="2 Side Road", units=11)
    ]
