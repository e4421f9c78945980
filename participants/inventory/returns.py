"""Goods taken back into stock for the order-return saga, idempotent per return saga.

Taking back moves units from ``shipped`` to ``available`` on each SKU's stock document
(``inventory_stock``) and marks them there under ``taken_back.<return saga id>``: one
conditional update per line, which checks the mark is absent and enough units were
shipped, so repeating it changes nothing and available + reserved + shipped stays as it
was. Undoing it moves the marked units back, again one conditional update per line.

``inventory_returns`` is the take-back ledger: one document per return saga, its outcome
(taken_back, refused, undone, settled) and the lines it asked for. It is written once,
after the lines moved (or failed to): whoever writes it first decides, and a worker that
finds another outcome there moves its marked units back. Undo writes ``undone`` first,
so a late or concurrent take-back gives up.

The marks are transient, so that a SKU's hot document does not grow with every return
it ever had: they guard the moves only while the take-back can still be undone. Once the
return saga completed (``<saga>.completed`` on ``inventory.events``), no compensation can
follow: :meth:`StockReturns.settle` records the outcome ``settled`` and removes the marks
of its lines (by id, no scan). From then on the ledger alone makes a repeated take-back
change nothing: a worker reads it before each line it moves, and stops once the
take-back is decided. (What it cannot fence, like a lease without a fence at the
resource, is a worker stalled inside one line's update for as long as the whole return
saga took to complete and settle: its move would count twice.) The ledger keeps its records for
a retention (a TTL index on ``decided_at``, ``INVENTORY_RETURN_RETENTION_SECONDS``): a
copy of a take-back command delivered later would be taken for a new one, so keep it
longer than any message can wait in a queue or a dead-letter queue, as for restocks.

Before anything moves, every line is checked: a take-back that would be refused is
refused without moving a unit, so units of a refused take-back are never available to
other orders, even for a moment. (Only a shipped count lowered between the check and the
move, by a write-off or another take-back of the SKU, still refuses after some lines
moved; those are moved back.) And a take-back of an order whose stock the inventory has
not shipped yet (it ships after the order saga completed, from the outcome event) waits
for the shipment, as a refund waits for the capture: :class:`ShipmentPending`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from pymongo.errors import DuplicateKeyError, PyMongoError

from contracts import StockTakenBack, TakeBackRefused, TakeBackStock, TakeBackUndone, UndoTakeBack
from orchestrator.errors import StoreUnavailable, TransientError
from participants.kit.retention import ensure_ttl_index
from participants.kit.service import ParticipantError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pymongo.asynchronous.database import AsyncDatabase

    from contracts import Message, OrderLine
    from participants.kit.service import ParticipantService

__all__ = [
    "RETURN_RETENTION_SECONDS",
    "ReturnedStockInUse",
    "ShipmentPending",
    "StockReturns",
    "TakeBackOutcome",
    "TakeBackSettled",
    "register_returns",
]

log = structlog.get_logger("inventory")
Doc = dict[str, Any]
MARK = "taken_back"
RETURN_RETENTION_SECONDS = 30 * 24 * 3600.0
"""Default of ``INVENTORY_RETURN_RETENTION_SECONDS``: how long a take-back is known."""
TAKEN = ("taken_back", "settled")
"""Outcomes of a take-back whose units moved (and stay moved)."""


class ReturnedStockInUse(TransientError):
    """Units taken back were reserved by other orders before the take-back was undone:
    the undo waits (retries) until they are available again, or the saga parks."""


class ShipmentPending(TransientError):
    """The returned order completed but its stock is not shipped yet (the inventory ships
    it from the order saga's outcome event): retry until it is."""


class TakeBackSettled(ParticipantError):
    """UndoTakeBack for a return whose saga completed (its take-back is final): retried,
    then dead-lettered with this reason, never answered as undone."""


@dataclass(frozen=True)
class TakeBackOutcome:
    """What a take-back came to."""

    taken_back: bool
    reason: str = ""
    sku: str | None = None


class StockReturns:
    """Take-backs and their undoing, on the inventory's stock documents."""

    def __init__(
        self, *, database: AsyncDatabase[Doc], retention_seconds: float | None = None
    ) -> None:
        self.stock = database["inventory_stock"]
        self.outcomes = database["inventory_returns"]
        self.reservations = database["inventory_reservations"]
        self.retention = retention_seconds or RETURN_RETENTION_SECONDS

    async def ensure_indexes(self) -> None:
        """The ledger's retention: a TTL index on ``decided_at``."""
        await ensure_ttl_index(self.outcomes, "decided_at", self.retention)

    async def take_back(
        self, return_saga: str, lines: tuple[OrderLine, ...], *, order_saga: str | None = None
    ) -> TakeBackOutcome:
        """Take every line back or none; a repeated call returns the first outcome. With
        ``order_saga`` (the order returned), wait until that order's stock is shipped."""
        known = await self.outcome(return_saga)
        if known is None:
            if order_saga is not None:
                await self._wait_for_shipment(order_saga, lines)
            ordered = sorted(lines, key=lambda x: x.sku)
            refusal = await self._refusal(return_saga, ordered)
            for line in ordered if refusal is None else ():
                known = await self.outcome(return_saga)
                if known is not None:  # decided meanwhile (and its marks maybe gone)
                    break
                if not await self._move_back(return_saga, line.sku, line.quantity):
                    refusal = _not_shipped(line)
                    break
            if known is None:
                known = await self._decide(return_saga, refusal, ordered)
        if known["status"] not in TAKEN:
            await self._unmark_all(return_saga, [x.sku for x in lines])
        return TakeBackOutcome(
            taken_back=known["status"] in TAKEN,
            reason=known.get("reason") or "the take-back was undone",
            sku=known.get("sku"),
        )

    async def undo(self, return_saga: str) -> None:
        """Record the take-back as undone (a late one is then refused), then move its
        units back to shipped. Safe to repeat, and before the take-back arrives."""
        known = await self.outcome(return_saga)
        if known is None:
            try:
                await self.outcomes.insert_one(_outcome_doc(return_saga, "undone", None, None))
            except DuplicateKeyError:
                known = await self.outcome(return_saga)
            except PyMongoError as e:
                raise StoreUnavailable(f"inventory write failed: {e}") from e
        if known is not None and known["status"] == "settled":
            raise TakeBackSettled(f"the return {return_saga} completed: its take-back is final")
        if known is not None and known["status"] != "undone":
            done = await self._op(
                self.outcomes.update_one(
                    {"_id": return_saga, "status": known["status"]},
                    {"$set": {"status": "undone"}},
                )
            )
            if done.matched_count == 0:
                raise TransientError(f"take-back {return_saga} changed during its undo; retrying")
        await self._unmark_all(return_saga, _skus(known))

    async def settle(self, return_saga: str) -> bool:
        """The return saga completed: its take-back is final. Record it ``settled`` and
        remove its marks from the SKU documents; True if this call settled it. Safe to
        repeat; nothing to do for a take-back refused, undone or never made."""
        known = await self.outcome(return_saga)
        if known is None or known["status"] not in TAKEN:
            return False
        settled = False
        if known["status"] == "taken_back":
            done = await self._op(
                self.outcomes.update_one(
                    {"_id": return_saga, "status": "taken_back"}, {"$set": {"status": "settled"}}
                )
            )
            settled = done.modified_count == 1
            if not settled and (await self.outcome(return_saga) or {}).get("status") != "settled":
                raise TransientError(f"take-back {return_saga} changed while settling; retrying")
        mark = f"{MARK}.{return_saga}"
        skus = _skus(known)
        if skus is None:  # recorded before the ledger kept its lines: find its marks
            skus = sorted(await self.taken_back(return_saga))
        for sku in skus:
            await self._op(
                self.stock.update_one({"_id": sku, mark: {"$exists": True}}, {"$unset": {mark: ""}})
            )
        return settled

    async def outcome(self, return_saga: str) -> Doc | None:
        """The return saga's outcome document, if any."""
        found: Doc | None = await self._op(self.outcomes.find_one({"_id": return_saga}))
        return found

    async def taken_back(self, return_saga: str) -> dict[str, int]:
        """Units marked as taken back for this return, per SKU."""
        mark = f"{MARK}.{return_saga}"
        docs = await self._op(self.stock.find({mark: {"$exists": True}}, {MARK: 1}).to_list(None))
        return {d["_id"]: int(d[MARK][return_saga]) for d in docs}

    async def _wait_for_shipment(self, order_saga: str, lines: tuple[OrderLine, ...]) -> None:
        """Raise :class:`ShipmentPending` while the order's reservation is not shipped, or
        shipped but its units still held (the shipment is under way)."""
        found = await self._op(self.reservations.find_one({"_id": order_saga}, {"status": 1}))
        status = found.get("status") if found else None
        if status in ("reserved", "reserving"):
            raise ShipmentPending(f"the stock of order saga {order_saga} is not shipped yet")
        if status != "shipped":
            return  # nothing to wait for: the shipped counts decide
        held = await self._op(
            self.stock.find_one(
                {
                    "_id": {"$in": sorted({x.sku for x in lines})},
                    f"holds.{order_saga}": {"$exists": True},
                },
                {"_id": 1},
            )
        )
        if held is not None:
            raise ShipmentPending(f"the stock of order saga {order_saga} is being shipped")

    async def _refusal(self, return_saga: str, lines: list[OrderLine]) -> tuple[str, str] | None:
        """Why the take-back must be refused, checked before any unit moves: a line with
        fewer units shipped than it returns (and not moved by an earlier attempt)."""
        mark = f"{MARK}.{return_saga}"
        for line in lines:
            movable = {"$or": [{"shipped": {"$gte": line.quantity}}, {mark: {"$exists": True}}]}
            if (
                await self._op(self.stock.find_one({"_id": line.sku, **movable}, {"_id": 1}))
                is None
            ):
                return _not_shipped(line)
        return None

    async def _move_back(self, return_saga: str, sku: str, units: int) -> bool:
        """Shipped -> available for one line; True if moved (now or before)."""
        mark = f"{MARK}.{return_saga}"
        moved = await self._op(
            self.stock.update_one(
                {"_id": sku, "shipped": {"$gte": units}, mark: {"$exists": False}},
                {"$inc": {"shipped": -units, "available": units}, "$set": {mark: units}},
            )
        )
        if moved.modified_count == 1:
            return True
        found = await self._op(
            self.stock.find_one({"_id": sku, mark: {"$exists": True}}, {"_id": 1})
        )
        return found is not None

    async def _marked(self, return_saga: str, skus: Iterable[str] | None) -> dict[str, int]:
        """Units marked for this return on these SKUs (all SKUs: a scan, needed only
        for an undo that came before the take-back was decided)."""
        if skus is None:
            return await self.taken_back(return_saga)
        mark = f"{MARK}.{return_saga}"
        found: dict[str, int] = {}
        for sku in sorted(set(skus)):
            doc = await self._op(self.stock.find_one({"_id": sku, mark: {"$exists": True}}))
            if doc is not None:
                found[sku] = int(doc[MARK][return_saga])
        return found

    async def _unmark_all(self, return_saga: str, skus: Iterable[str] | None) -> None:
        """Move every unit marked for this return (on ``skus``; None: wherever) back to
        shipped. Each move is one conditional update on the exact marked quantity, so
        repeating it is safe."""
        mark = f"{MARK}.{return_saga}"
        for sku, units in (await self._marked(return_saga, skus)).items():
            moved = await self._op(
                self.stock.update_one(
                    {"_id": sku, mark: units, "available": {"$gte": units}},
                    {"$inc": {"available": -units, "shipped": units}, "$unset": {mark: ""}},
                )
            )
            if moved.matched_count == 0:
                raise ReturnedStockInUse(
                    f"{units} x {sku} taken back by {return_saga} are no longer available"
                )

    async def _decide(
        self, return_saga: str, refusal: tuple[str, str] | None, lines: list[OrderLine]
    ) -> Doc:
        status = "refused" if refusal else "taken_back"
        doc = _outcome_doc(return_saga, status, refusal, lines)
        try:
            await self.outcomes.insert_one(doc)
            return doc
        except DuplicateKeyError:
            pass
        except PyMongoError as e:
            raise StoreUnavailable(f"inventory write failed: {e}") from e
        stored = await self.outcome(return_saga)
        if stored is None:
            raise TransientError(f"take-back {return_saga} vanished; retrying")
        return stored

    async def _op(self, op: Any) -> Any:
        try:
            return await op
        except PyMongoError as e:
            raise StoreUnavailable(f"inventory store failed: {e}") from e


def _not_shipped(line: OrderLine) -> tuple[str, str]:
    return (f"{line.quantity} x {line.sku} were not shipped", line.sku)


def _outcome_doc(
    return_saga: str,
    status: str,
    refusal: tuple[str, str] | None,
    lines: list[OrderLine] | None,
) -> Doc:
    doc: Doc = {
        "_id": return_saga,
        "status": status,
        "reason": refusal[0] if refusal else "",
        "sku": refusal[1] if refusal else None,
        "decided_at": datetime.now(UTC),
    }
    if lines is not None:  # the lines asked for (moved if the status is taken_back)
        doc["lines"] = {x.sku: x.quantity for x in lines}
    return doc


def _skus(known: Doc | None) -> list[str] | None:
    """The SKUs a take-back may have marked, from its ledger record (None: unknown)."""
    lines = (known or {}).get("lines")
    return sorted(lines) if isinstance(lines, dict) else None


def register_returns(
    service: ParticipantService, *, retention_seconds: float | None = None
) -> StockReturns:
    """Handle the return saga's inventory commands in ``service`` (its outcome events
    are the service's to route: :meth:`StockReturns.settle` on completion)."""
    returns = StockReturns(database=service.db, retention_seconds=retention_seconds)

    async def take_back(saga_id: str, cmd: TakeBackStock) -> Message:
        outcome = await returns.take_back(saga_id, cmd.lines, order_saga=cmd.order_saga_id)
        if outcome.taken_back:
            return StockTakenBack(return_id=cmd.return_id)
        return TakeBackRefused(return_id=cmd.return_id, reason=outcome.reason, sku=outcome.sku)

    async def undo(saga_id: str, cmd: UndoTakeBack) -> Message:
        await returns.undo(saga_id)
        return TakeBackUndone(return_id=cmd.return_id)

    service.on_command(
        TakeBackStock,
        take_back,
        refusal=lambda c, reason: TakeBackRefused(return_id=c.return_id, reason=reason),
    )
    service.on_command(UndoTakeBack, undo)
    return returns
