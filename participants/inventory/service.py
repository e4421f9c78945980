"""The inventory service: reserves and releases stock; ships it when a saga completes."""

from __future__ import annotations

import structlog

from contracts import (
    InventoryRestocked,
    ReleaseStock,
    ReserveStock,
    RestockStock,
    SagaCompleted,
    StockReleased,
    StockReservationFailed,
    StockReserved,
)
from contracts.base import Message
from orchestrator.host import run_service
from orchestrator.messaging.envelope import build_message
from participants.inventory.store import MongoInventory
from participants.kit import ParticipantService

__all__ = ["InventoryService", "main"]

log = structlog.get_logger("inventory")


class InventoryService(ParticipantService):
    """Consumes ``<ns>.inventory.commands`` and ``<ns>.inventory.events``."""

    service = "inventory"
    _inventory: MongoInventory | None = None

    @property
    def inventory(self) -> MongoInventory:
        """The stock store (after start)."""
        assert self._inventory is not None, "start() the service first"
        return self._inventory

    async def setup(self) -> None:
        """Register handlers and consumers."""
        self._inventory = MongoInventory(database=self.db)
        self.on_command(ReserveStock, self.reserve)
        self.on_command(ReleaseStock, self.release)
        self.on_command(RestockStock, self.restock)
        self.on_event(SagaCompleted, self.completed)
        self.consume("inventory.commands", self.handle_command)
        self.consume("inventory.events", self.handle_event)

    async def reserve(self, saga_id: str, cmd: ReserveStock) -> Message:
        """All lines or none."""
        outcome = await self.inventory.reserve(saga_id, cmd.lines)
        if outcome.reserved:
            return StockReserved(order_id=cmd.order_id)
        return StockReservationFailed(order_id=cmd.order_id, reason=outcome.reason, sku=outcome.sku)

    async def release(self, saga_id: str, cmd: ReleaseStock) -> Message:
        """Compensation."""
        await self.inventory.release(saga_id)
        return StockReleased(order_id=cmd.order_id)

    async def restock(self, restock_id: str, cmd: RestockStock) -> None:
        """Add units (once per restock id, the command's correlation id) and tell the read
        side, also when the units were added before (a redelivery after a crash)."""
        added = await self.inventory.apply_restock(cmd.sku, cmd.units, restock_id)
        event = InventoryRestocked(sku=cmd.sku, units=cmd.units, restock_id=restock_id)
        message = build_message(
            event,
            message_id=f"{restock_id}:restocked",
            correlation_id=restock_id,
            app_id=self.service,
        )
        await self.bus.publish(
            message,
            exchange=self.topology.events_exchange,
            routing_key="inventory.restocked",
            mandatory=False,
        )
        log.info("stock_restocked", sku=cmd.sku, units=cmd.units, added=added)

    async def completed(self, saga_id: str, event: SagaCompleted) -> None:
        """Held units become shipped units."""
        del event
        await self.inventory.ship(saga_id)


def main() -> None:
    """Entry point ``saga-inventory``."""
    run_service(InventoryService)
