"""The sweeper: holds that nothing will ever come back for are given back (or shipped).

The fence leaves every hold to be settled by whoever made it or by the next copy of a
command. A copy that never comes back (its delivery dead-lettered, then discarded by an
operator) can leave, after the reservation is decided:

* a hold that a late reserve attempt made after the decision, before the process died
  and before its insert could fail (after a ship or a release, or beside a failed one);
* the holds a release or a ship had not moved yet when it was cut short.

Once a reservation is decided the fate of each such hold is certain
(``participants.inventory.holds.fate``): a hold a ``reserved`` reservation counts on is
the order's stock (left alone), one a ``shipped`` reservation counts on is shipped, and
any other hold of a decided reservation goes back to available stock. A hold with no
decision yet may still win, and is left alone: the saga's resend counts on it, or its
ReleaseStock gives it back from the order's lines. A reserve that finds a SKU short
sweeps that SKU the same way before it refuses (see ``MongoInventory._hold``).

Each move is the store's conditional move of exactly that hold (its units and token), so
the sweeper racing a release, a ship, a late attempt or another instance's sweeper moves
each hold once. It reads only SKUs with ``reserved > 0`` (holds add up to ``reserved``),
and one query of reservations per such SKU: a background cost per pass, none per saga.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog
from pymongo.errors import PyMongoError

from orchestrator.errors import StoreUnavailable, TransientError
from participants.inventory.holds import fate, hold_token, hold_units

if TYPE_CHECKING:
    from collections.abc import Mapping

    from participants.inventory.store import MongoInventory

__all__ = ["SWEEP_SECONDS", "HoldSweeper", "sweep_sku"]

log = structlog.get_logger("inventory")
Doc = dict[str, Any]
SWEEP_SECONDS = 60.0
"""Default of ``INVENTORY_SWEEP_SECONDS``: the time between two passes."""


class HoldSweeper:
    """Settles the holds of decided reservations that no command will settle."""

    def __init__(self, *, inventory: MongoInventory, interval: float = SWEEP_SECONDS) -> None:
        self.inventory = inventory
        self.interval = interval
        self.swept = 0

    async def sweep(self) -> int:
        """One pass over the SKUs with reserved units; how many holds it moved."""
        moved = 0
        try:
            async for doc in self.inventory.stock.find({"reserved": {"$gt": 0}}, {"holds": 1}):
                moved += await sweep_sku(self.inventory, str(doc["_id"]), doc.get("holds") or {})
        except PyMongoError as e:
            raise StoreUnavailable(f"inventory sweep failed: {e}") from e
        self.swept += moved
        return moved

    async def run(self) -> None:
        """Sweep every ``interval`` seconds until cancelled (a failed pass is logged)."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except TransientError as e:
                log.warning("inventory_sweep_failed", error=str(e))
            except Exception:  # keep sweeping whatever happened; it is logged
                log.exception("inventory_sweep_crashed")


async def sweep_sku(inventory: MongoInventory, sku: str, holds: Mapping[str, Any]) -> int:
    """Settle the holds of ``sku`` (as read) whose fate is certain; how many moved."""
    if not holds:
        return 0
    found = inventory.reservations.find({"_id": {"$in": list(holds)}}, {"status": 1, "lines": 1})
    try:
        decided = {doc["_id"]: doc async for doc in found}
    except PyMongoError as e:
        raise StoreUnavailable(f"inventory read failed: {e}") from e
    moved = 0
    for saga_id, hold in holds.items():
        units, token = hold_units(hold), hold_token(hold)
        to = fate(decided.get(saga_id), sku, token)
        if to is not None and await inventory._move(saga_id, sku, units, to=to, token=token):
            moved += 1
            log.warning("stray_hold_swept", saga_id=saga_id, sku=sku, units=units, to=to)
    return moved
