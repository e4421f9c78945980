"""The order that starts an order-fulfilment saga."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, Strict

from contracts.base import WHOLE, Message, NonNegativeInt, Text, message

__all__ = ["MAX_LINES", "OrderLine", "OrderLines", "PlaceOrder", "Sku"]

Sku = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", description="Stock keeping unit")
]


MAX_LINES = 100
"""Lines of one order at most."""


class OrderLine(Message):
    """One line of an order: a quantity of one SKU."""

    sku: Sku
    quantity: Annotated[int, Strict(), Field(gt=0, le=1_000_000), WHOLE] = Field(
        description="Units ordered, at least 1"
    )


def _one_line_per_sku(lines: tuple[OrderLine, ...]) -> tuple[OrderLine, ...]:
    skus = [line.sku for line in lines]
    if len(set(skus)) != len(skus):
        raise ValueError("each SKU may appear on only one line")
    return lines


OrderLines = Annotated[
    tuple[OrderLine, ...],
    Field(
        min_length=1,
        max_length=MAX_LINES,
        description=f"1 to {MAX_LINES} lines, each SKU on one line only",
        json_schema_extra={"uniqueItems": True},
    ),
    AfterValidator(_one_line_per_sku),
]
"""The lines of an order (``PlaceOrder``, ``ReserveStock``)."""


@message("orders.place_order.v1")
class PlaceOrder(Message):
    """Start the order-fulfilment saga. The saga id is the AMQP correlation id."""

    order_id: Text = Field(description="The caller's order reference")
    customer_id: Text
    lines: OrderLines
    amount_cents: NonNegativeInt = Field(description="Order total in minor currency units")
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    ship_to: str = Field(default="", max_length=500, description="Delivery address, free text")
