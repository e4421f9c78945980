"""The order-fulfilment sagas: reserve stock, authorize payment, schedule shipment, and
(from version 2) capture the payment and ship the stock.

``order_fulfilment`` v2 runs five steps one after the other: the first three can be
compensated, the shipment is the *pivot*, and capturing the payment and shipping the
stock are *retriable*: driven forward until they succeed, never undone, so that
``completed`` means every effect is done. v1 (three steps; capture and ship happened
after it, as reactions of the payment and inventory services to the outcome event) stays
registered beside it so that sagas started on v1 finish on v1; new sagas take v2. Its variant
``order_fulfilment_parallel`` reserves the stock and authorizes the payment at the same
time (a parallel group), then schedules the shipment: one round trip less per order.
The variant starts with its own command, :class:`PlaceOrderInParallel` (the fields of
``PlaceOrder``), so that a start names exactly one saga.
"""

from __future__ import annotations

from contracts import (
    AuthorizePayment,
    CancelShipment,
    CapturePayment,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentDeclined,
    PaymentVoided,
    PlaceOrder,
    ReleaseStock,
    ReserveStock,
    ScheduleShipment,
    ShipmentCancelled,
    ShipmentFailed,
    ShipmentScheduled,
    ShipStock,
    StockReleased,
    StockReservationFailed,
    StockReserved,
    StockShipped,
    VoidPayment,
    message,
)
from orchestrator.saga.definition import Retry, SagaDefinition, Step, parallel

__all__ = [
    "ORDER_FULFILMENT",
    "ORDER_FULFILMENT_PARALLEL",
    "ORDER_FULFILMENT_V2",
    "ORDER_SAGAS",
    "SETTLE_RETRY",
    "PlaceOrderInParallel",
    "order_fulfilment",
    "order_fulfilment_parallel",
    "order_fulfilment_v2",
    "order_steps",
    "settle_steps",
]

ORDER_SAGAS = ("order_fulfilment", "order_fulfilment_parallel")
"""The names of the order sagas: the pack's read side and invariants cover both."""

SETTLE_RETRY = Retry(max_sends=10, backoff=2.0, max_interval=300.0)
"""Budget of the retriable tail: with the default 30 s step deadline the waits are 30,
60, 120, 240, then 300 s; ten sends cover about 32 minutes of a payment or inventory
service (or its store) being down before the saga is parked as ``completing_stuck``,
from where an operator resumes it with a fresh budget."""


@message("orders.place_order_in_parallel.v1")
class PlaceOrderInParallel(PlaceOrder):
    """Start the ``order_fulfilment_parallel`` saga (the same fields as ``PlaceOrder``)."""


def order_steps(
    *, timeout: float | None = None, max_sends: int | None = None
) -> tuple[Step, Step, Step]:
    """Reserve stock, authorize payment, schedule shipment: each with its compensation,
    the given step deadline and resend budget (unset: the deployment's
    ``SAGA_STEP_TIMEOUT`` and ``SAGA_STEP_MAX_SENDS``)."""
    reserve = Step(
        name="reserve_stock",
        participant="inventory",
        command=lambda o: ReserveStock(order_id=o.order_id, lines=o.lines),
        command_type=ReserveStock,
        success=StockReserved,
        failure=StockReservationFailed,
        compensate=lambda o: ReleaseStock(order_id=o.order_id, lines=o.lines),
        compensation_type=ReleaseStock,
        compensated=StockReleased,
        timeout=timeout,
        max_sends=max_sends,
    )
    pay = Step(
        name="authorize_payment",
        participant="payment",
        command=lambda o: AuthorizePayment(
            order_id=o.order_id,
            customer_id=o.customer_id,
            amount_cents=o.amount_cents,
            currency=o.currency,
        ),
        command_type=AuthorizePayment,
        success=PaymentAuthorized,
        failure=PaymentDeclined,
        compensate=lambda o: VoidPayment(order_id=o.order_id),
        compensation_type=VoidPayment,
        compensated=PaymentVoided,
        timeout=timeout,
        max_sends=max_sends,
    )
    ship = Step(
        name="schedule_shipment",
        participant="shipping",
        command=lambda o: ScheduleShipment(
            order_id=o.order_id, ship_to=o.ship_to, units=sum(line.quantity for line in o.lines)
        ),
        command_type=ScheduleShipment,
        success=ShipmentScheduled,
        failure=ShipmentFailed,
        compensate=lambda o: CancelShipment(order_id=o.order_id),
        compensation_type=CancelShipment,
        compensated=ShipmentCancelled,
        timeout=timeout,
        max_sends=max_sends,
    )
    return reserve, pay, ship


def settle_steps(*, timeout: float | None = None, retry: Retry = SETTLE_RETRY) -> tuple[Step, Step]:
    """Capture the payment, ship the reserved stock: retriable steps after the pivot,
    with no compensation and no refusal (a payment or reservation in the wrong state is
    an error the participant retries and dead-letters, never a reply that undoes)."""
    capture = Step(
        name="capture_payment",
        participant="payment",
        command=lambda o: CapturePayment(order_id=o.order_id),
        command_type=CapturePayment,
        success=PaymentCaptured,
        timeout=timeout,
        retry=retry,
    )
    ship = Step(
        name="ship_stock",
        participant="inventory",
        command=lambda o: ShipStock(order_id=o.order_id),
        command_type=ShipStock,
        success=StockShipped,
        timeout=timeout,
        retry=retry,
    )
    return capture, ship


def order_fulfilment(
    *, timeout: float | None = None, max_sends: int | None = None
) -> SagaDefinition:
    """The order saga, version 1 (three steps; capture and ship follow the outcome
    event), with one step deadline and resend budget for every step (unset: the
    deployment's ``SAGA_STEP_TIMEOUT`` and ``SAGA_STEP_MAX_SENDS``)."""
    return SagaDefinition(
        name="order_fulfilment",
        start=PlaceOrder,
        steps=order_steps(timeout=timeout, max_sends=max_sends),
        reference=lambda o: o.order_id,
        description="reserve stock, authorize payment, schedule the shipment",
    )


def order_fulfilment_v2(
    *, timeout: float | None = None, max_sends: int | None = None, retry: Retry = SETTLE_RETRY
) -> SagaDefinition:
    """The order saga, version 2: v1's three steps, the shipment the pivot, then capture
    the payment and ship the stock (retriable, ``retry`` their budget). Completed only
    when all five are done."""
    return SagaDefinition(
        name="order_fulfilment",
        version=2,
        start=PlaceOrder,
        steps=(
            *order_steps(timeout=timeout, max_sends=max_sends),
            *settle_steps(timeout=timeout, retry=retry),
        ),
        reference=lambda o: o.order_id,
        description="reserve stock, authorize payment, schedule the shipment (the pivot), "
        "then capture the payment and ship the stock",
    )


def order_fulfilment_parallel(
    *, timeout: float | None = None, max_sends: int | None = None
) -> SagaDefinition:
    """The order saga with the stock reservation and the payment authorization in one
    parallel group: if either is refused, the other is undone (once it answered or
    timed out), and nothing is shipped."""
    reserve, pay, ship = order_steps(timeout=timeout, max_sends=max_sends)
    return SagaDefinition(
        name="order_fulfilment_parallel",
        start=PlaceOrderInParallel,
        steps=(*parallel("prepare", reserve, pay), ship),
        reference=lambda o: o.order_id,
        description="reserve stock and authorize payment in parallel, then schedule the shipment",
    )


ORDER_FULFILMENT = order_fulfilment()
ORDER_FULFILMENT_V2 = order_fulfilment_v2()
ORDER_FULFILMENT_PARALLEL = order_fulfilment_parallel()
