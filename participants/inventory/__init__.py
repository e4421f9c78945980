"""Inventory participant: stock per SKU, all-or-nothing reservations, releases."""

from participants.inventory.service import InventoryService, main
from participants.inventory.store import Levels, MongoInventory, ReservationBusy

__all__ = ["InventoryService", "Levels", "MongoInventory", "ReservationBusy", "main"]
