"""Payment participant: authorizes, voids, and captures on completion."""

from participants.payment.service import MongoPayments, PaymentService, main

__all__ = ["MongoPayments", "PaymentService", "main"]
