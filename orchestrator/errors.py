"""Errors of the orchestrator package (and of the shared service kit it provides).

Three kinds of failure are kept apart everywhere: a business refusal is a normal reply
(never an exception here), a :class:`TransientError` is retried with backoff, and a
``contracts.MalformedMessage`` goes straight to the dead-letter queue.
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "ConcurrencyConflict",
    "DuplicateMessage",
    "NotConnected",
    "OrchestratorError",
    "StoreUnavailable",
    "TransientError",
]


class OrchestratorError(Exception):
    """Root of this package's errors."""


class NotConnected(OrchestratorError):
    """A service used a connection before connecting it (a programming error)."""


class TransientError(OrchestratorError):
    """Worth retrying later: the broker or the store did not answer, or a race was lost."""


class BrokerUnavailable(TransientError):
    """RabbitMQ refused, returned or did not confirm a message, or cannot be reached."""


class StoreUnavailable(TransientError):
    """MongoDB did not answer or failed a write for a reason other than a conflict."""


class ConcurrencyConflict(TransientError):
    """Someone else appended to the saga first: reload and decide again."""


class DuplicateMessage(OrchestratorError):
    """The message that caused this commit was already processed for this saga."""
