"""The inventory's stock documents as an outside observer reads them (CLI, seeding, the
harness): ``inventory_stock`` holds ``available``, ``reserved``, ``shipped`` and the
hold of each saga under ``holds`` (units and the token of the attempt that made it).
Writes are the inventory service's; the only writer here is :func:`set_stock`, for a
harness or a test setting up its stock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

__all__ = ["Levels", "inventory_levels", "set_stock"]

STOCK = "inventory_stock"


@dataclass(frozen=True)
class Levels:
    """Stock of one SKU as the inventory holds it."""

    sku: str
    available: int
    reserved: int
    shipped: int

    @property
    def total(self) -> int:
        """available + reserved + shipped: constant whatever happens to sagas."""
        return self.available + self.reserved + self.shipped


async def inventory_levels(database: AsyncDatabase[dict[str, Any]], sku: str) -> Levels:
    """Current stock of a SKU (zeros if unknown)."""
    fields = {"available": 1, "reserved": 1, "shipped": 1}
    doc = await database[STOCK].find_one({"_id": sku}, fields) or {}
    return Levels(
        sku=sku,
        available=doc.get("available", 0),
        reserved=doc.get("reserved", 0),
        shipped=doc.get("shipped", 0),
    )


async def set_stock(database: AsyncDatabase[dict[str, Any]], sku: str, available: int) -> None:
    """Make ``available`` units of a SKU available, nothing reserved or shipped (setup of a
    harness run or a test, before any saga runs)."""
    await database[STOCK].update_one(
        {"_id": sku},
        {"$set": {"available": available, "reserved": 0, "shipped": 0, "holds": {}}},
        upsert=True,
    )
