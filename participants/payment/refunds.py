"""Refunds for the order-return saga: at most what was captured, idempotent per return.

``payment_refunds`` holds one ledger document per order (``_id`` = the order's saga id):
what was captured, what is still refundable, and per return saga its refund
(``refunds.<id>``), its refusal (``refused.<id>``) or its cancellation
(``cancelled.<id>``). A refund is one conditional update of that document: it checks
that enough is refundable and that the return has no mark yet, lowers the refundable
amount and marks the refund at once, so two refunds of one order can never add up to
more than was captured, and a repeated command finds its mark and repeats its reply.

A refusal answers the command it refused (``refused_by.<id>``, its message id): a
redelivery of that command, or a late copy of an earlier round, is refused again, but a
new round of the step (order return v2 parks a refused refund; an operator resumes it
once the cause is fixed, and the refund comes with a message id of its own) lifts the
refusal and is evaluated afresh.
v1 returns never send a second round: a refusal they compensated stays final.

The captured amount is read from the order's authorization (``payment_authorizations``)
the first time the order is refunded: so a captured payment never expires. Nor does a
ledger: what is still refundable is the order's money, and its marks are few (one per
return of that order), so it has no retention.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError, PyMongoError

from contracts import CancelRefund, PaymentRefunded, RefundCancelled, RefundPayment, RefundRefused
from orchestrator.errors import StoreUnavailable, TransientError
from orchestrator.saga.decide import command_round
from participants.kit.service import current_envelope

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from contracts import Message
    from participants.kit.service import ParticipantService

__all__ = ["CapturePending", "RefundLedger", "RefundOutcome", "register_refunds"]

Doc = dict[str, Any]


class CapturePending(TransientError):
    """The order's payment is authorized but not captured yet (its capture follows the
    order saga's completion): retry until it is."""


@dataclass(frozen=True)
class RefundOutcome:
    """What a refund came to."""

    refunded: bool
    reason: str = ""


class RefundLedger:
    """Refunds per order, against the order's captured payment."""

    def __init__(self, *, database: AsyncDatabase[Doc]) -> None:
        self.ledgers = database["payment_refunds"]
        self.authorizations = database["payment_authorizations"]

    async def refund(
        self, return_saga: str, cmd: RefundPayment, *, command_id: str = ""
    ) -> RefundOutcome:
        """Refund once, if that much of the capture is still refundable. ``command_id``
        is the message id of the command: a refusal of another one (an earlier round)
        is lifted and the refund asked again."""
        ledger = await self.ledger(cmd.order_saga_id)
        if ledger is not None and (known := _marked(ledger, return_saga)) is not None:
            if not await self._lift_refusal(ledger, return_saga, command_id):
                return known
            ledger = await self.ledger(cmd.order_saga_id)
        refuse = partial(self._refuse, return_saga, cmd.order_saga_id, command_id=command_id)
        if ledger is None or "refundable_cents" not in ledger:
            reason = await self._open(cmd)
            if reason:
                return await refuse(reason)
            ledger = await self.ledger(cmd.order_saga_id)
        if ledger is not None and ledger.get("currency") != cmd.currency:
            reason = f"the order was paid in {ledger.get('currency')}, not {cmd.currency}"
            return await refuse(reason)
        ours = _marks(return_saga)
        done = await self._op(
            self.ledgers.update_one(
                {
                    "_id": cmd.order_saga_id,
                    "refundable_cents": {"$gte": cmd.amount_cents},
                    **{m: {"$exists": False} for m in ours},
                },
                {
                    "$inc": {"refundable_cents": -cmd.amount_cents},
                    "$set": {ours[0]: cmd.amount_cents},
                },
            )
        )
        if done.modified_count == 1:
            return RefundOutcome(refunded=True)
        left = (await self.ledger(cmd.order_saga_id) or {}).get("refundable_cents", 0)
        reason = f"{cmd.amount_cents} cents asked, {left} of the captured payment refundable"
        return await refuse(reason)

    async def cancel(self, return_saga: str, order_saga: str) -> None:
        """Cancel this return's refund: marked cancelled first (no refund can follow),
        then a recorded refund is reversed. Safe to repeat, and before the refund."""
        await self._ensure_ledger(order_saga)
        await self._op(
            self.ledgers.update_one(
                {"_id": order_saga}, {"$set": {f"cancelled.{return_saga}": "cancelled"}}
            )
        )
        ledger = await self.ledger(order_saga) or {}
        amount = (ledger.get("refunds") or {}).get(return_saga)
        if amount is None:
            return
        await self._op(
            self.ledgers.update_one(
                {"_id": order_saga, f"refunds.{return_saga}": amount},
                {
                    "$inc": {"refundable_cents": amount},
                    "$unset": {f"refunds.{return_saga}": ""},
                    "$set": {f"reversed.{return_saga}": amount},
                },
            )
        )

    async def ledger(self, order_saga: str) -> Doc | None:
        """The order's refund ledger, if any."""
        found: Doc | None = await self._op(self.ledgers.find_one({"_id": order_saga}))
        return found

    async def _open(self, cmd: RefundPayment) -> str:
        """Give the order's ledger its captured amount; '' if done, else why not."""
        payment: Doc | None = await self._op(
            self.authorizations.find_one({"_id": cmd.order_saga_id})
        )
        status = payment.get("status") if payment else None
        if payment is None or status != "captured":
            if status == "authorized":
                raise CapturePending(f"payment of order saga {cmd.order_saga_id} not captured yet")
            return f"order saga {cmd.order_saga_id} has no captured payment ({status or 'none'})"
        captured = int(payment.get("amount_cents", 0))
        currency = str(payment.get("currency") or "EUR")
        try:
            await self.ledgers.insert_one(
                {
                    **_empty(cmd.order_saga_id),
                    "captured_cents": captured,
                    "refundable_cents": captured,
                    "currency": currency,
                }
            )
            return ""
        except DuplicateKeyError:
            pass
        except PyMongoError as e:
            raise StoreUnavailable(f"payment write failed: {e}") from e
        await self._op(  # the ledger was opened by a cancel, without amounts
            self.ledgers.update_one(
                {"_id": cmd.order_saga_id, "refundable_cents": {"$exists": False}},
                {
                    "$set": {
                        "captured_cents": captured,
                        "refundable_cents": captured,
                        "currency": currency,
                    }
                },
            )
        )
        return ""

    async def _ensure_ledger(self, order_saga: str) -> None:
        try:
            await self.ledgers.insert_one(_empty(order_saga))
        except DuplicateKeyError:
            pass
        except PyMongoError as e:
            raise StoreUnavailable(f"payment write failed: {e}") from e

    async def _lift_refusal(self, ledger: Doc, return_saga: str, command_id: str) -> bool:
        """Whether the return's mark is a refusal of an earlier round than
        ``command_id``'s (then it is removed, unless a concurrent command changed it
        first). A late copy of an earlier round leaves a newer refusal alone: its reply
        has the id of the one the orchestrator already took, so a refund it made would
        move money behind a saga parked on the refusal."""
        refused_by = (ledger.get("refused_by") or {}).get(return_saga)
        refused = return_saga in (ledger.get("refused") or {})
        if not (refused and command_id and refused_by):
            return False
        if command_round(command_id) <= command_round(refused_by):
            return False
        await self._op(
            self.ledgers.update_one(
                {"_id": ledger["_id"], f"refused_by.{return_saga}": refused_by},
                {"$unset": {f"refused.{return_saga}": "", f"refused_by.{return_saga}": ""}},
            )
        )
        return True

    async def _refuse(
        self, return_saga: str, order_saga: str, reason: str, *, command_id: str = ""
    ) -> RefundOutcome:
        """Record the refusal (and the command it answers) unless the return already
        has a mark; the mark it has."""
        await self._ensure_ledger(order_saga)
        refusal = {f"refused.{return_saga}": reason}
        if command_id:
            refusal[f"refused_by.{return_saga}"] = command_id
        await self._op(
            self.ledgers.update_one(
                {"_id": order_saga, **{m: {"$exists": False} for m in _marks(return_saga)}},
                {"$set": refusal},
            )
        )
        ledger = await self.ledger(order_saga)
        known = _marked(ledger or {}, return_saga)
        if known is None:
            raise TransientError(f"refund {return_saga} left no mark; retrying")
        return known

    async def _op(self, op: Any) -> Any:
        try:
            return await op
        except PyMongoError as e:
            raise StoreUnavailable(f"payment store failed: {e}") from e


def _marks(return_saga: str) -> tuple[str, str, str]:
    return (f"refunds.{return_saga}", f"refused.{return_saga}", f"cancelled.{return_saga}")


def _marked(ledger: Doc, return_saga: str) -> RefundOutcome | None:
    if return_saga in (ledger.get("refunds") or {}):
        return RefundOutcome(refunded=True)
    if return_saga in (ledger.get("refused") or {}):
        return RefundOutcome(refunded=False, reason=str(ledger["refused"][return_saga]))
    if return_saga in (ledger.get("cancelled") or {}):
        return RefundOutcome(refunded=False, reason="the refund was cancelled")
    return None


def _empty(order_saga: str) -> Doc:
    return {"_id": order_saga, "refunds": {}, "refused": {}, "cancelled": {}, "reversed": {}}


def register_refunds(service: ParticipantService) -> RefundLedger:
    """Handle the return saga's payment commands in ``service``."""
    ledger = RefundLedger(database=service.db)

    async def refund(saga_id: str, cmd: RefundPayment) -> Message:
        outcome = await ledger.refund(saga_id, cmd, command_id=current_envelope().message_id)
        if outcome.refunded:
            return PaymentRefunded(return_id=cmd.return_id, refund_id=f"refund-{saga_id}")
        return RefundRefused(return_id=cmd.return_id, reason=outcome.reason)

    async def cancel(saga_id: str, cmd: CancelRefund) -> Message:
        await ledger.cancel(saga_id, cmd.order_saga_id)
        return RefundCancelled(return_id=cmd.return_id)

    service.on_command(
        RefundPayment,
        refund,
        refusal=lambda c, reason: RefundRefused(return_id=c.return_id, reason=reason),
    )
    service.on_command(CancelRefund, cancel)
    return ledger
