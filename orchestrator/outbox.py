"""Publishing what commits stored: straight after the commit, and again by the relay.

The dispatcher publishes a commit's outbox with publisher confirms and flags it
dispatched in batches (one ``update_many`` per flush, off the hot path). The relay finds
commits still unflagged after a grace period, e.g. after a crash between storing and
publishing, and publishes them again. Delivery is at least once; consumers dedupe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import structlog

from orchestrator.errors import TransientError
from orchestrator.messaging.envelope import build_message

if TYPE_CHECKING:
    from orchestrator.messaging.bus import Bus
    from orchestrator.store import Commit, OutboxEntry, SagaStore

__all__ = ["AmqpOutboxPublisher", "Dispatcher", "OutboxPublisher", "OutboxRelay"]

log = structlog.get_logger("outbox")


class OutboxPublisher(Protocol):
    """Sends one stored message; returns once the broker confirmed it."""

    async def publish(self, *, saga_id: str, causation_id: str, entry: OutboxEntry) -> None:
        """Publish ``entry`` for ``saga_id``."""
        ...


@dataclass(frozen=True, kw_only=True)
class AmqpOutboxPublisher:
    """Commands to the commands exchange (mandatory, reply_to the orchestrator),
    outcome events to the events exchange."""

    bus: Bus
    app_id: str = "orchestrator"

    async def publish(self, *, saga_id: str, causation_id: str, entry: OutboxEntry) -> None:
        """Publish with confirms; raises ``BrokerUnavailable`` if not confirmed."""
        topology = self.bus.topology
        command = entry.kind == "command"
        message = build_message(
            entry.message(),
            message_id=entry.message_id,
            correlation_id=saga_id,
            causation_id=causation_id,
            reply_to=topology.reply_key if command else None,
            app_id=self.app_id,
        )
        exchange = topology.commands_exchange if command else topology.events_exchange
        await self.bus.publish(
            message, exchange=exchange, routing_key=entry.routing_key, mandatory=command
        )


class Dispatcher:
    """Publishes commits' outboxes and flags them dispatched in batches."""

    def __init__(
        self,
        *,
        store: SagaStore,
        publisher: OutboxPublisher,
        flush_interval: float = 0.05,
        batch_size: int = 500,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self._pending: list[str] = []
        self.published = 0

    async def dispatch(self, commit: Commit) -> bool:
        """Publish every message of the commit. False if the broker did not confirm them
        all: the commit stays undispatched and the relay tries again."""
        if not commit.outbox:
            return True
        try:
            await asyncio.gather(
                *(
                    self.publisher.publish(
                        saga_id=commit.saga_id, causation_id=commit.causation_id, entry=entry
                    )
                    for entry in commit.outbox
                )
            )
        except TransientError as e:
            log.warning(
                "outbox_publish_failed",
                saga_id=commit.saga_id,
                version=commit.version,
                error=str(e),
            )
            return False
        self.published += len(commit.outbox)
        self._pending.append(commit.id)
        if len(self._pending) >= self.batch_size:
            await self.flush()
        return True

    async def flush(self) -> None:
        """Flag everything published so far."""
        pending, self._pending = self._pending, []
        try:
            await self.store.mark_dispatched(pending)
        except TransientError as e:
            # Unflagged commits are only published again by the relay: harmless duplicates.
            log.warning("outbox_flag_failed", commits=len(pending), error=str(e))

    async def run(self) -> None:
        """Flush periodically until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(self.flush_interval)
                if self._pending:
                    await self.flush()
        finally:
            if self._pending:
                await asyncio.shield(self.flush())


class OutboxRelay:
    """Publishes commits the dispatcher did not get to (crash, broker outage)."""

    def __init__(
        self,
        *,
        store: SagaStore,
        dispatcher: Dispatcher,
        clock: Callable[[], datetime],
        grace: float = 5.0,
        interval: float = 1.0,
        batch_size: int = 200,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.grace = grace
        self.interval = interval
        self.batch_size = batch_size
        self.relayed = 0

    async def run_once(self) -> int:
        """Publish one batch of overdue outboxes; returns how many commits were published."""
        overdue = await self.store.undispatched(
            older_than=self.clock() - timedelta(seconds=self.grace), limit=self.batch_size
        )
        done = 0
        for commit in overdue:
            try:
                if await self.dispatcher.dispatch(commit):
                    done += 1
            except Exception:  # e.g. a stored message no longer valid: skip, keep relaying
                log.exception(
                    "outbox_commit_unpublishable", saga_id=commit.saga_id, version=commit.version
                )
        if overdue:
            log.info("outbox_relayed", commits=done, overdue=len(overdue))
        self.relayed += done
        return done

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            try:
                await self.run_once()
            except TransientError as e:
                log.warning("outbox_relay_failed", error=str(e))
            except Exception:  # keep relaying whatever happened; it is logged
                log.exception("outbox_relay_crashed")
            await asyncio.sleep(self.interval)
