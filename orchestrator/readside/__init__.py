"""The read side: saga summaries and analytics for every saga, plus the projections
packs add (the order pack's stock levels and low-stock notifications), built from the
events exchange and rebuildable from the event store."""

from orchestrator.readside.analytics import SagaAnalytics
from orchestrator.readside.extension import ExtensionFactory, ReadSideExtension
from orchestrator.readside.rebuild import rebuild_projections
from orchestrator.readside.service import ReadSideService, extensions_of, main
from orchestrator.readside.summaries import SagaSummaries

__all__ = [
    "ExtensionFactory",
    "ReadSideExtension",
    "ReadSideService",
    "SagaAnalytics",
    "SagaSummaries",
    "extensions_of",
    "main",
    "rebuild_projections",
]
