"""The read side: saga summaries and stock-level projections, low-stock notifications
and analytics, built from the events exchange; rebuildable from the event store."""

from participants.readside.analytics import SagaAnalytics
from participants.readside.notifications import LowStock, LowStockWatcher, Notifier
from participants.readside.rebuild import rebuild_projections
from participants.readside.service import ReadSideService, main
from participants.readside.stock import StockLevels, StockProjection
from participants.readside.stuck import stuck_reason
from participants.readside.summaries import SagaSummaries

__all__ = [
    "LowStock",
    "LowStockWatcher",
    "Notifier",
    "ReadSideService",
    "SagaAnalytics",
    "SagaSummaries",
    "StockLevels",
    "StockProjection",
    "main",
    "rebuild_projections",
    "stuck_reason",
]
