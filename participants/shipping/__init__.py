"""Shipping participant: schedules and cancels shipments."""

from participants.shipping.service import MongoShipments, ShippingService, main

__all__ = ["MongoShipments", "ShippingService", "main"]
