"""The order pack's read side: stock levels per SKU and low-stock notifications."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from contracts import InventoryRestocked, SagaProgressed
from orchestrator.packs.order_fulfilment.definition import ORDER_SAGAS
from orchestrator.packs.order_fulfilment.lowstock import (
    LowStockWatcher,
    Notifier,
    StoredLogNotifier,
    WebhookNotifier,
)
from orchestrator.packs.order_fulfilment.stock import RETURN_SAGAS, StockProjection, stock_state
from orchestrator.settings import env_int

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from orchestrator.messaging.envelope import Envelope
    from orchestrator.settings import Settings

__all__ = ["LOW_STOCK_THRESHOLD", "StockReadSide", "install"]

LOW_STOCK_THRESHOLD = 5
"""Default of ``LOW_STOCK_THRESHOLD``."""
EXPIRED_RESTOCKS = "expired-restocks:"
"""Prefix of the row a rebuild writes per SKU for restocks whose records expired."""
STOCK_SAGAS = (*ORDER_SAGAS, *RETURN_SAGAS)
"""Sagas whose progress moves stock: orders reserve and ship it, returns take it back."""


class StockReadSide:
    """``projections.stock`` and ``notifications.events``."""

    collections = StockProjection.collections

    def __init__(self, *, database: AsyncDatabase[dict[str, Any]], settings: Settings) -> None:
        env = settings.env()
        url = env.get("LOW_STOCK_WEBHOOK_URL") or None
        notifier: Notifier = WebhookNotifier(url) if url else StoredLogNotifier()
        self.database = database
        self.stock = StockProjection(database=database)
        self.lowstock = LowStockWatcher(
            database=database,
            threshold=env_int(env, "LOW_STOCK_THRESHOLD", LOW_STOCK_THRESHOLD),
            notifier=notifier,
        )

    def handlers(self) -> Mapping[str, Callable[[Envelope], Awaitable[None]]]:
        """Queue suffix -> handler."""
        return {"projections.stock": self.on_stock, "notifications.events": self.on_notification}

    async def close(self) -> None:
        """Close the low-stock notifier's HTTP client, if it has one."""
        await self.lowstock.notifier.close()

    async def ensure_indexes(self) -> None:
        """What the reads need: stock is read by SKU id; notifications by (sku,
        delivered)."""
        await self.stock.ensure_indexes()
        await self.lowstock.ensure_indexes()

    async def on_stock(self, envelope: Envelope) -> None:
        """Record a saga's stock state (an order's, a return's) or a restock."""
        message = envelope.message
        if isinstance(message, SagaProgressed) and message.saga_name in STOCK_SAGAS:
            await self.stock.apply_saga(envelope.correlation_id, message)
        elif isinstance(message, InventoryRestocked):
            await self.stock.apply_restock(message)

    async def on_notification(self, envelope: Envelope) -> None:
        """Check the SKUs an event touched against the low-stock threshold."""
        message = envelope.message
        skus: list[str] = []
        if (
            isinstance(message, SagaProgressed)
            and message.saga_name in STOCK_SAGAS
            and stock_state(message) is not None
        ):
            skus = [line["sku"] for line in message.start.get("lines", [])]
        elif isinstance(message, InventoryRestocked):
            skus = [message.sku]
        for sku in skus:
            await self.lowstock.check(sku)

    async def rebuild_begin(self) -> None:
        """Replay the inventory's restocks: one row per record of its restock ledger
        (``inventory_restocks``, kept for ``INVENTORY_RESTOCK_RETENTION_SECONDS``), one
        row per SKU for the units its cumulative ``restocked`` counts beyond the records
        still kept (those past the retention), and the restocks recorded in the stock
        documents by versions before the ledger."""
        # The SKUs' counts are read before the ledger: a restock added in between has a
        # later position, so it is counted once, from its record.
        counted = self.database["inventory_stock"].find(
            {"restocked": {"$exists": True}},
            {"restocked": 1, "restock_seq": 1, "restocked_since": 1},
        )
        beyond = {doc["_id"]: _Counted(doc) async for doc in counted}
        ledger = self.database["inventory_restocks"].find({}, {"sku": 1, "units": 1, "seq": 1})
        async for doc in ledger:
            await self.stock.apply_restock(
                InventoryRestocked(sku=doc["sku"], units=doc["units"], restock_id=doc["_id"])
            )
            if doc["sku"] in beyond:
                beyond[doc["sku"]].kept(int(doc.get("seq", 0)), int(doc["units"]))
        for sku, count in beyond.items():
            if count.units:
                restock_id = f"{EXPIRED_RESTOCKS}{sku}"
                event = InventoryRestocked(sku=sku, units=count.units, restock_id=restock_id)
                await self.stock.apply_restock(event)
        older = self.database["inventory_stock"].find(
            {"restocks": {"$exists": True}}, {"restocks": 1}
        )
        async for doc in older:
            for restock_id, units in (doc.get("restocks") or {}).items():
                await self.stock.apply_restock(
                    InventoryRestocked(sku=doc["_id"], units=units, restock_id=restock_id)
                )

    async def rebuild_saga(self, saga_id: str, events: list[SagaProgressed]) -> None:
        """Replay one order or return saga's stock states."""
        for progressed in events:
            if progressed.saga_name in STOCK_SAGAS:
                await self.stock.apply_saga(saga_id, progressed)


class _Counted:
    """A SKU's cumulative ``restocked`` less the units of the records still kept that
    it counts (positions ``restocked_since + 1`` to ``restock_seq``)."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.units = int(doc.get("restocked", 0))
        self.first = int(doc.get("restocked_since", 0)) + 1
        self.last = int(doc.get("restock_seq", 0))

    def kept(self, seq: int, units: int) -> None:
        """A record at position ``seq`` is replayed as its own row."""
        if self.first <= seq <= self.last:
            self.units -= units


def install(database: AsyncDatabase[dict[str, Any]], settings: Settings) -> StockReadSide:
    """The pack's read-side extension (its ``readside`` part)."""
    return StockReadSide(database=database, settings=settings)
