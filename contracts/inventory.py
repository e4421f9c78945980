"""Commands to and replies from the inventory service."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, Strict

from contracts.base import WHOLE, Int64, Message, NonNegativeInt, message
from contracts.orders import MAX_LINES, OrderLine, OrderLines, Sku

__all__ = [
    "InventoryRestocked",
    "ReleaseStock",
    "ReserveStock",
    "RestockStock",
    "ShipStock",
    "StockReleased",
    "StockReservationFailed",
    "StockReserved",
    "StockShipped",
]


@message("inventory.reserve_stock.v1")
class ReserveStock(Message):
    """Reserve every line of an order, all or nothing."""

    order_id: str
    lines: OrderLines


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
    lines: tuple[OrderLine, ...] = Field(
        default=(),
        max_length=MAX_LINES,
        description="The order's lines: what a reserve attempt may hold for this saga, "
        "given back even if no reservation was ever decided (empty: only the reservation's)",
    )


@message("inventory.stock_released.v1")
class StockReleased(Message):
    """The saga's reservation (if any) has been returned to available stock."""

    order_id: str


@message("inventory.ship_stock.v1")
class ShipStock(Message):
    """Retriable step after the pivot: the units reserved for this saga leave as shipped.
    Done exactly once per saga; a repeated command gets the same reply."""

    order_id: str


@message("inventory.stock_shipped.v1")
class StockShipped(Message):
    """The saga's reserved units are shipped (by this command or an earlier copy)."""

    order_id: str
    units: NonNegativeInt = Field(description="Units shipped for the saga")


@message("inventory.restock_stock.v1")
class RestockStock(Message):
    """Operator command: add units to available stock. The message id is the restock id,
    so a repeated command adds the units once."""

    sku: Sku
    units: Annotated[int, Strict(), Field(gt=0, le=10_000_000), WHOLE]
    reason: str = Field(default="", max_length=500)


@message("inventory.restocked.v1")
class InventoryRestocked(Message):
    """Units were added to available stock (published once per restock id, possibly again
    on redelivery: consumers dedupe by ``restock_id``)."""

    sku: Sku
    units: Int64
    restock_id: str
