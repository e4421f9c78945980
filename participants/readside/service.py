"""The read-side service: projections, low-stock notifications and analytics, each
consuming its own queue from the events exchange."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from contracts import InventoryRestocked, SagaProgressed
from orchestrator.host import ServiceHost, run_service
from participants.readside.analytics import SagaAnalytics
from participants.readside.notifications import (
    LowStockWatcher,
    Notifier,
    StoredLogNotifier,
    WebhookNotifier,
)
from participants.readside.stock import StockProjection, stock_state
from participants.readside.summaries import SagaSummaries

if TYPE_CHECKING:
    from orchestrator.messaging.envelope import Envelope

__all__ = ["ReadSideService", "main"]

log = structlog.get_logger("readside")


class ReadSideService(ServiceHost):
    """Consumes ``projections.sagas``, ``projections.stock``, ``notifications.events`` and
    ``analytics.events``."""

    service = "readside"
    summaries: SagaSummaries
    stock: StockProjection
    lowstock: LowStockWatcher
    analytics: SagaAnalytics

    async def setup(self) -> None:
        """Stores and consumers."""
        self.summaries = SagaSummaries(database=self.db)
        await self.summaries.ensure_indexes()
        self.stock = StockProjection(database=self.db)
        notifier: Notifier = (
            WebhookNotifier(self.settings.webhook_url)
            if self.settings.webhook_url
            else StoredLogNotifier()
        )
        self.lowstock = LowStockWatcher(
            database=self.db, threshold=self.settings.low_stock_threshold, notifier=notifier
        )
        self.analytics = SagaAnalytics(database=self.db)
        self.consume("projections.sagas", self.on_saga_summary)
        self.consume("projections.stock", self.on_stock)
        self.consume("notifications.events", self.on_notification)
        self.consume("analytics.events", self.on_analytics)

    async def on_saga_summary(self, envelope: Envelope) -> None:
        """Fold a progress event into the saga's summary."""
        if isinstance(envelope.message, SagaProgressed):
            await self.summaries.apply(envelope.correlation_id, envelope.message)

    async def on_stock(self, envelope: Envelope) -> None:
        """Record a saga's stock state or a restock."""
        message = envelope.message
        if isinstance(message, SagaProgressed):
            await self.stock.apply_saga(envelope.correlation_id, message)
        elif isinstance(message, InventoryRestocked):
            await self.stock.apply_restock(message)

    async def on_notification(self, envelope: Envelope) -> None:
        """Check the SKUs an event touched against the low-stock threshold."""
        message = envelope.message
        skus: list[str] = []
        if isinstance(message, SagaProgressed) and stock_state(message) is not None:
            skus = [line["sku"] for line in message.start.get("lines", [])]
        elif isinstance(message, InventoryRestocked):
            skus = [message.sku]
        for sku in skus:
            await self.lowstock.check(sku)

    async def on_analytics(self, envelope: Envelope) -> None:
        """Record ended sagas."""
        if isinstance(envelope.message, SagaProgressed):
            await self.analytics.apply(envelope.correlation_id, envelope.message)


def main() -> None:
    """Entry point ``saga-readside``."""
    run_service(ReadSideService)
