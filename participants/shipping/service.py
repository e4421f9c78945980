"""The shipping service. Like payment, one document per saga is the effect and its
idempotency record.

Retention. Every shipment record is final when written (scheduled, failed, cancelled,
or a cancel's marker) and gets ``settled_at``; a TTL index removes it after
``PARTICIPANT_RECORD_RETENTION_SECONDS`` (``participants.kit.retention``). None is live:
the only later command, CancelShipment, needs nothing from it (without a record it
leaves its marker and answers the same), and the service does not see the saga end. A
ScheduleShipment copy delivered after the retention books again (the same shipment id);
a shipping service whose booking is made with a carrier would keep a scheduled record
until its saga ended instead."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError, PyMongoError

from contracts import (
    CancelShipment,
    ScheduleShipment,
    ShipmentCancelled,
    ShipmentFailed,
    ShipmentScheduled,
)
from contracts.base import Message
from orchestrator.errors import StoreUnavailable, TransientError
from orchestrator.runtime.host import run_service
from orchestrator.settings import env_list
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

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

__all__ = ["MongoShipments", "ShippingService", "main"]

Doc = dict[str, Any]
UNDELIVERABLE = ("Atlantis",)
"""Default of ``SHIPPING_UNDELIVERABLE``: places no carrier delivers to."""


class MongoShipments:
    """``shipping_shipments``: one document per saga: scheduled -> cancelled, or failed."""

    def __init__(
        self,
        *,
        database: AsyncDatabase[Doc],
        undeliverable: tuple[str, ...],
        retention_seconds: float | None = None,
        write_window: float = 0.0,
    ) -> None:
        self.shipments = database["shipping_shipments"]
        self.shipment_writes = DocumentWrites(self.shipments, window=write_window)
        self.undeliverable = tuple(s.lower() for s in undeliverable)
        self.retention = retention_seconds or RECORD_RETENTION_SECONDS

    async def ensure_indexes(self) -> None:
        """The retention of shipment records (a TTL index on ``settled_at``)."""
        await ensure_ttl_index(self.shipments, SETTLED_AT, self.retention)

    def refusal(self, cmd: ScheduleShipment) -> str:
        """Why this shipment cannot be booked ('' if it can)."""
        address = cmd.ship_to.lower()
        for place in self.undeliverable:
            if place and place in address:
                return f"no carrier delivers to {cmd.ship_to!r}"
        return ""

    async def schedule(self, saga_id: str, cmd: ScheduleShipment) -> Doc:
        """Book once; later calls return the stored outcome."""
        reason = self.refusal(cmd)
        now = _now()
        doc: Doc = {
            "_id": saga_id,
            "order_id": cmd.order_id,
            "ship_to": cmd.ship_to,
            "units": cmd.units,
            "status": "failed" if reason else "scheduled",
            "reason": reason,
            "shipment_id": "" if reason else f"ship-{saga_id}",
            "updated_at": now,
            SETTLED_AT: now,
        }
        try:
            await self.shipment_writes.insert(doc)
            return doc
        except DuplicateKeyError:
            found = await self.get(saga_id)
            if found is None:
                raise TransientError(f"shipment {saga_id} vanished; retry") from None
            return found
        except PyMongoError as e:
            raise StoreUnavailable(f"shipping write failed: {e}") from e

    async def cancel(self, saga_id: str) -> None:
        """Cancel if booked; otherwise leave a marker so a late booking is refused."""
        now = _now()
        try:
            done = await self.shipments.find_one_and_update(
                {"_id": saga_id, "status": "scheduled"},
                {"$set": {"status": "cancelled", "updated_at": now}, **SETTLE},
            )
            if done is None:
                await self.shipment_writes.insert(
                    {
                        "_id": saga_id,
                        "status": "cancelled",
                        "shipment_id": "",
                        "reason": "cancelled before it was scheduled",
                        "updated_at": now,
                        SETTLED_AT: now,
                    }
                )
        except DuplicateKeyError:
            return
        except PyMongoError as e:
            raise StoreUnavailable(f"shipping write failed: {e}") from e

    async def get(self, saga_id: str) -> Doc | None:
        """The saga's shipment document, if any."""
        try:
            return await self.shipments.find_one({"_id": saga_id})
        except PyMongoError as e:
            raise StoreUnavailable(f"shipping read failed: {e}") from e


class ShippingService(ParticipantService):
    """Consumes ``<ns>.shipping.commands``."""

    service = "shipping"
    _shipments: MongoShipments | None = None

    @property
    def shipments(self) -> MongoShipments:
        """The shipment store (after start)."""
        assert self._shipments is not None, "start() the service first"
        return self._shipments

    async def setup(self) -> None:
        """Register handlers and the consumer."""
        env = self.settings.env()
        self._shipments = MongoShipments(
            database=self.db,
            undeliverable=env_list(env, "SHIPPING_UNDELIVERABLE", UNDELIVERABLE),
            retention_seconds=record_retention(env),
            write_window=write_window(env),
        )
        await self._shipments.ensure_indexes()
        self.on_command(
            ScheduleShipment,
            self.schedule,
            refusal=lambda c, reason: ShipmentFailed(order_id=c.order_id, reason=reason),
        )
        self.on_command(CancelShipment, self.cancel)
        self.consume("shipping.commands", self.handle_command)

    async def schedule(self, saga_id: str, cmd: ScheduleShipment) -> Message:
        """Book unless the destination is undeliverable."""
        doc = await self.shipments.schedule(saga_id, cmd)
        if doc.get("shipment_id"):
            return ShipmentScheduled(order_id=cmd.order_id, shipment_id=doc["shipment_id"])
        return ShipmentFailed(order_id=cmd.order_id, reason=doc.get("reason") or "refused")

    async def cancel(self, saga_id: str, cmd: CancelShipment) -> Message:
        """Compensation."""
        await self.shipments.cancel(saga_id)
        return ShipmentCancelled(order_id=cmd.order_id)


def _now() -> datetime:
    return datetime.now(UTC)


def main() -> None:
    """Entry point ``saga-shipping``."""
    run_service(ShippingService)
