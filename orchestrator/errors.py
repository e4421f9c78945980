"""Errors of the orchestrator package (and of the shared service kit it provides).

Three kinds of failure are kept apart everywhere: a business refusal is a normal reply
(never an exception here), a :class:`TransientError` is retried with backoff, and a
``contracts.MalformedMessage`` goes straight to the dead-letter queue.
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "ConcurrencyConflict",
    "Deferred",
    "DuplicateMessage",
    "NotConnected",
    "OrchestratorError",
    "SagaNotServed",
    "StartupRefused",
    "StoreUnavailable",
    "TransientError",
    "Unroutable",
]


class OrchestratorError(Exception):
    """Root of this package's errors."""


class NotConnected(OrchestratorError):
    """A service used a connection before connecting it (a programming error)."""


class TransientError(OrchestratorError):
    """Worth retrying later: the broker or the store did not answer, or a race was lost."""


class BrokerUnavailable(TransientError):
    """RabbitMQ refused, returned or did not confirm a message, or cannot be reached."""


class Unroutable(BrokerUnavailable):
    """The broker returned a mandatory message: no queue is bound for its routing key.
    Transient while a topology is being deployed, permanent if the route is gone."""


class StoreUnavailable(TransientError):
    """MongoDB did not answer or failed a write for a reason other than a conflict."""


class ConcurrencyConflict(TransientError):
    """Someone else appended to the saga first: reload and decide again."""


class Deferred(TransientError):
    """The message is not for this instance: leave it for another that can take it. The
    consumer sends it round again through the first retry tier without counting an
    attempt, so it is never dead-lettered for this."""


class SagaNotServed(Deferred):
    """A message for a saga whose definition (name and version) this orchestrator does not
    serve; another instance that does (during a rolling deploy) takes it."""


class StartupRefused(OrchestratorError):
    """The service will not start with this configuration; the message says why and
    what to do."""


class DuplicateMessage(OrchestratorError):
    """The message that caused this commit was already processed for this saga."""
