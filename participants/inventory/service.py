"""The inventory service: reserves, releases and ships stock; restocks.

Shipping comes as the ``ShipStock`` command (a retriable step after the pivot, order
fulfilment v2) and, for the sagas that completed without that step (v1, the parallel
variant), as the reaction to ``SagaCompleted``: both move the held units to shipped
exactly once (the reservation flips reserved -> shipped once; a repeat finds it shipped).
A completed return saga's ``SagaCompleted`` settles its take-back instead
(:meth:`StockReturns.settle`)."""

from __future__ import annotations

import structlog

from contracts import (
    InventoryRestocked,
    ReleaseStock,
    ReserveStock,
    RestockStock,
    SagaCompleted,
    ShipStock,
    StockReleased,
    StockReservationFailed,
    StockReserved,
    StockShipped,
)
from contracts.base import Message
from orchestrator.messaging.envelope import build_message
from orchestrator.runtime.host import run_service
from orchestrator.settings import env_float
from participants.inventory.restocks import RESTOCK_RETENTION_SECONDS
from participants.inventory.returns import (
    RETURN_RETENTION_SECONDS,
    StockReturns,
    register_returns,
)
from participants.inventory.store import MongoInventory
from participants.inventory.sweeper import SWEEP_SECONDS, HoldSweeper
from participants.kit.retention import record_retention
from participants.kit.service import ParticipantError, ParticipantService
from participants.kit.writes import write_window
from participants.order_outcomes import done_by_step

__all__ = ["InventoryService", "StockNotReserved", "main"]

log = structlog.get_logger("inventory")
RETURN_SAGAS = ("order_return",)
"""Sagas whose completion settles a take-back (the order-return pack's), by name."""


class StockNotReserved(ParticipantError):
    """ShipStock for a saga whose stock is not reserved (released, failed or unknown):
    retried, then dead-lettered with this reason, never answered as shipped."""


class InventoryService(ParticipantService):
    """Consumes ``<ns>.inventory.commands`` and ``<ns>.inventory.events``."""

    service = "inventory"
    _inventory: MongoInventory | None = None
    returns: StockReturns
    """Take-backs of the order-return saga (after start)."""
    sweeper: HoldSweeper
    """Settles holds no command will come back for (after start)."""

    @property
    def inventory(self) -> MongoInventory:
        """The stock store (after start)."""
        assert self._inventory is not None, "start() the service first"
        return self._inventory

    async def setup(self) -> None:
        """Register handlers and consumers."""
        retention = env_float(
            self.settings.env(), "INVENTORY_RESTOCK_RETENTION_SECONDS", RESTOCK_RETENTION_SECONDS
        )
        self._inventory = MongoInventory(
            database=self.db,
            restock_retention_seconds=retention,
            record_retention_seconds=record_retention(self.settings.env()),
            write_window=write_window(self.settings.env()),
        )
        await self._inventory.ensure_indexes()
        sweep = env_float(self.settings.env(), "INVENTORY_SWEEP_SECONDS", SWEEP_SECONDS)
        self.sweeper = HoldSweeper(inventory=self._inventory, interval=sweep)
        self.background(self.sweeper.run)
        self.on_command(
            ReserveStock,
            self.reserve,
            refusal=lambda c, reason: StockReservationFailed(order_id=c.order_id, reason=reason),
        )
        self.on_command(ReleaseStock, self.release)
        self.on_command(ShipStock, self.ship)
        self.on_command(RestockStock, self.restock)
        kept = env_float(
            self.settings.env(), "INVENTORY_RETURN_RETENTION_SECONDS", RETURN_RETENTION_SECONDS
        )
        self.returns = register_returns(self, retention_seconds=kept)
        await self.returns.ensure_indexes()
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
        await self.inventory.release(saga_id, cmd.lines)
        return StockReleased(order_id=cmd.order_id)

    async def ship(self, saga_id: str, cmd: ShipStock) -> Message:
        """Retriable step: held units become shipped units, once."""
        outcome = await self.inventory.ship(saga_id)
        if not outcome.shipped:
            status = outcome.status or "unknown"
            raise StockNotReserved(f"saga {saga_id}: cannot ship stock that is {status}")
        return StockShipped(order_id=cmd.order_id, units=outcome.units)

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
        """Held units become shipped units, for a saga that completed without its own
        ship_stock step (order fulfilment v1, the parallel variant); one whose step
        already shipped is left alone without a store access (see
        :mod:`participants.order_outcomes`). A completed return's take-back is final:
        its marks leave the SKU documents."""
        if event.saga_name in RETURN_SAGAS:
            await self.returns.settle(saga_id)
            return
        if done_by_step(event, "ship_stock"):
            return
        await self.inventory.ship(saga_id)


def main() -> None:
    """Entry point ``saga-inventory``."""
    run_service(InventoryService)
