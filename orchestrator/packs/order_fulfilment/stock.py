"""The stock-level projection: available, reserved and shipped per SKU.

Reads cost one document per SKU, however many sagas there were: each SKU has a totals
document (``readside_stock_levels``: restocked, reserved, shipped; available is
restocked - reserved - shipped). The totals change only through guarded movements
(:mod:`orchestrator.readside.counters`), so they are exact under redelivery, reordering
and crashes:

* a restock (``inventory.restocked``) is guarded by a row per restock id
  (``readside_restocks``): its first insert wins and adds the units once;
* a saga's stock state (``saga.progressed``) is guarded by a row per saga
  (``readside_stock_sagas``: its order lines and whether its units are ``reserved``,
  ``shipped`` or ``none``), replaced only by a newer version than it holds; the write
  that moves it from one state to another moves the difference between the two in the
  totals (reserved -> shipped: -n reserved, +n shipped). An older event arriving after
  a newer one changes nothing;
* a return's take-back (``order_return.progressed``: its ``take_back_stock`` step
  succeeded, or was compensated) is a saga row like an order's, in the state
  ``taken_back`` (its units count -n shipped, so +n available) or ``none``: the same
  guard makes it count once, and its undo take it back once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError, PyMongoError

from orchestrator.errors import StoreUnavailable, TransientError
from orchestrator.readside.counters import Counters, Movement
from orchestrator.readside.remembered import Remembered
from orchestrator.runtime.locks import KeyedLocks
from orchestrator.store.writes import DocumentWrites

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from contracts import InventoryRestocked, SagaProgressed

__all__ = ["RETURN_SAGAS", "TAKE_BACK_STEP", "StockLevels", "StockProjection", "stock_state"]

Doc = dict[str, Any]
ATTEMPTS = 20
"""Conditional writes lost to concurrent writers before a handler gives up (retried)."""
RETURN_SAGAS = ("order_return",)
"""Sagas that take shipped units back into stock (the order-return pack's), by name."""
TAKE_BACK_STEP = "take_back_stock"
"""Their step that moves units from shipped to available (undone by its compensation)."""


@dataclass(frozen=True)
class StockLevels:
    """One SKU as the read side sees it."""

    sku: str
    available: int
    reserved: int
    shipped: int


def stock_state(event: SagaProgressed) -> str | None:
    """What this commit did to the saga's units, or None if it did not touch them."""
    if event.saga_name in RETURN_SAGAS:
        return _take_back_state(event)
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


def _take_back_state(event: SagaProgressed) -> str | None:
    """What a return saga's commit did to the units it takes back: ``taken_back`` once
    the inventory took them back, ``none`` once that is (or is being) undone."""
    state = None
    for e in event.events:
        if e.step != TAKE_BACK_STEP:
            continue
        if e.type == "step_succeeded":
            state = "taken_back"
        elif e.type in ("step_compensated", "late_success_compensating"):
            state = "none"
    return state


def _held(state: str, lines: list[Doc]) -> dict[str, dict[str, int]]:
    """The units a saga in ``state`` counts in each SKU's totals: a take-back counts its
    units as no longer shipped (available is restocked - reserved - shipped)."""
    if state == "taken_back":
        return {line["sku"]: {"shipped": -int(line["quantity"])} for line in lines}
    if state not in ("reserved", "shipped"):
        return {}
    return {line["sku"]: {state: int(line["quantity"])} for line in lines}


def saga_movement(saga_id: str, version: int, old: str, new: str, lines: list[Doc]) -> Movement:
    """The change of the totals when a saga's units go from ``old`` to ``new``."""
    before, after = _held(old, lines), _held(new, lines)
    increments: dict[str, dict[str, float]] = {}
    for sku in {*before, *after}:
        fields = {
            field: after.get(sku, {}).get(field, 0) - before.get(sku, {}).get(field, 0)
            for field in ("reserved", "shipped")
        }
        increments[sku] = {f: n for f, n in fields.items() if n}
    return Movement(key=f"saga:{saga_id}:v{version}", increments=increments)


class StockProjection:
    """``readside_stock_levels`` (totals), guarded by ``readside_stock_sagas`` and
    ``readside_restocks``."""

    collections = ("readside_stock_levels", "readside_stock_sagas", "readside_restocks")

    def __init__(self, *, database: AsyncDatabase[Doc]) -> None:
        self.levels_docs = database["readside_stock_levels"]
        self.sagas = database["readside_stock_sagas"]
        self.restocks = database["readside_restocks"]
        self.saga_totals = Counters(counters=self.levels_docs, guards=self.sagas)
        self.restock_totals = Counters(counters=self.levels_docs, guards=self.restocks)
        self._locks = KeyedLocks()
        self.known = Remembered()
        """The rows this process wrote last of sagas whose units are reserved (their
        next stock event ships or releases them)."""
        self.first_rows = DocumentWrites(self.sagas)
        """A saga's first row (an insert): group-committed."""

    async def ensure_indexes(self) -> None:
        """Every read and write is by ``_id``; nothing else to index."""

    async def apply_saga(self, saga_id: str, event: SagaProgressed) -> bool:
        """Record the saga's stock state if this event is newer than the one recorded
        and changes it; False if it does not (a duplicate, an older event)."""
        state = stock_state(event)
        if state is None:
            return False
        lines = [{"sku": x["sku"], "quantity": x["quantity"]} for x in event.start.get("lines", [])]
        async with self._locks(saga_id):
            return await self._apply_saga(saga_id, event.version, state, lines)

    async def _apply_saga(self, saga_id: str, version: int, state: str, lines: list[Doc]) -> bool:
        # The row this process wrote last, instead of reading it (orchestrator.readside.
        # remembered): a copy behind the store only costs a failed conditional write.
        known = self.known.take(saga_id)
        row: Doc | None
        try:
            for _ in range(ATTEMPTS):
                if known is not None:
                    row, remembered, known = known, True, None
                else:
                    row, remembered = await self.sagas.find_one({"_id": saga_id}), False
                if row is not None and row.get("pending"):
                    await self.saga_totals.settle(row)
                    continue
                if row is not None and row["version"] >= version:
                    if remembered:  # the store holds this version or a newer one
                        self._remember(row)
                    return False
                old = row["state"] if row is not None else "none"
                movement = saga_movement(saga_id, version, old, state, lines)
                doc: Doc = {"_id": saga_id, "version": version, "state": state}
                doc["lines"] = lines
                if not movement.empty:
                    doc["pending"] = self.saga_totals.pending(movement)
                try:
                    if not await self._replace(row, doc):
                        continue  # another writer got there first: look again
                except BaseException:  # it may be stored all the same: give the lease up
                    if "pending" in doc:
                        await self.saga_totals.give_up(saga_id, doc["pending"])
                    raise
                if "pending" in doc:
                    await self.saga_totals.finish(saga_id, doc["pending"])
                self._remember(doc)
                return True
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot update the stock projection: {e}") from e
        raise TransientError(f"stock row of {saga_id} keeps changing under us; retry")

    def _remember(self, row: Doc) -> None:
        """Keep the row for the saga's next stock event if one is to come."""
        if row["state"] == "reserved":
            self.known.keep(row)
        else:
            self.known.forget(row["_id"])

    async def _replace(self, row: Doc | None, doc: Doc) -> bool:
        """Insert the row, or replace the version read (and only if nothing is pending)."""
        if row is None:
            try:
                await self.first_rows.insert(doc)
            except DuplicateKeyError:
                return False
            return True
        result = await self.sagas.replace_one(
            {"_id": doc["_id"], "version": row["version"], "pending": {"$exists": False}}, doc
        )
        return result.matched_count == 1

    async def apply_restock(self, event: InventoryRestocked) -> bool:
        """Add a restock's units once (per restock id)."""
        movement = Movement(
            key=f"restock:{event.restock_id}", increments={event.sku: {"restocked": event.units}}
        )
        pending = self.restock_totals.pending(movement)
        doc = {"_id": event.restock_id, "sku": event.sku, "units": event.units}
        try:
            await self.restocks.insert_one({**doc, "pending": pending})
        except DuplicateKeyError:
            row = await self.restocks.find_one({"_id": event.restock_id})
            if row is not None and row.get("pending"):
                await self.restock_totals.settle(row)
            return False
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot record restock: {e}") from e
        await self.restock_totals.finish(event.restock_id, pending)
        return True

    async def levels(self, skus: list[str]) -> dict[str, StockLevels]:
        """Levels of these SKUs (zeros for an unknown one): one document each."""
        found = await self.saga_totals.read(list(skus))
        return {sku: _levels(sku, found.get(sku, {})) for sku in skus}

    async def page(self, *, after: str | None = None, limit: int = 100) -> list[StockLevels]:
        """Known SKUs in SKU order, after ``after``, at most ``limit``."""
        query: Doc = {"_id": {"$gt": after}} if after is not None else {}
        try:
            cursor = self.levels_docs.find(query, {"marks": 0}).sort("_id", ASCENDING)
            return [_levels(doc["_id"], doc) async for doc in cursor.limit(limit)]
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot read the stock projection: {e}") from e


def _levels(sku: str, doc: Doc) -> StockLevels:
    restocked = int(doc.get("restocked", 0))
    reserved, shipped = int(doc.get("reserved", 0)), int(doc.get("shipped", 0))
    return StockLevels(
        sku=sku, reserved=reserved, shipped=shipped, available=restocked - reserved - shipped
    )
