"""Commands to and replies from the payment service."""

from __future__ import annotations

from contracts.base import Message, NonNegativeInt, message

__all__ = [
    "AuthorizePayment",
    "CapturePayment",
    "PaymentAuthorized",
    "PaymentCaptured",
    "PaymentDeclined",
    "PaymentVoided",
    "VoidPayment",
]


@message("payment.authorize_payment.v1")
class AuthorizePayment(Message):
    """Authorize (hold) the order amount on the customer's account."""

    order_id: str
    customer_id: str
    amount_cents: NonNegativeInt
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


@message("payment.capture_payment.v1")
class CapturePayment(Message):
    """Retriable step after the pivot: capture the amount authorized for this saga.
    A payment is captured at most once; a repeated command gets the same reply."""

    order_id: str


@message("payment.payment_captured.v1")
class PaymentCaptured(Message):
    """The authorized amount is captured (by this command or an earlier copy)."""

    order_id: str
    capture_id: str
    amount_cents: NonNegativeInt
