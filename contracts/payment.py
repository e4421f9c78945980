"""Commands to and replies from the payment service."""

from __future__ import annotations

from pydantic import Field

from contracts.base import Message, message

__all__ = [
    "AuthorizePayment",
    "PaymentAuthorized",
    "PaymentDeclined",
    "PaymentVoided",
    "VoidPayment",
]


@message("payment.authorize_payment.v1")
class AuthorizePayment(Message):
    """Authorize (hold) the order amount on the customer's account."""

    order_id: str
    customer_id: str
    amount_cents: int = Field(ge=0)
    currency: str = "EUR"


@message("payment.payment_authorized.v1")
class PaymentAuthorized(Message):
    """The amount is held; it is captured when the saga completes, voided if it compensates."""

    order_id: str
    authorization_id: str


@message("payment.payment_declined.v1")
class PaymentDeclined(Message):
    """Business refusal: nothing is held."""

    order_id: str
    reason: str


@message("payment.void_payment.v1")
class VoidPayment(Message):
    """Compensation: release the authorization held for this saga, if any."""

    order_id: str


@message("payment.payment_voided.v1")
class PaymentVoided(Message):
    """No authorization is held for this saga any more."""

    order_id: str
