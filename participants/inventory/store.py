"""Stock and reservations in MongoDB, idempotent per saga, without transactions.

A stock document per SKU holds ``available``, ``reserved`` and ``shipped`` and, under
``holds.<saga_id>``, the units each saga holds. Reserving one line is one conditional
update that checks availability and the absence of the saga's hold, so it can be
repeated safely; releasing and shipping check its presence. A reservation document per
saga records the outcome (so a duplicate command gets the same reply) and a lease (so two
instances never work on one saga at once). The lease is epoch seconds, a plain number,
so comparing it never depends on how a server stores dates written by ``$set``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError, PyMongoError

from orchestrator.errors import StoreUnavailable, TransientError

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from contracts import OrderLine

__all__ = ["Levels", "MongoInventory", "ReservationBusy", "ReserveOutcome"]

Doc = dict[str, Any]


class ReservationBusy(TransientError):
    """Another worker holds the lease on this saga's reservation: try again later."""


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


class MongoInventory:
    """The inventory's data: ``inventory_stock`` and ``inventory_reservations``."""

    def __init__(self, *, database: AsyncDatabase[Doc], lease_seconds: float = 10.0) -> None:
        self.stock = database["inventory_stock"]
        self.reservations = database["inventory_reservations"]
        self.lease = lease_seconds

    async def set_stock(self, sku: str, available: int) -> None:
        """Make ``available`` units of a SKU available, with nothing reserved or shipped."""
        # update_one with $set rather than replace_one: same effect on MongoDB, and the
        # embedded development server does not upsert through replace_one.
        await self._write(
            self.stock.update_one(
                {"_id": sku},
                {"$set": {"available": available, "reserved": 0, "shipped": 0, "holds": {}}},
                upsert=True,
            )
        )

    async def restock(self, sku: str, units: int) -> Levels:
        """Add units to available stock."""
        await self._write(
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
        """Add units once per restock id (the id is recorded in the SKU's document).
        True if this call added them, False if they were added before."""
        mark = f"restocks.{restock_id}"
        result = await self._write(
            self.stock.update_one(
                {"_id": sku, mark: {"$exists": False}},
                {"$inc": {"available": units}, "$set": {mark: units}},
            )
        )
        if result.modified_count == 1:
            return True
        exists = await self._read(self.stock.find_one({"_id": sku}, {"_id": 1}))
        if exists is None:
            try:
                await self.stock.insert_one(
                    {
                        "_id": sku,
                        "available": units,
                        "reserved": 0,
                        "shipped": 0,
                        "holds": {},
                        "restocks": {restock_id: units},
                    }
                )
                return True
            except DuplicateKeyError:
                return await self.apply_restock(sku, units, restock_id)
            except PyMongoError as e:
                raise StoreUnavailable(f"inventory write failed: {e}") from e
        return False

    async def levels(self, sku: str) -> Levels:
        """Current stock of a SKU (zeros if unknown)."""
        doc = await self._read(self.stock.find_one({"_id": sku}, {"holds": 0, "restocks": 0}))
        doc = doc or {}
        return Levels(
            sku=sku,
            available=doc.get("available", 0),
            reserved=doc.get("reserved", 0),
            shipped=doc.get("shipped", 0),
        )

    async def reserve(self, saga_id: str, lines: tuple[OrderLine, ...]) -> ReserveOutcome:
        """Reserve every line or none; a repeated call returns the first outcome."""
        done = await self._claim(saga_id, lines)
        if done is not None:
            return done
        try:
            return await self._reserve_lines(saga_id, lines)
        except BaseException:
            # Interrupted (store error, cancelled on a lost connection): give up the lease
            # so the redelivery can carry on at once instead of waiting for it to expire.
            await self._abandon(saga_id)
            raise

    async def _reserve_lines(self, saga_id: str, lines: tuple[OrderLine, ...]) -> ReserveOutcome:
        for line in sorted(lines, key=lambda x: x.sku):
            if not await self._hold(saga_id, line.sku, line.quantity):
                await self._unhold_all(saga_id, back_to="available")
                reason = f"insufficient stock for {line.sku}: {line.quantity} wanted"
                await self._finish(saga_id, "failed", outcome="failed", reason=reason, sku=line.sku)
                return ReserveOutcome(reserved=False, reason=reason, sku=line.sku)
        await self._finish(saga_id, "reserved", outcome="reserved")
        return ReserveOutcome(reserved=True)

    async def release(self, saga_id: str) -> None:
        """Return the saga's held units to available stock. Safe to repeat, and safe
        before the reservation arrives (it is then refused when it does)."""
        doc = await self._read(self.reservations.find_one({"_id": saga_id}))
        if doc is None:
            try:
                await self.reservations.insert_one(
                    {
                        "_id": saga_id,
                        "status": "released",
                        "outcome": "failed",
                        "lines": [],
                        "reason": "released before the reservation arrived",
                        "updated_at": _now(),
                    }
                )
            except DuplicateKeyError:
                raise ReservationBusy(f"reservation {saga_id} appeared concurrently") from None
            except PyMongoError as e:
                raise StoreUnavailable(str(e)) from e
            return
        if doc["status"] == "shipped":
            return
        if doc["status"] != "released":
            await self._mark_released(saga_id, doc)
        # Always sweep: idempotent per hold, and it catches a hold left by a reservation
        # that was taken over while an earlier release ran.
        await self._unhold_all(saga_id, back_to="available")

    async def _mark_released(self, saga_id: str, doc: Doc) -> None:
        """Flip the status first, conditionally, so no worker can take over an abandoned
        reservation and hold stock after the release (it then sees the outcome)."""
        if doc["status"] == "reserving" and doc["lease_until"] > time.time():
            raise ReservationBusy(f"reservation {saga_id} is being worked on")
        expected: Doc = {"_id": saga_id, "status": doc["status"]}
        if doc["status"] == "reserving":
            expected["lease_until"] = doc["lease_until"]
        changes: Doc = {"status": "released", "updated_at": _now()}
        if doc.get("outcome") is None:
            changes |= {"outcome": "failed", "reason": "released before it finished"}
        result = await self._write(self.reservations.update_one(expected, {"$set": changes}))
        if result.matched_count == 0:
            raise ReservationBusy(f"reservation {saga_id} changed during the release; retrying")

    async def ship(self, saga_id: str) -> None:
        """The saga completed: its held units leave as shipped. Safe to repeat."""
        doc = await self._read(self.reservations.find_one({"_id": saga_id}))
        if doc is None or doc["status"] != "reserved":
            return
        await self._unhold_all(saga_id, back_to="shipped")
        await self._write(
            self.reservations.update_one(
                {"_id": saga_id, "status": "reserved"},
                {"$set": {"status": "shipped", "updated_at": _now()}},
            )
        )

    # --- steps -------------------------------------------------------------------------

    async def _claim(self, saga_id: str, lines: tuple[OrderLine, ...]) -> ReserveOutcome | None:
        """Take the lease on a new reservation; or the outcome of a finished one."""
        now = _now()
        doc: Doc = {
            "_id": saga_id,
            "status": "reserving",
            "outcome": None,
            "lines": [{"sku": x.sku, "quantity": x.quantity} for x in lines],
            "lease_until": time.time() + self.lease,
            "updated_at": now,
        }
        try:
            await self.reservations.insert_one(doc)
            return None
        except DuplicateKeyError:
            pass
        except PyMongoError as e:
            raise StoreUnavailable(str(e)) from e
        existing = await self._read(self.reservations.find_one({"_id": saga_id}))
        if existing is None:
            raise ReservationBusy(f"reservation {saga_id} vanished; retrying")
        if existing.get("outcome") is not None:
            return ReserveOutcome(
                reserved=existing["outcome"] == "reserved",
                reason=existing.get("reason", ""),
                sku=existing.get("sku"),
            )
        if existing["lease_until"] > time.time():
            raise ReservationBusy(f"reservation {saga_id} is being worked on")
        taken = await self._read(
            self.reservations.find_one_and_update(
                {"_id": saga_id, "status": "reserving", "lease_until": existing["lease_until"]},
                {"$set": {"lease_until": time.time() + self.lease, "updated_at": now}},
            )
        )
        if taken is None:
            raise ReservationBusy(f"reservation {saga_id} was taken over by another worker")
        return None

    async def _abandon(self, saga_id: str) -> None:
        """Expire our lease on an unfinished reservation (best effort)."""
        with contextlib.suppress(PyMongoError):  # if this fails the lease simply runs out
            await self.reservations.update_one(
                {"_id": saga_id, "status": "reserving"},
                {"$set": {"lease_until": 0.0}},
            )

    async def _hold(self, saga_id: str, sku: str, units: int) -> bool:
        """Move units from available to the saga's hold; True if held (now or before)."""
        hold = f"holds.{saga_id}"
        result = await self._write(
            self.stock.update_one(
                {"_id": sku, "available": {"$gte": units}, hold: {"$exists": False}},
                {"$inc": {"available": -units, "reserved": units}, "$set": {hold: units}},
            )
        )
        if result.modified_count == 1:
            return True
        already = await self._read(
            self.stock.find_one({"_id": sku, hold: {"$exists": True}}, {"_id": 1})
        )
        return already is not None

    async def _unhold_all(self, saga_id: str, *, back_to: str) -> None:
        """Move every unit the saga holds, on whatever SKU, to ``back_to``. Driven by the
        holds themselves, so nothing a saga holds can be missed; each move is one
        conditional update on the exact held quantity, so repeating it changes nothing."""
        hold = f"holds.{saga_id}"
        docs = await self._read(
            self.stock.find({hold: {"$exists": True}}, {"holds": 1}).to_list(None)
        )
        for doc in docs:
            units = int((doc.get("holds") or {}).get(saga_id, 0))
            await self._write(
                self.stock.update_one(
                    {"_id": doc["_id"], hold: units},
                    {"$inc": {"reserved": -units, back_to: units}, "$unset": {hold: ""}},
                )
            )

    async def _finish(self, saga_id: str, status: str, **fields: Any) -> None:
        await self._write(
            self.reservations.update_one(
                {"_id": saga_id, "status": "reserving"},
                {"$set": {"status": status, "updated_at": _now(), **fields}},
            )
        )

    async def _write(self, op: Any) -> Any:
        try:
            return await op
        except PyMongoError as e:
            raise StoreUnavailable(f"inventory write failed: {e}") from e

    _read = _write


def _now() -> datetime:
    return datetime.now(UTC)
