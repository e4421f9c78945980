"""The order-fulfilment saga: reserve stock, authorize payment, schedule shipment."""

from __future__ import annotations

from contracts import (
    AuthorizePayment,
    CancelShipment,
    PaymentAuthorized,
    PaymentDeclined,
    PaymentVoided,
    PlaceOrder,
    ReleaseStock,
    ReserveStock,
    ScheduleShipment,
    ShipmentCancelled,
    ShipmentFailed,
    ShipmentScheduled,
    StockReleased,
    StockReservationFailed,
    StockReserved,
    VoidPayment,
)
from orchestrator.definition import SagaDefinition, Step

__all__ = ["ORDER_FULFILMENT", "order_fulfilment"]


def order_fulfilment(*, timeout: float = 30.0, max_sends: int = 3) -> SagaDefinition:
    """The order saga, with one step deadline and resend budget for every step."""
    reserve = Step(
        name="reserve_stock",
        participant="inventory",
        command=lambda o: ReserveStock(order_id=o.order_id, lines=o.lines),
        command_type=ReserveStock,
        success=StockReserved,
        failure=StockReservationFailed,
        compensate=lambda o: ReleaseStock(order_id=o.order_id),
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
    return SagaDefinition(
        name="order_fulfilment",
        start=PlaceOrder,
        steps=(reserve, pay, ship),
        reference=lambda o: o.order_id,
    )


ORDER_FULFILMENT = order_fulfilment()
