"""The payment service. One document per saga is both the effect and its idempotency
record: inserting it is the authorization, so a duplicate command finds it and repeats
the same reply."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from pymongo.errors import DuplicateKeyError, PyMongoError

from contracts import (
    AuthorizePayment,
    PaymentAuthorized,
    PaymentDeclined,
    PaymentVoided,
    SagaCompleted,
    VoidPayment,
)
from contracts.base import Message
from orchestrator.errors import StoreUnavailable, TransientError
from orchestrator.host import run_service
from participants.kit import ParticipantService

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

__all__ = ["MongoPayments", "PaymentService", "main"]

log = structlog.get_logger("payment")
Doc = dict[str, Any]


class MongoPayments:
    """``payment_authorizations``: one document per saga, status
    authorized -> captured | voided, or declined, or voided before it was authorized."""

    def __init__(self, *, database: AsyncDatabase[Doc], decline_above_cents: int) -> None:
        self.authorizations = database["payment_authorizations"]
        self.decline_above_cents = decline_above_cents

    async def authorize(self, saga_id: str, cmd: AuthorizePayment) -> Doc:
        """Authorize or decline once; later calls return the stored outcome."""
        declined = cmd.amount_cents > self.decline_above_cents
        doc: Doc = {
            "_id": saga_id,
            "order_id": cmd.order_id,
            "amount_cents": cmd.amount_cents,
            "currency": cmd.currency,
            "status": "declined" if declined else "authorized",
            "reason": (f"amount {cmd.amount_cents} is above the limit {self.decline_above_cents}")
            if declined
            else "",
            "authorization_id": f"auth-{saga_id}",
            "updated_at": _now(),
        }
        try:
            await self.authorizations.insert_one(doc)
            return doc
        except DuplicateKeyError:
            return await self._get(saga_id)
        except PyMongoError as e:
            raise StoreUnavailable(f"payment write failed: {e}") from e

    async def void(self, saga_id: str) -> None:
        """Void the authorization if there is one; otherwise leave a voided marker so a
        late authorization is declined. Safe to repeat."""
        try:
            voided = await self.authorizations.find_one_and_update(
                {"_id": saga_id, "status": "authorized"},
                {"$set": {"status": "voided", "updated_at": _now()}},
            )
            if voided is not None:
                return
            await self.authorizations.insert_one(
                {
                    "_id": saga_id,
                    "status": "voided",
                    "amount_cents": 0,
                    "reason": "voided before it was authorized",
                    "updated_at": _now(),
                }
            )
        except DuplicateKeyError:
            doc = await self._get(saga_id)
            if doc["status"] == "captured":
                raise PaymentStateError(f"saga {saga_id}: cannot void a captured payment") from None
            if doc["status"] == "authorized":
                raise TransientError(f"saga {saga_id}: authorized concurrently; retry") from None
        except PyMongoError as e:
            raise StoreUnavailable(f"payment write failed: {e}") from e

    async def capture(self, saga_id: str) -> bool:
        """Capture on completion; True if this call captured it."""
        try:
            result = await self.authorizations.update_one(
                {"_id": saga_id, "status": "authorized"},
                {"$set": {"status": "captured", "updated_at": _now()}},
            )
        except PyMongoError as e:
            raise StoreUnavailable(f"payment write failed: {e}") from e
        return result.modified_count == 1

    async def get(self, saga_id: str) -> Doc | None:
        """The saga's payment document, if any."""
        try:
            return await self.authorizations.find_one({"_id": saga_id})
        except PyMongoError as e:
            raise StoreUnavailable(f"payment read failed: {e}") from e

    async def _get(self, saga_id: str) -> Doc:
        doc = await self.get(saga_id)
        if doc is None:
            raise TransientError(f"payment {saga_id} vanished; retry")
        return doc


class PaymentStateError(Exception):
    """A compensation asked for something the payment's state forbids."""


class PaymentService(ParticipantService):
    """Consumes ``<ns>.payment.commands`` and ``<ns>.payment.events``."""

    service = "payment"
    _payments: MongoPayments | None = None

    @property
    def payments(self) -> MongoPayments:
        """The payment store (after start)."""
        assert self._payments is not None, "start() the service first"
        return self._payments

    async def setup(self) -> None:
        """Register handlers and consumers."""
        self._payments = MongoPayments(
            database=self.db, decline_above_cents=self.settings.payment_decline_above_cents
        )
        self.on_command(AuthorizePayment, self.authorize)
        self.on_command(VoidPayment, self.void)
        self.on_event(SagaCompleted, self.completed)
        self.consume("payment.commands", self.handle_command)
        self.consume("payment.events", self.handle_event)

    async def authorize(self, saga_id: str, cmd: AuthorizePayment) -> Message:
        """Authorize unless the rule declines it."""
        doc = await self.payments.authorize(saga_id, cmd)
        if doc.get("status") in ("authorized", "captured") or (
            doc.get("status") == "voided" and doc.get("authorization_id")
        ):
            return PaymentAuthorized(
                order_id=cmd.order_id, authorization_id=doc["authorization_id"]
            )
        return PaymentDeclined(order_id=cmd.order_id, reason=doc.get("reason") or "declined")

    async def void(self, saga_id: str, cmd: VoidPayment) -> Message:
        """Compensation."""
        await self.payments.void(saga_id)
        return PaymentVoided(order_id=cmd.order_id)

    async def completed(self, saga_id: str, event: SagaCompleted) -> None:
        """Capture the authorization."""
        del event
        if await self.payments.capture(saga_id):
            log.debug("payment_captured")


def _now() -> datetime:
    return datetime.now(UTC)


def main() -> None:
    """Entry point ``saga-payment``."""
    run_service(PaymentService)
