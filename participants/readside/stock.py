"""The stock-level projection: available, reserved and shipped per SKU.

Built from two kinds of facts, each stored as one row keyed by its origin so that a
redelivered event changes nothing:

* a restock (``inventory.restocked``): a row per restock id with its units;
* a saga's stock state (``saga.progressed``): a row per saga with its order lines and
  whether its units are ``reserved``, ``shipped`` or ``none``, written only by a newer
  version than the row holds.

Levels are summed from the rows when read, so they are exact whatever the order in which
events arrive: available = restocked - reserved - shipped.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError, PyMongoError

from orchestrator.errors import StoreUnavailable

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from contracts import InventoryRestocked, SagaProgressed

__all__ = ["StockLevels", "StockProjection", "stock_state"]

Doc = dict[str, Any]


@dataclass(frozen=True)
class StockLevels:
    """One SKU as the read side sees it."""

    sku: str
    available: int
    reserved: int
    shipped: int


def stock_state(event: SagaProgressed) -> str | None:
    """What this commit did to the saga's units, or None if it did not touch them."""
    state = None
    for e in event.events:
        if e.type == "step_succeeded" and e.step == "reserve_stock":
            state = "reserved"
        elif (
            e.type in ("step_compensated", "late_success_compensating")
            and e.step == "reserve_stock"
        ):
            state = "none"
        elif e.type == "saga_completed":
            state = "shipped"
    return state


class StockProjection:
    """``readside_stock_sagas`` and ``readside_restocks``."""

    def __init__(self, *, database: AsyncDatabase[Doc]) -> None:
        self.sagas = database["readside_stock_sagas"]
        self.restocks = database["readside_restocks"]

    async def apply_saga(self, saga_id: str, event: SagaProgressed) -> bool:
        """Record the saga's stock state if this event changes it; False if it does not
        or a newer version is already recorded."""
        state = stock_state(event)
        if state is None:
            return False
        lines = [{"sku": x["sku"], "quantity": x["quantity"]} for x in event.start.get("lines", [])]
        try:
            result = await self.sagas.update_one(
                {"_id": saga_id, "version": {"$lt": event.version}},
                {"$set": {"version": event.version, "state": state, "lines": lines}},
                upsert=True,
            )
        except DuplicateKeyError:
            return False  # a newer version is recorded
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot update stock projection: {e}") from e
        return result.modified_count == 1 or result.upserted_id is not None

    async def apply_restock(self, event: InventoryRestocked) -> bool:
        """Record a restock once."""
        try:
            await self.restocks.insert_one(
                {"_id": event.restock_id, "sku": event.sku, "units": event.units}
            )
        except DuplicateKeyError:
            return False
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot record restock: {e}") from e
        return True

    async def levels(self, skus: list[str] | None = None) -> dict[str, StockLevels]:
        """Levels of these SKUs (all known SKUs if None)."""
        base: dict[str, int] = defaultdict(int)
        held: dict[str, dict[str, int]] = defaultdict(lambda: {"reserved": 0, "shipped": 0})
        restock_query: Doc = {"sku": {"$in": skus}} if skus else {}
        saga_query: Doc = {"state": {"$in": ["reserved", "shipped"]}}
        if skus:  # $or of equalities: the embedded dev server cannot $in over array paths
            saga_query["$or"] = [{"lines.sku": sku} for sku in skus]
        try:
            async for doc in self.restocks.find(restock_query, {"sku": 1, "units": 1}):
                base[doc["sku"]] += doc["units"]
            async for doc in self.sagas.find(saga_query, {"state": 1, "lines": 1}):
                for line in doc["lines"]:
                    held[line["sku"]][doc["state"]] += line["quantity"]
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot read stock projection: {e}") from e
        names = skus if skus else sorted(set(base) | set(held))
        return {
            sku: StockLevels(
                sku=sku,
                reserved=held[sku]["reserved"],
                shipped=held[sku]["shipped"],
                available=base[sku] - held[sku]["reserved"] - held[sku]["shipped"],
            )
            for sku in names
        }
