"""Commands to and replies from the inventory service."""

from __future__ import annotations

from pydantic import Field

from contracts.base import Message, message
from contracts.orders import OrderLine, Sku

__all__ = [
    "InventoryRestocked",
    "ReleaseStock",
    "ReserveStock",
    "RestockStock",
    "StockReleased",
    "StockReservationFailed",
    "StockReserved",
]


@message("inventory.reserve_stock.v1")
class ReserveStock(Message):
    """Reserve every line of an order, all or nothing."""

    order_id: str
    lines: tuple[OrderLine, ...] = Field(min_length=1)


@message("inventory.stock_reserved.v1")
class StockReserved(Message):
    """Every line is reserved."""

    order_id: str


@message("inventory.stock_reservation_failed.v1")
class StockReservationFailed(Message):
    """Business refusal: nothing was reserved."""

    order_id: str
    reason: str
    sku: str | None = Field(default=None, description="The first SKU that was short, if any")


@message("inventory.release_stock.v1")
class ReleaseStock(Message):
    """Compensation: return the units reserved for this saga to available stock."""

    order_id: str


@message("inventory.stock_released.v1")
class StockReleased(Message):
    """The saga's reservation (if any) has been returned to available stock."""

    order_id: str


@message("inventory.restock_stock.v1")
class RestockStock(Message):
    """Operator command: add units to available stock. The message id is the restock id,
    so a repeated command adds the units once."""

    sku: Sku
    units: int = Field(gt=0, le=10_000_000)
    reason: str = Field(default="", max_length=500)


@message("inventory.restocked.v1")
class InventoryRestocked(Message):
    """Units were added to available stock (published once per restock id, possibly again
    on redelivery: consumers dedupe by ``restock_id``)."""

    sku: Sku
    units: int
    restock_id: str
