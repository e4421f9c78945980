"""The order-return saga's messages: its start command, the returns service's commands,
and the inventory and payment commands it adds (take goods back, refund).

Every command carries ``return_id``, the caller's return reference; the return saga's
id travels as the AMQP correlation id, as for every saga. The original order is named by
its saga id (``order_saga_id``), which is how the returns service finds it in the event
store and how payment finds what was captured for it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from contracts.base import Message, NonNegativeInt, message
from contracts.orders import OrderLine, OrderLines, Sku

__all__ = [
    "AcceptReturn",
    "CancelRefund",
    "CancelReturn",
    "PaymentRefunded",
    "RefundCancelled",
    "RefundPayment",
    "RefundRefused",
    "RequestReturn",
    "ReturnAccepted",
    "ReturnCancelled",
    "ReturnRefused",
    "StockTakenBack",
    "TakeBackRefused",
    "TakeBackStock",
    "TakeBackUndone",
    "UndoTakeBack",
]

ReturnId = Annotated[
    str, Field(min_length=1, max_length=128, description="The caller's return reference")
]
OrderSagaId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Saga id of the completed order-fulfilment saga being returned",
    ),
]


@message("order_returns.request_return.v1")
class RequestReturn(Message):
    """Start the order-return saga: take ``lines`` of a completed order back and refund
    ``refund_cents``. The saga id is the AMQP correlation id."""

    return_id: ReturnId
    order_saga_id: OrderSagaId
    lines: OrderLines
    refund_cents: NonNegativeInt = Field(description="Amount to refund, at most what was captured")
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    reason: str = Field(default="", max_length=500, description="Why the customer returns it")


# --- returns service ------------------------------------------------------------------


@message("returns.accept_return.v1")
class AcceptReturn(Message):
    """Accept the return if the order saga completed within the return window, its lines
    were on the order, the refund asked is no more than the order's amount (in its
    currency), and the order has no other return."""

    return_id: ReturnId
    order_saga_id: OrderSagaId
    lines: tuple[OrderLine, ...] = Field(min_length=1)
    refund_cents: NonNegativeInt | None = Field(
        default=None,
        description="The refund the return will ask; more than the order's amount is refused",
    )
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")


@message("returns.return_accepted.v1")
class ReturnAccepted(Message):
    """The return is accepted: the order counts as returned."""

    return_id: str


@message("returns.return_refused.v1")
class ReturnRefused(Message):
    """Business refusal: the order is not returnable (not completed, returned already,
    outside the window, lines not on it)."""

    return_id: str
    reason: str


@message("returns.cancel_return.v1")
class CancelReturn(Message):
    """Compensation: withdraw the acceptance, so the order may be returned again."""

    return_id: str
    order_saga_id: OrderSagaId


@message("returns.return_cancelled.v1")
class ReturnCancelled(Message):
    """This return holds no acceptance any more (or never did)."""

    return_id: str


# --- inventory ------------------------------------------------------------------------


@message("inventory.take_back_stock.v1")
class TakeBackStock(Message):
    """Move the returned units from shipped back to available stock, all lines or none."""

    return_id: str
    lines: tuple[OrderLine, ...] = Field(min_length=1)
    order_saga_id: OrderSagaId | None = Field(
        default=None,
        description="The order returned: the take-back waits until its stock is shipped",
    )


@message("inventory.stock_taken_back.v1")
class StockTakenBack(Message):
    """Every line is back in available stock."""

    return_id: str


@message("inventory.take_back_refused.v1")
class TakeBackRefused(Message):
    """Business refusal: nothing was taken back."""

    return_id: str
    reason: str
    sku: Sku | None = Field(default=None, description="The first SKU that could not be")


@message("inventory.undo_take_back.v1")
class UndoTakeBack(Message):
    """Compensation: the units taken back for this return leave available stock again."""

    return_id: str


@message("inventory.take_back_undone.v1")
class TakeBackUndone(Message):
    """Nothing is taken back for this return (any more); a late take-back is refused."""

    return_id: str


# --- payment --------------------------------------------------------------------------


@message("payment.refund_payment.v1")
class RefundPayment(Message):
    """Refund part or all of what was captured for the order; never more in all."""

    return_id: str
    order_saga_id: OrderSagaId
    amount_cents: NonNegativeInt
    currency: str = "EUR"


@message("payment.payment_refunded.v1")
class PaymentRefunded(Message):
    """The refund is recorded against the order's captured payment."""

    return_id: str
    refund_id: str


@message("payment.refund_refused.v1")
class RefundRefused(Message):
    """Business refusal: nothing was refunded (more than captured is left, no captured
    payment, another currency)."""

    return_id: str
    reason: str


@message("payment.cancel_refund.v1")
class CancelRefund(Message):
    """Compensation (when the refund's reply never came): no refund for this return; a
    recorded one is reversed and a late one refused."""

    return_id: str
    order_saga_id: OrderSagaId


@message("payment.refund_cancelled.v1")
class RefundCancelled(Message):
    """No refund is recorded for this return, and none will be."""

    return_id: str
