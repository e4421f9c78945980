"""Stock and reservations in MongoDB, idempotent per saga, without transactions.

``inventory_stock`` has one document per SKU: ``available``, ``reserved``, ``shipped``
and, under ``holds.<saga_id>``, what each saga holds: ``{"n": units, "t": token}``. A hold
is made, undone or shipped by one conditional update of that one document, so counts and
holds always agree. ``inventory_reservations`` has one document per saga, inserted once
when the reservation is decided: the outcome, the status (reserved -> released | shipped,
or failed) and its lines, each with the token of the hold the reservation counts on.

The fence. Each reserve attempt draws a fresh token and writes it into the holds it
makes; where it finds a hold another attempt made, it counts on that one. Inserting the
reservation is the decision: the first attempt to insert wins, and every other attempt,
however late (a stalled worker, a second copy of the command), fails its insert, reads
the stored outcome, answers with it and undoes every hold of the saga the stored
reservation does not count on. Nothing removes a hold before the reservation exists, so
the holds a winner counts on are all there when it inserts. Release and ship flip the
status first, then move exactly the holds it counts on; a hold made after that can only
be a late attempt's, which undoes it when its insert fails. An attempt that dies after
holding has a copy of its command that was never acked: the redelivery puts it right.
No lease and no clock: two attempts at once are both correct, one of them is wasted.

Round trips: reserve is one conditional update per SKU plus the insert; release and
ship are one ``find_one_and_update`` of the reservation (which returns its lines) plus
one update per SKU. The inserts and the moves are group-committed
(``orchestrator.store.writes``): concurrent commands share their round trips, each
resuming only once its own write is confirmed; the holds and the flips, whose outcome
decides what comes next, are round trips of their own. Nothing scans SKUs: every move
is addressed by the lines. Only a reserve that finds a SKU short reads more: before it
refuses, it gives back that SKU's holds no reservation counts on (a late copy's), if
they would make up the difference.

A release that arrives before any decision leaves a ``released`` marker, so the late
reserve is refused (it undoes its holds on its failed insert), and gives back what the
saga holds on the order's lines (the release carries them): a reserve that held stock
and was then dead-lettered and discarded is undone by the saga's compensation. Holds
that nothing will ever come back for after a decision (a late copy that died between
its hold and its insert, a release or ship cut short, with no redelivery) are for the
sweeper (``participants.inventory.sweeper``).

Retention. A reservation that is released, shipped or failed (and a release's marker)
is final: the write that makes it so sets ``settled_at``, and a TTL index removes it
after ``PARTICIPANT_RECORD_RETENTION_SECONDS`` (``participants.kit.retention``). A
reserved one holds stock and never expires. A late copy of a ReserveStock after the
retention reserves again, and nothing releases that stock; a ShipStock copy finds no
reservation and is dead-lettered; a ReleaseStock copy leaves a marker and gives back
only holds of the saga that are still there. The sweeper settles a final reservation's
holds within ``INVENTORY_SWEEP_SECONDS``, long before it expires.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pymongo.errors import DuplicateKeyError, PyMongoError

from orchestrator.errors import StoreUnavailable, TransientError
from orchestrator.store.writes import DocumentWrites
from participants.inventory.holds import COUNTS, LEGACY, hold_token, saga_hold, units_per_sku
from participants.inventory.restocks import RestockLedger
from participants.inventory.sweeper import sweep_sku
from participants.kit.retention import (
    RECORD_RETENTION_SECONDS,
    SETTLE,
    SETTLED_AT,
    ensure_ttl_index,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable, Mapping

    from pymongo.asynchronous.database import AsyncDatabase

    from contracts import OrderLine

__all__ = ["Levels", "MongoInventory", "ReservationBusy", "ReserveOutcome", "ShipOutcome"]

Doc = dict[str, Any]
T = TypeVar("T")
HOLD_TRIES = 3
"""Tries of one hold while the SKU's stock changes under it, before a transient retry."""
FINAL = ("released", "shipped", "failed")
"""Statuses of a reservation no command changes any more (it may expire)."""


class ReservationBusy(TransientError):
    """A concurrent change to this saga's stock won a race: try again."""


@dataclass(frozen=True)
class Levels:
    """Stock of one SKU."""

    sku: str
    available: int
    reserved: int
    shipped: int

    @property
    def total(self) -> int:
        """available + reserved + shipped: constant whatever happens to sagas."""
        return self.available + self.reserved + self.shipped


@dataclass(frozen=True)
class ReserveOutcome:
    """What a reservation came to."""

    reserved: bool
    reason: str = ""
    sku: str | None = None


@dataclass(frozen=True)
class ShipOutcome:
    """What shipping a saga's stock came to: ``shipped`` (now or before) with the units,
    or not, with the reservation's status (None: there is no reservation)."""

    shipped: bool
    units: int = 0
    status: str | None = None


class MongoInventory:
    """The inventory's data: ``inventory_stock``, ``inventory_reservations`` and the
    restock ledger ``inventory_restocks``."""

    def __init__(
        self,
        *,
        database: AsyncDatabase[Doc],
        restock_retention_seconds: float | None = None,
        record_retention_seconds: float | None = None,
        write_window: float = 0.0,
    ) -> None:
        self.stock = database["inventory_stock"]
        self.reservations = database["inventory_reservations"]
        self.reservation_writes = DocumentWrites(self.reservations, window=write_window)
        self.stock_writes = DocumentWrites(self.stock, window=write_window)
        self.ledger = RestockLedger(database=database, retention_seconds=restock_retention_seconds)
        self.record_retention = record_retention_seconds or RECORD_RETENTION_SECONDS

    async def ensure_indexes(self) -> None:
        """The restock ledger's indexes and the retention of final reservations (a TTL
        index on ``settled_at``); stock is addressed by ``_id`` only."""
        await self.ledger.ensure_indexes()
        await ensure_ttl_index(self.reservations, SETTLED_AT, self.record_retention)

    async def set_stock(self, sku: str, available: int) -> None:
        """Make ``available`` units of a SKU available, with nothing reserved or shipped."""
        # update_one with $set rather than replace_one: same effect on MongoDB, and the
        # embedded development server does not upsert through replace_one.
        await _call(
            self.stock.update_one(
                {"_id": sku},
                {"$set": {"available": available, "reserved": 0, "shipped": 0, "holds": {}}},
                upsert=True,
            )
        )

    async def restock(self, sku: str, units: int) -> Levels:
        """Add units to available stock (no restock id: for tests and tools)."""
        await _call(
            self.stock.update_one(
                {"_id": sku},
                {
                    "$inc": {"available": units},
                    "$setOnInsert": {"reserved": 0, "shipped": 0, "holds": {}},
                },
                upsert=True,
            )
        )
        return await self.levels(sku)

    async def apply_restock(self, sku: str, units: int, restock_id: str) -> bool:
        """Add units once per restock id. True if this call recorded the restock, False
        if it was recorded before (its units are then added, or being added)."""
        return await self.ledger.apply(self.stock, sku=sku, units=units, restock_id=restock_id)

    async def levels(self, sku: str) -> Levels:
        """Current stock of a SKU (zeros if unknown)."""
        doc = await _call(
            self.stock.find_one({"_id": sku}, {"available": 1, "reserved": 1, "shipped": 1})
        )
        doc = doc or {}
        return Levels(
            sku=sku,
            available=doc.get("available", 0),
            reserved=doc.get("reserved", 0),
            shipped=doc.get("shipped", 0),
        )

    # --- reserve ------------------------------------------------------------------------

    async def reserve(self, saga_id: str, lines: tuple[OrderLine, ...]) -> ReserveOutcome:
        """Reserve every line or none; a repeated call returns the first outcome."""
        token = secrets.token_hex(8)
        wanted = units_per_sku(lines)
        counted: dict[str, str] = {}
        looked = False
        for sku, units in wanted.items():
            held = await self._hold(saga_id, sku, units, token)
            if held is None:
                reason = f"insufficient stock for {sku}: {units} wanted"
                failed = ReserveOutcome(reserved=False, reason=reason, sku=sku)
                return await self._decide(saga_id, wanted, counted, failed)
            if held != token and not looked:  # another attempt's: has it decided?
                looked = True
                stored = await self._stored(saga_id)
                if stored is not None and stored["status"] != "reserving":
                    return await self._settle(saga_id, stored, wanted)
            counted[sku] = held
        return await self._decide(saga_id, wanted, counted, ReserveOutcome(reserved=True))

    async def _hold(self, saga_id: str, sku: str, units: int, token: str) -> str | None:
        """Move units from available to the saga's hold. The token of the hold the saga
        now has on this SKU (``token`` if this call made it), or None if it is short."""
        hold = f"holds.{saga_id}"
        swept = False
        for _ in range(HOLD_TRIES):
            result = await _call(
                self.stock.update_one(
                    {"_id": sku, "available": {"$gte": units}, hold: {"$exists": False}},
                    {
                        "$inc": {"available": -units, "reserved": units},
                        "$set": {hold: {"n": units, "t": token}},
                    },
                )
            )
            if result.modified_count == 1:
                return token
            fields = {hold: 1, "available": 1, "reserved": 1}
            doc = await _call(self.stock.find_one({"_id": sku}, fields))
            entry = saga_hold(doc or {}, saga_id)
            if entry is not None:
                return hold_token(entry)
            if doc is None:
                return None
            available = int(doc.get("available", 0))
            if available < units:
                # Short, unless holds nothing counts on (a late copy's, one a release cut
                # short left) would make up the difference: give those back, then again.
                if swept or available + int(doc.get("reserved", 0)) < units:
                    return None
                swept = True
                if not await self._sweep(sku):
                    return None
            # Short when we tried, enough now (a release or restock in between): again.
        raise ReservationBusy(f"the stock of {sku} keeps changing while holding it; retrying")

    async def _sweep(self, sku: str) -> int:
        """Settle the holds of ``sku`` whose reservation is decided and does not count on
        them (the sweeper's pass over one SKU); how many moved."""
        doc = await _call(self.stock.find_one({"_id": sku}, {"holds": 1}))
        return await sweep_sku(self, sku, (doc or {}).get("holds") or {})

    async def _decide(
        self,
        saga_id: str,
        wanted: dict[str, int],
        counted: dict[str, str],
        outcome: ReserveOutcome,
    ) -> ReserveOutcome:
        """Insert the decision; if another attempt decided first, settle on its one."""
        status = "reserved" if outcome.reserved else "failed"
        lines = [{"sku": s, "quantity": n, "token": counted.get(s)} for s, n in wanted.items()]
        doc: Doc = {
            "_id": saga_id,
            "status": status,
            "outcome": status,
            "lines": lines,
            "reason": outcome.reason,
            "sku": outcome.sku,
            "updated_at": _now(),
        }
        if status in FINAL:
            doc[SETTLED_AT] = doc["updated_at"]
        stored = await self._insert(doc)
        if stored is not None:
            return await self._settle(saga_id, stored, wanted)
        if not outcome.reserved:
            await self._moves(saga_id, [(sku, wanted[sku]) for sku in counted], to="available")
        return outcome

    async def _insert(self, doc: Doc) -> Doc | None:
        """Insert a decision: None if it is the decision, else the one stored first."""
        try:
            await self.reservation_writes.insert(doc)
            return None
        except DuplicateKeyError:
            pass
        stored = await self._stored(doc["_id"])
        if stored is not None and stored["status"] == "reserving":
            # An undecided claim of the version before the fence (an upgrade with
            # reservations in flight): decide it, conditionally.
            fields = {k: v for k, v in doc.items() if k not in ("_id", SETTLED_AT)}
            update: Doc = {"$set": fields, **(SETTLE if SETTLED_AT in doc else {})}
            taken = await _call(
                self.reservations.update_one({"_id": doc["_id"], "status": "reserving"}, update)
            )
            if taken.modified_count == 1:
                return None
            stored = await self._stored(doc["_id"])
        if stored is None:
            raise ReservationBusy(f"reservation {doc['_id']} vanished; retrying")
        return stored

    async def _settle(self, saga_id: str, stored: Doc, wanted: dict[str, int]) -> ReserveOutcome:
        """Undo every hold of the saga that ``stored`` does not count on (on the stored
        lines and on ``wanted``), and return the stored outcome."""
        if stored["status"] == "reserving":  # a claim of the version before the fence
            raise ReservationBusy(f"reservation {saga_id} is still being worked on")
        keep = {x["sku"]: x.get("token") or LEGACY for x in stored["lines"]}
        if stored["status"] not in COUNTS:
            keep = {}
        targets = sorted(set(wanted.items()) | _targets(stored["lines"]))
        await self._moves(saga_id, targets, to="available", unless=keep)
        return _outcome(stored)

    async def _stored(self, saga_id: str) -> Doc | None:
        return await _call(self.reservations.find_one({"_id": saga_id}))

    # --- release and ship -----------------------------------------------------------------

    async def release(self, saga_id: str, lines: Iterable[OrderLine] = ()) -> None:
        """Return the saga's held units to available stock. Safe to repeat, and safe
        before the reservation arrives (it is then refused when it does). ``lines`` (the
        order's) are swept too: what an attempt held that never decided, and never will
        (its command dead-lettered and discarded), is given back from them."""
        wanted = units_per_sku(lines)
        doc = await self._flip(saga_id, "released", since=("reserved", "reserving"))
        if doc is None:
            doc = await self._mark_released(saga_id, wanted)
            if doc is None:
                return  # shipped units are not released
        # Every hold of these lines, whatever its token: repeating this sweeps a hold a
        # late attempt made after an earlier release. No reservation can count on them
        # any more (released, failed, or the marker: every later insert fails).
        targets = sorted(_targets(doc["lines"]) | set(wanted.items()))
        await self._moves(saga_id, targets, to="available")

    async def _mark_released(self, saga_id: str, wanted: dict[str, int]) -> Doc | None:
        """Insert the ``released`` marker that refuses a later reserve; the reservation
        now stored (the marker or a failed or released one), None if it shipped."""
        now = _now()
        marker: Doc = {
            "_id": saga_id,
            "status": "released",
            "outcome": "failed",
            "lines": [{"sku": s, "quantity": n, "token": None} for s, n in wanted.items()],
            "reason": "released before the reservation arrived",
            "updated_at": now,
            SETTLED_AT: now,
        }
        try:
            await self.reservation_writes.insert(marker)
            return marker
        except DuplicateKeyError:
            doc = await self._stored(saga_id)
        if doc is None or doc["status"] in ("reserved", "reserving"):
            raise ReservationBusy(f"reservation {saga_id} changed during the release")
        return None if doc["status"] == "shipped" else doc

    async def ship(self, saga_id: str) -> ShipOutcome:
        """Held units become shipped units, exactly once. Safe to repeat: a repeat
        finishes the moves an interrupted call began."""
        doc = await self._flip(saga_id, "shipped", since=("reserved",))
        if doc is None:
            doc = await self._stored(saga_id)
            if doc is None or doc["status"] != "shipped":
                return ShipOutcome(shipped=False, status=doc["status"] if doc else None)
        moves = [(x["sku"], int(x["quantity"])) for x in doc["lines"]]
        tokens = {x["sku"]: x.get("token") or LEGACY for x in doc["lines"]}
        await self._moves(saga_id, moves, to="shipped", token=tokens)
        return ShipOutcome(shipped=True, units=sum(x["quantity"] for x in doc["lines"]))

    async def _flip(self, saga_id: str, status: str, *, since: tuple[str, ...]) -> Doc | None:
        """``since`` -> ``status``, before any hold moves, so no hold made after it is
        counted; the reservation as it was, or None if its status was not in ``since``.
        (``reserving``: a claim of the version before the fence, which release ends.)
        Both statuses it flips to are final: the flip marks the reservation settled."""
        return await _call(
            self.reservations.find_one_and_update(
                {"_id": saga_id, "status": {"$in": list(since)}},
                {"$set": {"status": status, "updated_at": _now()}, **SETTLE},
            )
        )

    async def _move(
        self,
        saga_id: str,
        sku: str,
        units: int,
        *,
        to: str,
        token: str | None = None,
        unless: str | None = None,
    ) -> bool:
        """Move the saga's hold of ``units`` on ``sku`` to ``to`` and remove it: the hold
        with ``token`` if given, else any hold except one with ``unless``. One
        conditional update of its own; True if there was such a hold (the sweeper
        counts what it moved)."""
        query, update = _move_of(saga_id, sku, units, to=to, token=token, unless=unless)
        result = await _call(self.stock.update_one(query, update))
        return bool(result.modified_count == 1)

    async def _moves(
        self,
        saga_id: str,
        moves: Iterable[tuple[str, int]],
        *,
        to: str,
        token: Mapping[str, str] | None = None,
        unless: Mapping[str, str] | None = None,
    ) -> None:
        """The moves of :meth:`_move` for several (SKU, units), side by side in the
        batched updates (``stock_writes``), whose round trips concurrent commands share;
        returns once every one is applied (or did not match). ``token`` and ``unless``
        are per SKU. Each is addressed by its own condition, so no count is needed."""
        token, unless = token or {}, unless or {}
        writes = [
            self.stock_writes.update(
                *_move_of(saga_id, sku, n, to=to, token=token.get(sku), unless=unless.get(sku))
            )
            for sku, n in moves
        ]
        outcomes = await asyncio.gather(*writes, return_exceptions=True)
        failed = [e for e in outcomes if isinstance(e, BaseException)]
        if failed:
            raise failed[0]


def _move_of(
    saga_id: str, sku: str, units: int, *, to: str, token: str | None, unless: str | None
) -> tuple[Doc, Doc]:
    """The query and update of one move (see :meth:`MongoInventory._move`)."""
    hold = f"holds.{saga_id}"
    query: Doc = {"_id": sku}
    if token == LEGACY:
        query[hold] = units
    elif token is not None:
        query |= {f"{hold}.n": units, f"{hold}.t": token}
    elif unless is not None:
        query |= {f"{hold}.n": units, f"{hold}.t": {"$ne": unless}}
    else:
        query["$or"] = [{f"{hold}.n": units}, {hold: units}]
    return query, {"$inc": {"reserved": -units, to: units}, "$unset": {hold: ""}}


def _targets(lines: Iterable[Doc]) -> set[tuple[str, int]]:
    return {(x["sku"], int(x["quantity"])) for x in lines}


def _outcome(doc: Doc) -> ReserveOutcome:
    return ReserveOutcome(
        reserved=doc.get("outcome") == "reserved",
        reason=doc.get("reason") or "",
        sku=doc.get("sku"),
    )


async def _call(op: Awaitable[T]) -> T:
    """Await a store operation; a store failure is transient."""
    try:
        return await op
    except PyMongoError as e:
        raise StoreUnavailable(f"inventory store failed: {e}") from e


def _now() -> datetime:
    return datetime.now(UTC)
