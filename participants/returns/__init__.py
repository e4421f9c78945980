"""Returns participant: accepts returns of completed orders and cancels them."""

from participants.returns.policy import ReturnPolicy
from participants.returns.service import ReturnsService, main
from participants.returns.store import Decision, MongoReturns

__all__ = ["Decision", "MongoReturns", "ReturnPolicy", "ReturnsService", "main"]
