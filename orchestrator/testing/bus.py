"""An in-memory outbox publisher: what the runtime publishes is kept, in order.

It implements the ``OutboxPublisher`` port: every published message is recorded in
:attr:`InMemoryOutboxPublisher.sent`, and commands also wait in
:attr:`InMemoryOutboxPublisher.commands` until the kit hands them to the scripted
participants. ``fail(times=n)`` makes the next ``n`` publishes go unconfirmed, as when the
broker is down, so a test can watch the outbox relay publish them later.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from orchestrator.errors import BrokerUnavailable

if TYPE_CHECKING:
    from contracts import Message
    from orchestrator.saga.commits import Commit, OutboxEntry

__all__ = ["InMemoryOutboxPublisher", "SentMessage"]


@dataclass(frozen=True, kw_only=True)
class SentMessage:
    """One published message: a command to a participant or an event."""

    saga_id: str
    kind: Literal["command", "event"]
    routing_key: str
    """``<participant>.<command>`` for commands, ``<saga>.<outcome>`` for events."""
    message_id: str
    message: Message
    causation_id: str
    """The id of the message (or deadline) whose commit sent it."""
    at: datetime

    @property
    def type(self) -> str:
        """The wire type, e.g. ``cars.book_car.v1``."""
        return self.message.TYPE


class InMemoryOutboxPublisher:
    """Keeps what it publishes; confirms at once unless told to fail."""

    def __init__(self, *, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.sent: list[SentMessage] = []
        self.commands: deque[SentMessage] = deque()
        self._failures = 0

    def fail(self, *, times: int = 1) -> None:
        """The next ``times`` publishes are not confirmed (``BrokerUnavailable``)."""
        self._failures += times

    async def publish(self, *, commit: Commit, entry: OutboxEntry) -> None:
        """Record ``entry`` (its message read back from the stored body, as the relay
        does); queue it for its participant if it is a command."""
        if self._failures:
            self._failures -= 1
            raise BrokerUnavailable("the in-memory broker did not confirm (kit.publisher.fail)")
        sent = SentMessage(
            saga_id=commit.saga_id,
            kind=entry.kind,
            routing_key=entry.routing_key,
            message_id=entry.message_id,
            message=entry.message(),
            causation_id=commit.causation_id,
            at=self.clock(),
        )
        self.sent.append(sent)
        if sent.kind == "command":
            self.commands.append(sent)
