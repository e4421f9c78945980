"""Returns in MongoDB, idempotent per return saga, one return per order, no transactions.

``returns_decisions`` holds one document per return saga: its outcome (accepted,
refused, cancelled) and the reason, so a repeated command gets the same reply.
``returns_orders`` holds one document per returned order, the claim: its ``_id`` is the
order's saga id, so of two returns of one order only one can insert it. A cancelled
return gives its claim up, and the order may then be returned again.

Every write is one insert or one conditional update of one document. The decision is
written last when accepting and first when cancelling, so whichever of a duplicate
accept and a cancel runs late sees the other's outcome and gives its claim back.

Retention. Every decision is final when written and gets ``settled_at``; a TTL index
removes it after ``PARTICIPANT_RECORD_RETENTION_SECONDS`` (``participants.kit.retention``).
None is live: CancelReturn needs nothing from it (it finds the claim by the order and
leaves its marker), and an AcceptReturn copy after the retention finds its own claim and
is accepted again, or refused if the order can no longer be returned (its window
closed, its saga was pruned): it then gives the claim up, when no return of that order
can be accepted any more anyway. The claims are kept: one return per order is the
business rule, and they grow with returns, not with orders.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError, PyMongoError

from orchestrator.errors import StoreUnavailable, TransientError
from orchestrator.store.mongo import MongoSagaStore
from participants.kit.retention import (
    RECORD_RETENTION_SECONDS,
    SETTLE,
    SETTLED_AT,
    ensure_ttl_index,
)

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from contracts import AcceptReturn
    from participants.returns.policy import ReturnPolicy

__all__ = ["Decision", "MongoReturns"]

Doc = dict[str, Any]


@dataclass(frozen=True)
class Decision:
    """What a return came to."""

    accepted: bool
    reason: str = ""


class MongoReturns:
    """The returns service's data, and its read of the order sagas."""

    def __init__(
        self,
        *,
        database: AsyncDatabase[Doc],
        policy: ReturnPolicy,
        retention_seconds: float | None = None,
    ) -> None:
        self.decisions = database["returns_decisions"]
        self.orders = database["returns_orders"]
        self.sagas = MongoSagaStore(database=database)
        self.policy = policy
        self.retention = retention_seconds or RECORD_RETENTION_SECONDS

    async def ensure_indexes(self) -> None:
        """The retention of decisions (a TTL index on ``settled_at``); claims are kept."""
        await ensure_ttl_index(self.decisions, SETTLED_AT, self.retention)

    async def accept(self, return_saga: str, cmd: AcceptReturn) -> Decision:
        """Accept once if the policy allows it and no other return holds the order; a
        repeated call returns the first outcome."""
        known = await self.decision(return_saga)
        if known is not None:
            if known["status"] != "accepted":
                await self._release(return_saga, cmd.order_saga_id)
            return _decision(known)
        order = await self.sagas.history(cmd.order_saga_id)
        reason = self.policy.refusal(order, cmd, now=datetime.now(UTC))
        if not reason:
            reason = await self._claim(return_saga, cmd.order_saga_id)
        final = await self._decide(return_saga, cmd.order_saga_id, reason)
        if final["status"] != "accepted":  # refused, or cancelled while we worked
            await self._release(return_saga, cmd.order_saga_id)
        return _decision(final)

    async def cancel(self, return_saga: str, order_saga: str) -> None:
        """Withdraw the return: its decision becomes cancelled (also before it was
        accepted, so a late accept is refused), then its claim on the order goes."""
        known = await self.decision(return_saga)
        if known is None:
            try:
                await self.decisions.insert_one(
                    _decision_doc(return_saga, order_saga, "cancelled", "cancelled before it ran")
                )
            except DuplicateKeyError:
                known = await self.decision(return_saga)
            except PyMongoError as e:
                raise StoreUnavailable(f"returns write failed: {e}") from e
        if known is not None and known["status"] != "cancelled":
            done = await self._write(
                self.decisions.update_one(
                    {"_id": return_saga, "status": known["status"]},
                    {"$set": {"status": "cancelled"}, **SETTLE},
                )
            )
            if done.matched_count == 0:
                raise TransientError(f"return {return_saga} changed during its cancel; retrying")
        await self._release(return_saga, order_saga)

    async def decision(self, return_saga: str) -> Doc | None:
        """The return saga's decision document, if any."""
        found: Doc | None = await self._write(self.decisions.find_one({"_id": return_saga}))
        return found

    async def claim_of(self, order_saga: str) -> Doc | None:
        """The order's return claim, if any (``return_saga_id``, ``status``)."""
        found: Doc | None = await self._write(self.orders.find_one({"_id": order_saga}))
        return found

    async def _claim(self, return_saga: str, order_saga: str) -> str:
        """Take the order for this return; '' if taken, else why not."""
        try:
            await self.orders.insert_one(
                {"_id": order_saga, "return_saga_id": return_saga, "status": "accepted"}
            )
            return ""
        except DuplicateKeyError:
            pass
        except PyMongoError as e:
            raise StoreUnavailable(f"returns write failed: {e}") from e
        claim = await self.claim_of(order_saga)
        if claim is None:
            raise TransientError(f"claim on order {order_saga} vanished; retrying")
        if claim["return_saga_id"] == return_saga:
            return ""  # ours, from an attempt interrupted before its decision
        if claim["status"] == "cancelled":  # an earlier return was undone: take it over
            taken = await self._write(
                self.orders.update_one(
                    {
                        "_id": order_saga,
                        "status": "cancelled",
                        "return_saga_id": claim["return_saga_id"],
                    },
                    {"$set": {"return_saga_id": return_saga, "status": "accepted"}},
                )
            )
            if taken.modified_count == 1:
                return ""
            raise TransientError(f"claim on order {order_saga} changed; retrying")
        return (
            f"order saga {order_saga} is already returned (return saga {claim['return_saga_id']})"
        )

    async def _decide(self, return_saga: str, order_saga: str, reason: str) -> Doc:
        """Record the outcome once; the stored one if another worker recorded it first."""
        doc = _decision_doc(return_saga, order_saga, "refused" if reason else "accepted", reason)
        try:
            await self.decisions.insert_one(doc)
            return doc
        except DuplicateKeyError:
            pass
        except PyMongoError as e:
            raise StoreUnavailable(f"returns write failed: {e}") from e
        stored = await self.decision(return_saga)
        if stored is None:
            raise TransientError(f"decision of return {return_saga} vanished; retrying")
        return stored

    async def _release(self, return_saga: str, order_saga: str) -> None:
        """Give up this return's claim on the order, if it holds it. Safe to repeat."""
        await self._write(
            self.orders.update_one(
                {"_id": order_saga, "return_saga_id": return_saga, "status": "accepted"},
                {"$set": {"status": "cancelled"}},
            )
        )

    async def _write(self, op: Any) -> Any:
        try:
            return await op
        except PyMongoError as e:
            raise StoreUnavailable(f"returns store failed: {e}") from e


def _decision_doc(return_saga: str, order_saga: str, status: str, reason: str) -> Doc:
    now = datetime.now(UTC)
    return {
        "_id": return_saga,
        "order_saga_id": order_saga,
        "status": status,
        "reason": reason,
        "decided_at": now,
        SETTLED_AT: now,
    }


def _decision(doc: Doc) -> Decision:
    if doc["status"] == "accepted":
        return Decision(accepted=True)
    reason = doc.get("reason") or ""
    if doc["status"] == "cancelled":
        reason = f"the return was cancelled ({reason})" if reason else "the return was cancelled"
    return Decision(accepted=False, reason=reason)
