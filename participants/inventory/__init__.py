"""Inventory participant: stock per SKU, all-or-nothing reservations, releases, shipping."""

from participants.inventory.service import InventoryService, StockNotReserved, main
from participants.inventory.store import Levels, MongoInventory, ReservationBusy
from participants.inventory.sweeper import HoldSweeper

__all__ = [
    "HoldSweeper",
    "InventoryService",
    "Levels",
    "MongoInventory",
    "ReservationBusy",
    "StockNotReserved",
    "main",
]
