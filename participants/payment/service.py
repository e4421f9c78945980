"""The payment service. One document per saga is both the effect and its idempotency
record: inserting it is the authorization, so a duplicate command finds it and repeats
the same reply. Each command settles in one write: authorize inserts, void and capture
are one conditional ``find_one_and_update`` (a repeat then reads what is stored).

Capture comes as the ``CapturePayment`` command (a retriable step after the pivot, order
fulfilment v2) and, for the sagas that completed without that step (v1, the parallel
variant), as the reaction to ``SagaCompleted``: either way the authorized -> captured
transition happens once (one conditional update; a repeat finds it captured).

Retention. A voided or declined payment (and a void's marker) is final: the write that
makes it so sets ``settled_at``, and a TTL index removes it after
``PARTICIPANT_RECORD_RETENTION_SECONDS`` (``participants.kit.retention``). An authorized
payment still waits for its capture or void and never expires, nor does a captured one:
a refund of the order reads the captured amount from it (``participants.payment.refunds``)
whenever the return comes. A copy of an AuthorizePayment delivered after its record
expired authorizes again, and nothing voids it; a VoidPayment copy leaves a marker."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from contracts import (
    AuthorizePayment,
    CapturePayment,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentDeclined,
    PaymentVoided,
    SagaCompleted,
    VoidPayment,
)
from contracts.base import Message
from orchestrator.errors import StoreUnavailable, TransientError
from orchestrator.runtime.host import run_service
from orchestrator.settings import env_int
from orchestrator.store.writes import DocumentWrites
from participants.kit.retention import (
    RECORD_RETENTION_SECONDS,
    SETTLE,
    SETTLED_AT,
    ensure_ttl_index,
    record_retention,
)
from participants.kit.service import ParticipantService
from participants.kit.writes import write_window
from participants.order_outcomes import done_by_step
from participants.payment.refunds import RefundLedger, register_refunds

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

__all__ = ["MongoPayments", "PaymentService", "PaymentStateError", "main"]

log = structlog.get_logger("payment")
DECLINE_ABOVE_CENTS = 500_000
"""Default of ``PAYMENT_DECLINE_ABOVE_CENTS``: larger amounts are declined."""
Doc = dict[str, Any]


class MongoPayments:
    """``payment_authorizations``: one document per saga, status
    authorized -> captured | voided, or declined, or voided before it was authorized."""

    def __init__(
        self,
        *,
        database: AsyncDatabase[Doc],
        decline_above_cents: int,
        retention_seconds: float | None = None,
        write_window: float = 0.0,
    ) -> None:
        self.authorizations = database["payment_authorizations"]
        self.authorization_writes = DocumentWrites(self.authorizations, window=write_window)
        self.decline_above_cents = decline_above_cents
        self.retention = retention_seconds or RECORD_RETENTION_SECONDS

    async def ensure_indexes(self) -> None:
        """The retention of voided and declined payments (a TTL index on ``settled_at``)."""
        await ensure_ttl_index(self.authorizations, SETTLED_AT, self.retention)

    async def authorize(self, saga_id: str, cmd: AuthorizePayment) -> Doc:
        """Authorize or decline once; later calls return the stored outcome."""
        declined = cmd.amount_cents > self.decline_above_cents
        now = _now()
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
            "updated_at": now,
        }
        if declined:
            doc[SETTLED_AT] = now
        try:
            await self.authorization_writes.insert(doc)
            return doc
        except DuplicateKeyError:
            return await self._get(saga_id)
        except PyMongoError as e:
            raise StoreUnavailable(f"payment write failed: {e}") from e

    async def void(self, saga_id: str) -> None:
        """Void the authorization if there is one; otherwise leave a voided marker so a
        late authorization is declined. Safe to repeat."""
        now = _now()
        try:
            voided = await self.authorizations.find_one_and_update(
                {"_id": saga_id, "status": "authorized"},
                {"$set": {"status": "voided", "updated_at": now}, **SETTLE},
            )
            if voided is not None:
                return
            await self.authorization_writes.insert(
                {
                    "_id": saga_id,
                    "status": "voided",
                    "amount_cents": 0,
                    "reason": "voided before it was authorized",
                    "updated_at": now,
                    SETTLED_AT: now,
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

    async def capture(self, saga_id: str) -> Doc:
        """Capture the authorization, once; the payment document as it is now. A repeat
        finds it captured. Raises PaymentStateError if there is nothing to capture
        (declined, voided, or no authorization at all)."""
        try:
            doc = await self.authorizations.find_one_and_update(
                {"_id": saga_id, "status": "authorized"},
                {
                    "$set": {
                        "status": "captured",
                        "capture_id": f"cap-{saga_id}",
                        "updated_at": _now(),
                    }
                },
                return_document=ReturnDocument.AFTER,
            )
        except PyMongoError as e:
            raise StoreUnavailable(f"payment write failed: {e}") from e
        if doc is not None:
            return doc
        found = await self.get(saga_id)
        if found is None or found["status"] != "captured":
            status = found["status"] if found else "absent"
            raise PaymentStateError(f"saga {saga_id}: cannot capture a payment that is {status}")
        return found

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
    """A command asked for something the payment's state forbids (void a captured
    payment, capture a voided one): retried, then dead-lettered with this reason."""


class PaymentService(ParticipantService):
    """Consumes ``<ns>.payment.commands`` and ``<ns>.payment.events``."""

    service = "payment"
    _payments: MongoPayments | None = None
    refunds: RefundLedger
    """Refunds of the order-return saga (after start)."""

    @property
    def payments(self) -> MongoPayments:
        """The payment store (after start)."""
        assert self._payments is not None, "start() the service first"
        return self._payments

    async def setup(self) -> None:
        """Register handlers and consumers."""
        env = self.settings.env()
        self._payments = MongoPayments(
            database=self.db,
            decline_above_cents=env_int(env, "PAYMENT_DECLINE_ABOVE_CENTS", DECLINE_ABOVE_CENTS),
            retention_seconds=record_retention(env),
            write_window=write_window(env),
        )
        await self._payments.ensure_indexes()
        self.on_command(
            AuthorizePayment,
            self.authorize,
            refusal=lambda c, reason: PaymentDeclined(order_id=c.order_id, reason=reason),
        )
        self.on_command(VoidPayment, self.void)
        self.refunds = register_refunds(self)
        self.on_command(CapturePayment, self.capture)
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

    async def capture(self, saga_id: str, cmd: CapturePayment) -> Message:
        """Retriable step: capture the authorization, once."""
        doc = await self.payments.capture(saga_id)
        return PaymentCaptured(
            order_id=cmd.order_id,
            capture_id=doc.get("capture_id") or f"cap-{saga_id}",
            amount_cents=doc.get("amount_cents", 0),
        )

    async def completed(self, saga_id: str, event: SagaCompleted) -> None:
        """Capture the authorization of a saga that completed without its own capture
        step (order fulfilment v1, the parallel variant); a saga whose capture_payment
        step already captured is left alone without a store access (see
        :mod:`participants.order_outcomes`). A saga that completed without an
        authorization left to capture is logged."""
        if done_by_step(event, "capture_payment"):
            return
        try:
            await self.payments.capture(saga_id)
        except PaymentStateError as e:
            log.warning("payment_not_captured", error=str(e))


def _now() -> datetime:
    return datetime.now(UTC)


def main() -> None:
    """Entry point ``saga-payment``."""
    run_service(PaymentService)
