"""Commands to and replies from the shipping service."""

from __future__ import annotations

from contracts.base import Message, NonNegativeInt, message

__all__ = [
    "CancelShipment",
    "ScheduleShipment",
    "ShipmentCancelled",
    "ShipmentFailed",
    "ShipmentScheduled",
]


@message("shipping.schedule_shipment.v1")
class ScheduleShipment(Message):
    """Book a shipment for the order."""

    order_id: str
    ship_to: str = ""
    units: NonNegativeInt = 0


@message("shipping.shipment_scheduled.v1")
class ShipmentScheduled(Message):
    """A shipment is booked."""

    order_id: str
    shipment_id: str


@message("shipping.shipment_failed.v1")
class ShipmentFailed(Message):
    """Business refusal: no shipment could be booked."""

    order_id: str
    reason: str


@message("shipping.cancel_shipment.v1")
class CancelShipment(Message):
    """Compensation: cancel the shipment booked for this saga, if any."""

    order_id: str


@message("shipping.shipment_cancelled.v1")
class ShipmentCancelled(Message):
    """No shipment is booked for this saga any more."""

    order_id: str
