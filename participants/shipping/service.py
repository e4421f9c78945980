"""The shipping service. Like payment, one document per saga is the effect and its
idempotency record."""

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
from orchestrator.host import run_service
from participants.kit import ParticipantService

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

__all__ = ["MongoShipments", "ShippingService", "main"]

Doc = dict[str, Any]


class MongoShipments:
    """``shipping_shipments``: one document per saga: scheduled -> cancelled, or failed."""

    def __init__(self, *, database: AsyncDatabase[Doc], undeliverable: tuple[str, ...]) -> None:
        self.shipments = database["shipping_shipments"]
        self.undeliverable = tuple(s.lower() for s in undeliverable)

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
        doc: Doc = {
            "_id": saga_id,
            "order_id": cmd.order_id,
            "ship_to": cmd.ship_to,
            "units": cmd.units,
            "status": "failed" if reason else "scheduled",
            "reason": reason,
            "shipment_id": "" if reason else f"ship-{saga_id}",
            "updated_at": _now(),
        }
        try:
            await self.shipments.insert_one(doc)
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
        try:
            done = await self.shipments.find_one_and_update(
                {"_id": saga_id, "status": "scheduled"},
                {"$set": {"status": "cancelled", "updated_at": _now()}},
            )
            if done is None:
                await self.shipments.insert_one(
                    {
                        "_id": saga_id,
                        "status": "cancelled",
                        "shipment_id": "",
                        "reason": "cancelled before it was scheduled",
                        "updated_at": _now(),
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
        self._shipments = MongoShipments(
            database=self.db, undeliverable=self.settings.shipping_undeliverable
        )
        self.on_command(ScheduleShipment, self.schedule)
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
