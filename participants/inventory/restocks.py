"""The restock ledger: each restock is added to its SKU exactly once, and the records
that make it so live outside the SKU's (hot) document, for a retention.

``inventory_restocks`` has one document per restock id: the SKU, the units, when it was
recorded (a TTL index removes it after the retention) and ``seq``, its position among
the restocks of that SKU (unique per SKU). The SKU's document keeps a single number,
``restock_seq``: how many of its restocks are added. The restock at position k is added
by one conditional update from k - 1 to k, so it is added once however many attempts
race or stall (a stale attempt finds the number past k and stops). An attempt that finds
position k taken by a restock not yet added adds that one first (its units are in the
ledger): a restock recorded by an attempt that then died is added by the next one.

The same update adds the units to ``restocked``, the SKU's cumulative restocked units
(positions ``restocked_since + 1`` to ``restock_seq``), which outlives the records: a
read side rebuilt after the retention counts every restock from it, exactly.

A copy of a restock command delivered after the retention is taken for a new restock:
keep the retention longer than any message can wait in a queue or a dead-letter queue.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from pymongo.errors import DuplicateKeyError, PyMongoError

from orchestrator.errors import StoreUnavailable, TransientError
from participants.kit.retention import ensure_ttl_index

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from pymongo.asynchronous.collection import AsyncCollection
    from pymongo.asynchronous.database import AsyncDatabase

__all__ = ["RESTOCK_RETENTION_SECONDS", "RestockLedger"]

log = structlog.get_logger("inventory")
Doc = dict[str, Any]
T = TypeVar("T")
RESTOCK_RETENTION_SECONDS = 30 * 24 * 3600.0
"""Default of ``INVENTORY_RESTOCK_RETENTION_SECONDS``: how long a restock id is known."""
ROUNDS = 50
"""Positions an attempt may add or wait for before it gives up (transient) and retries."""


class RestockLedger:
    """``inventory_restocks`` and the ``restock_seq`` of each SKU document."""

    def __init__(
        self, *, database: AsyncDatabase[Doc], retention_seconds: float | None = None
    ) -> None:
        self.records = database["inventory_restocks"]
        self.retention = retention_seconds or RESTOCK_RETENTION_SECONDS

    async def ensure_indexes(self) -> None:
        """Unique positions per SKU, and the retention (a TTL index on ``at``)."""
        try:
            await self.records.create_index([("sku", 1), ("seq", 1)], unique=True)
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot create the restock ledger's indexes: {e}") from e
        await ensure_ttl_index(self.records, "at", self.retention)

    async def apply(
        self, stock: AsyncCollection[Doc], *, sku: str, units: int, restock_id: str
    ) -> bool:
        """Record the restock and add its units. True if this call recorded it, False if
        it was recorded before (its units are then added by the time this returns)."""
        for _ in range(ROUNDS):
            applied = await self._applied(stock, sku)
            recorded = await self._record(sku, units, restock_id, seq=applied + 1)
            if recorded is None:  # the position is another restock's: add it first
                await self._add_upto(stock, sku, applied + 1, applied=applied)
                continue
            seq, fresh, first_sku = recorded
            known = applied if first_sku == sku else None
            await self._add_upto(stock, first_sku, seq, applied=known)
            return fresh
        raise TransientError(f"restocks of {sku} keep racing; retrying")

    async def _record(
        self, sku: str, units: int, restock_id: str, *, seq: int
    ) -> tuple[int, bool, str] | None:
        """(position, whether this call recorded it, its SKU), or None if ``seq`` is
        taken by another restock."""
        doc: Doc = {"_id": restock_id, "sku": sku, "units": units, "seq": seq, "at": _now()}
        try:
            await self.records.insert_one(doc)
            return seq, True, sku
        except DuplicateKeyError:
            pass
        except PyMongoError as e:
            raise StoreUnavailable(f"inventory write failed: {e}") from e
        known = await _call(self.records.find_one({"_id": restock_id}))
        if known is None:
            return None
        if known["sku"] != sku:  # one id for two SKUs: the first one counts
            log.warning("restock_id_reused", restock_id=restock_id, sku=sku, first=known["sku"])
        return int(known["seq"]), False, str(known["sku"])

    async def _add_upto(
        self, stock: AsyncCollection[Doc], sku: str, seq: int, *, applied: int | None
    ) -> None:
        """Add every restock of ``sku`` up to position ``seq``, in order."""
        for _ in range(ROUNDS):
            if applied is None:
                applied = await self._applied(stock, sku)
            if applied >= seq:
                return
            position = applied + 1
            record = await _call(self.records.find_one({"sku": sku, "seq": position}))
            units = int(record["units"]) if record else 0
            if record is None:  # recorded, never added, and expired: nothing to add
                log.error("restock_position_lost", sku=sku, seq=position)
            applied = position if await self._add(stock, sku, position, units) else None
        raise TransientError(f"restocks of {sku} keep racing; retrying")

    async def _add(self, stock: AsyncCollection[Doc], sku: str, seq: int, units: int) -> bool:
        """Position ``seq - 1`` -> ``seq``, adding ``units``; False if it was not at
        ``seq - 1`` (another attempt added it, or an earlier one is missing)."""
        before: Doc = {"restock_seq": seq - 1}
        if seq == 1:  # stock documents written before the ledger have no number yet
            before = {"$or": [{"restock_seq": 0}, {"restock_seq": {"$exists": False}}]}
        result = await _call(
            stock.update_one(
                {"_id": sku, **before},
                {
                    "$inc": {"available": units, "restocked": units},
                    "$set": {"restock_seq": seq},
                    # The first position counted in ``restocked`` is since + 1 (a SKU
                    # restocked before the count existed has earlier positions).
                    "$min": {"restocked_since": seq - 1},
                },
            )
        )
        if result.modified_count == 1:
            return True
        if seq != 1:
            return False
        try:  # a SKU seen for the first time
            await stock.insert_one(
                {
                    "_id": sku,
                    "available": units,
                    "reserved": 0,
                    "shipped": 0,
                    "holds": {},
                    "restock_seq": 1,
                    "restocked": units,
                    "restocked_since": 0,
                }
            )
            return True
        except DuplicateKeyError:
            return False
        except PyMongoError as e:
            raise StoreUnavailable(f"inventory write failed: {e}") from e

    async def _applied(self, stock: AsyncCollection[Doc], sku: str) -> int:
        doc = await _call(stock.find_one({"_id": sku}, {"restock_seq": 1}))
        return int((doc or {}).get("restock_seq", 0))


async def _call(op: Awaitable[T]) -> T:
    """Await a store operation; a store failure is transient."""
    try:
        return await op
    except PyMongoError as e:
        raise StoreUnavailable(f"inventory store failed: {e}") from e


def _now() -> datetime:
    return datetime.now(UTC)
