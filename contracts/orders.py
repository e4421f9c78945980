"""The order that starts an order-fulfilment saga."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from contracts.base import Message, message

__all__ = ["OrderLine", "PlaceOrder", "Sku"]

Sku = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", description="Stock keeping unit")
]


class OrderLine(Message):
    """One line of an order: a quantity of one SKU."""

    sku: Sku
    quantity: int = Field(gt=0, le=1_000_000, description="Units ordered, at least 1")


@message("orders.place_order.v1")
class PlaceOrder(Message):
    """Start the order-fulfilment saga. The saga id is the AMQP correlation id."""

    order_id: str = Field(min_length=1, max_length=128, description="The caller's order reference")
    customer_id: str = Field(min_length=1, max_length=128)
    lines: tuple[OrderLine, ...] = Field(min_length=1, max_length=100)
    amount_cents: int = Field(ge=0, description="Order total in minor currency units")
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    ship_to: str = Field(default="", max_length=500, description="Delivery address, free text")

    @field_validator("lines")
    @classmethod
    def _one_line_per_sku(cls, lines: tuple[OrderLine, ...]) -> tuple[OrderLine, ...]:
        skus = [line.sku for line in lines]
        if len(set(skus)) != len(skus):
            raise ValueError("each SKU may appear on only one line")
        return lines
