"""Order fulfilment v2 through ``decide``: the shipment is the pivot, then capture the
payment and ship the stock (retriable); completed only once all five are done. And the
rule by which the payment and inventory services skip the outcome-event reaction."""

from __future__ import annotations

from contracts import CapturePayment, PaymentCaptured, SagaCompleted, ShipStock, StockShipped
from orchestrator.packs.order_fulfilment import PACK
from orchestrator.packs.order_fulfilment.definition import SETTLE_RETRY, order_fulfilment_v2
from orchestrator.saga.registry import SagaRegistry
from orchestrator.saga.state import EventType, Status
from participants.order_outcomes import done_by_step
from tests.unit.saga_run import (
    ORDER_ID,
    TIMEOUT,
    SagaRun,
    event_types,
    payment_authorized,
    place_order,
    seconds,
    shipment_failed,
    shipment_scheduled,
    stock_reserved,
)

E = EventType
V2 = order_fulfilment_v2(timeout=TIMEOUT, max_sends=2)
FIVE = ("reserve_stock", "authorize_payment", "schedule_shipment", "capture_payment", "ship_stock")


def scheduled() -> SagaRun:
    """v2 past its pivot: the shipment is scheduled, the capture sent."""
    run = SagaRun(definition=V2)
    run.receive(place_order(), message_id="start-1")
    for reply in (stock_reserved(), payment_authorized(), shipment_scheduled()):
        run.receive(reply)
    return run


def captured() -> PaymentCaptured:
    return PaymentCaptured(order_id=ORDER_ID, capture_id="cap-1", amount_cents=4200)


def test_v2_has_five_steps_the_shipment_as_pivot_and_a_retriable_tail() -> None:
    assert tuple(s.name for s in V2.steps) == FIVE
    assert V2.pivot == "schedule_shipment"
    assert [s.name for s in V2.steps if s.retriable] == ["capture_payment", "ship_stock"]
    assert all(s.retry == SETTLE_RETRY and s.compensate is None for s in V2.steps[3:])


def test_new_sagas_take_v2_and_v1_stays_registered_for_sagas_in_flight() -> None:
    registry = SagaRegistry(PACK.definitions)

    assert registry.versions("order_fulfilment") == (1, 2)
    assert registry.get("order_fulfilment").version == 2
    assert [s.name for s in registry.get("order_fulfilment", 1).steps] == list(FIVE[:3])
    assert registry.versions("order_fulfilment_parallel") == (1,)


def test_v2_completes_only_after_the_capture_and_the_shipping_of_the_stock() -> None:
    run = scheduled()
    assert run.state.status is Status.RUNNING
    assert isinstance(run.decisions[-1].outbox[0].message, CapturePayment)

    after_capture = run.receive(captured())
    assert run.state.status is Status.RUNNING
    assert isinstance(after_capture.outbox[0].message, ShipStock)

    done = run.receive(StockShipped(order_id=ORDER_ID, units=5))
    assert event_types(done) == [E.STEP_SUCCEEDED, E.SAGA_COMPLETED]
    assert (run.state.status, run.state.done) == (Status.COMPLETED, FIVE)
    outcome = done.outbox[0].message
    assert outcome == SagaCompleted(
        saga_name="order_fulfilment", reference=ORDER_ID, saga_version=2, steps=FIVE
    )


def test_a_capture_without_reply_is_resent_with_backoff_and_never_compensated() -> None:
    run = scheduled()
    sent_at = run.state.deadline
    assert sent_at is not None

    resent = run.expire()
    again = run.expire()

    assert event_types(resent) == [E.COMMAND_RESENT]
    assert event_types(again) == [E.COMMAND_RESENT]
    assert run.state.deadline is not None
    assert run.state.deadline - (sent_at + seconds(2)) > seconds(TIMEOUT * 2)
    assert E.COMPENSATION_STARTED not in {e for d in run.decisions for e in event_types(d)}


def test_a_failed_shipment_before_the_pivot_still_compensates() -> None:
    run = SagaRun(definition=V2)
    run.receive(place_order(), message_id="start-1")
    run.receive(stock_reserved())
    run.receive(payment_authorized())

    refused = run.receive(shipment_failed())

    assert E.COMPENSATION_STARTED in event_types(refused)
    assert [type(o.message).__name__ for o in refused.outbox] == ["VoidPayment"]
    assert run.state.status is Status.COMPENSATING


def test_the_event_reaction_is_skipped_only_for_a_step_the_saga_did_itself() -> None:
    v2 = SagaCompleted(saga_name="order_fulfilment", saga_version=2, steps=FIVE)
    v1 = SagaCompleted(saga_name="order_fulfilment", saga_version=1, steps=FIVE[:3])
    older = SagaCompleted(saga_name="order_fulfilment")

    assert done_by_step(v2, "capture_payment")
    assert done_by_step(v2, "ship_stock")
    assert not done_by_step(v1, "capture_payment")
    assert not done_by_step(older, "ship_stock"), "an older release: settled from the event"
