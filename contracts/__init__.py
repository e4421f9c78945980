"""Message contracts shared by the orchestrator and the participants.

Import a contract from here; every class is registered under its versioned type name,
which :func:`decode` uses to validate bodies read off the wire.
"""

from contracts.base import Message, decode, encode, message, registered_types, resolve
from contracts.errors import ContractError, MalformedMessage, MalformedReason
from contracts.events import (
    ProgressEvent,
    SagaCompensated,
    SagaCompleted,
    SagaFailed,
    SagaOutcome,
    SagaProgressed,
)
from contracts.inventory import (
    InventoryRestocked,
    ReleaseStock,
    ReserveStock,
    RestockStock,
    StockReleased,
    StockReservationFailed,
    StockReserved,
)
from contracts.orders import OrderLine, PlaceOrder, Sku
from contracts.payment import (
    AuthorizePayment,
    PaymentAuthorized,
    PaymentDeclined,
    PaymentVoided,
    VoidPayment,
)
from contracts.shipping import (
    CancelShipment,
    ScheduleShipment,
    ShipmentCancelled,
    ShipmentFailed,
    ShipmentScheduled,
)

__all__ = [
    "AuthorizePayment",
    "CancelShipment",
    "ContractError",
    "InventoryRestocked",
    "MalformedMessage",
    "MalformedReason",
    "Message",
    "OrderLine",
    "PaymentAuthorized",
    "PaymentDeclined",
    "PaymentVoided",
    "PlaceOrder",
    "ProgressEvent",
    "ReleaseStock",
    "ReserveStock",
    "RestockStock",
    "SagaCompensated",
    "SagaCompleted",
    "SagaFailed",
    "SagaOutcome",
    "SagaProgressed",
    "ScheduleShipment",
    "ShipmentCancelled",
    "ShipmentFailed",
    "ShipmentScheduled",
    "Sku",
    "StockReleased",
    "StockReservationFailed",
    "StockReserved",
    "VoidPayment",
    "decode",
    "encode",
    "message",
    "registered_types",
    "resolve",
]
