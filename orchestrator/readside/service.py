"""The read-side service: saga summaries and analytics for every saga, plus the
projections each registered pack adds, each consuming its own queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from contracts import SagaProgressed
from orchestrator.readside.analytics import SagaAnalytics
from orchestrator.readside.summaries import SagaSummaries
from orchestrator.runtime.host import ServiceHost, run_service

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from orchestrator.messaging.envelope import Envelope
    from orchestrator.readside.extension import ReadSideExtension
    from orchestrator.settings import Settings

__all__ = ["ReadSideService", "extensions_of", "main"]

log = structlog.get_logger("readside")


def extensions_of(
    settings: Settings, database: AsyncDatabase[dict[str, Any]]
) -> dict[str, ReadSideExtension]:
    """The read-side extensions of the registered packs, by pack name."""
    found: dict[str, ReadSideExtension] = {}
    for pack in settings.packs():
        factory = pack.part("readside")
        if factory is not None:
            found[pack.name] = factory(database, settings)
    return found


class ReadSideService(ServiceHost):
    """Consumes ``projections.sagas`` and ``analytics.events``, and the queues of the
    packs' projections (``projections.stock``, ``notifications.events``, ...)."""

    service = "readside"
    summaries: SagaSummaries
    analytics: SagaAnalytics
    extensions: dict[str, ReadSideExtension]

    async def setup(self) -> None:
        """Stores and consumers."""
        self.summaries = SagaSummaries(database=self.db)
        await self.summaries.ensure_indexes()
        self.analytics = SagaAnalytics(database=self.db)
        self.consume("projections.sagas", self.on_saga_summary)
        self.consume("analytics.events", self.on_analytics)
        self.extensions = extensions_of(self.settings, self.db)
        for extension in self.extensions.values():
            await extension.ensure_indexes()
            for queue, handler in extension.handlers().items():
                self.consume(queue, handler)

    async def stop(self) -> None:
        """Stop consuming, then release what the extensions hold."""
        await super().stop()
        for extension in getattr(self, "extensions", {}).values():
            await extension.close()

    async def on_saga_summary(self, envelope: Envelope) -> None:
        """Fold a progress event into the saga's summary."""
        if isinstance(envelope.message, SagaProgressed):
            await self.summaries.apply(envelope.correlation_id, envelope.message)

    async def on_analytics(self, envelope: Envelope) -> None:
        """Record ended sagas."""
        if isinstance(envelope.message, SagaProgressed):
            await self.analytics.apply(envelope.correlation_id, envelope.message)


def main() -> None:
    """Entry point ``saga-readside``."""
    run_service(ReadSideService)
