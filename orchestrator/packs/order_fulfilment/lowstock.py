"""Low-stock notifications: once per crossing below a SKU's threshold, not once per event.

Each SKU has a small state document (``above`` or ``below``). An event that touches a SKU
reads its available units from the inventory; going below the threshold flips the state
with a conditional write, and only the write that flips it notifies. Coming back to the
threshold or above re-arms it. The notification is stored before it is delivered, so a
failed delivery is retried (through the consumer's retry tiers) without a second record.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import structlog
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError, PyMongoError

from orchestrator.errors import StoreUnavailable, TransientError
from orchestrator.store.writes import DocumentWrites

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

__all__ = ["LowStock", "LowStockWatcher", "Notifier", "StoredLogNotifier", "WebhookNotifier"]

log = structlog.get_logger("notifications")
Doc = dict[str, Any]


@dataclass(frozen=True)
class LowStock:
    """A SKU went below its threshold."""

    id: str
    sku: str
    available: int
    threshold: int
    at: datetime

    def as_doc(self) -> Doc:
        """JSON-friendly form (webhook body, stored record)."""
        return {
            "id": self.id,
            "sku": self.sku,
            "available": self.available,
            "threshold": self.threshold,
            "at": self.at.isoformat(),
        }


class Notifier(Protocol):
    """Delivers one notification; raising makes the consumer retry it later."""

    async def deliver(self, note: LowStock) -> None:
        """Send ``note`` somewhere."""
        ...

    async def close(self) -> None:
        """Release what deliveries hold (connections)."""
        ...


class StoredLogNotifier:
    """The default delivery: a structured log line (the record is stored anyway)."""

    async def deliver(self, note: LowStock) -> None:
        """Log it."""
        log.warning("low_stock", **note.as_doc())

    async def close(self) -> None:
        """Nothing to release."""


class WebhookNotifier:
    """POSTs the notification as JSON to a URL, after logging it. One HTTP client serves
    every delivery (its connection pool is reused), made at the first one and closed by
    :meth:`close`."""

    def __init__(
        self, url: str, *, timeout: float = 5.0, client: httpx.AsyncClient | None = None
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._client = client

    @property
    def client(self) -> httpx.AsyncClient:
        """The shared client of every delivery."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        return self._client

    async def deliver(self, note: LowStock) -> None:
        """POST; a failure raises a TransientError (retried with backoff)."""
        await StoredLogNotifier().deliver(note)
        try:
            response = await self.client.post(self.url, json=note.as_doc())
            response.raise_for_status()
        except httpx.HTTPError as e:
            raise TransientError(f"low-stock webhook {self.url} failed: {e}") from e

    async def close(self) -> None:
        """Close the shared client (a later delivery opens a new one)."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


class LowStockWatcher:
    """Checks SKUs after stock events and notifies on each downward crossing."""

    def __init__(self, *, database: AsyncDatabase[Doc], threshold: int, notifier: Notifier) -> None:
        self.stock = database["inventory_stock"]
        self.states = database["readside_lowstock"]
        self.rearm = DocumentWrites(self.states)
        """Re-arming (below -> above): group-committed, as nothing depends on its count."""
        self.records = database["readside_notifications"]
        self.threshold = threshold
        self.notifier = notifier

    async def ensure_indexes(self) -> None:
        """Every stock event looks up a SKU's undelivered notifications."""
        await self.records.create_index([("sku", ASCENDING), ("delivered", ASCENDING)])
        await self.records.create_index([("sku", ASCENDING), ("at", ASCENDING)])

    async def check(self, sku: str) -> LowStock | None:
        """Look at one SKU now; the notification if this call saw it cross."""
        try:
            doc = await self.stock.find_one({"_id": sku}, {"available": 1})
            if doc is None:
                return None
            available = int(doc.get("available", 0))
            if available >= self.threshold:
                await self.rearm.update(
                    {"_id": sku, "state": "below"}, {"$set": {"state": "above"}}
                )
                return await self._undelivered(sku)
            return await self._cross(sku, available)
        except PyMongoError as e:
            raise StoreUnavailable(f"low-stock check of {sku} failed: {e}") from e

    async def _cross(self, sku: str, available: int) -> LowStock | None:
        try:
            flipped = await self.states.find_one_and_update(
                {"_id": sku, "state": {"$ne": "below"}},
                {"$set": {"state": "below"}, "$inc": {"crossings": 1}},
                upsert=True,
                return_document=True,
            )
        except DuplicateKeyError:
            return await self._undelivered(sku)  # already below: no new crossing
        if flipped is None:  # already below (some servers return None instead of raising)
            return await self._undelivered(sku)
        note = LowStock(
            id=f"{sku}:{flipped['crossings']}",
            sku=sku,
            available=available,
            threshold=self.threshold,
            at=datetime.now(UTC),
        )
        with contextlib.suppress(DuplicateKeyError):
            await self.records.insert_one({"_id": note.id, **note.as_doc(), "delivered": "no"})
        return await self._deliver(note)

    async def _undelivered(self, sku: str) -> LowStock | None:
        """Retry a stored notification whose delivery failed earlier."""
        doc = await self.records.find_one({"sku": sku, "delivered": "no"})
        if doc is None:
            return None
        note = LowStock(
            id=doc["_id"],
            sku=sku,
            available=doc["available"],
            threshold=doc["threshold"],
            at=datetime.fromisoformat(doc["at"]),
        )
        return await self._deliver(note)

    async def _deliver(self, note: LowStock) -> LowStock:
        await self.notifier.deliver(note)
        await self.records.update_one({"_id": note.id}, {"$set": {"delivered": "yes"}})
        return note

    async def notifications(self, sku: str | None = None) -> list[Doc]:
        """Stored notifications, oldest first."""
        query: Doc = {"sku": sku} if sku else {}
        return await self.records.find(query).sort("at", 1).to_list(None)
