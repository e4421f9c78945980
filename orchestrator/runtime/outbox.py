"""Publishing what commits stored: straight after the commit, and again by the relay.

The dispatcher publishes a commit's outbox with publisher confirms and flags it
dispatched through the bookkeeper (one batched write, off the hot path). The relay finds
outboxes still pending after a grace period, e.g. after a crash between storing and
publishing, and publishes them again. Delivery is at least once; consumers dedupe.

An outbox that cannot be published (its route is gone, its stored body no longer
validates) is retried with a backoff of its own, then parked with the reason for an
operator (``saga outbox``); it never holds up the outboxes behind it. A broker that does
not answer is not an outbox's fault: the pass stops and nothing is counted. The relay
sleeps until the oldest pending outbox is due (at most ``idle`` seconds while there is
none) and the dispatcher wakes it when a publish fails.

Everything is published ``mandatory``, outcome events too, so that a message no queue
takes is seen rather than lost. What a return means depends on what was expected:

* a command, or an event some queue of this deployment's topology is meant to take (the
  read side's ``*.progressed``, a pack's ``order_fulfilment.*``): its binding is missing
  (a topology being deployed, or deleted by hand). ``Unroutable``: retried with the
  outbox's backoff, then parked with the reason (``saga outbox``, ``saga stuck``);
* an event no queue of the topology binds (the outcome of a saga nobody subscribes
  to): nobody was meant to hear it. It counts as published, and is logged
  (``outcome_event_unrouted``) and counted (``AmqpOutboxPublisher.unrouted_events``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from aio_pika.exceptions import PublishError

from orchestrator.errors import BrokerUnavailable, TransientError, Unroutable
from orchestrator.messaging.envelope import build_message
from orchestrator.observability import metrics, tracing
from orchestrator.runtime.batcher import Bookkeeper
from orchestrator.runtime.pacing import Backoff, Pacer
from orchestrator.runtime.progress import is_progress

if TYPE_CHECKING:
    import aio_pika

    from contracts import Message
    from orchestrator.messaging.bus import Bus
    from orchestrator.messaging.topology import Topology
    from orchestrator.ports import OutboxPublisher, OutboxStore
    from orchestrator.runtime.progress import ProgressBatcher
    from orchestrator.saga.commits import Commit, OutboxEntry, PendingOutbox

__all__ = [
    "AmqpOutboxPublisher",
    "Dispatcher",
    "OutboxRelay",
    "RelayStats",
    "expected",
    "topic_matches",
]

log = structlog.get_logger("outbox")


@dataclass(kw_only=True)
class AmqpOutboxPublisher:
    """Commands to the commands exchange (mandatory, reply_to the orchestrator),
    outcome events to the events exchange (mandatory: see the module's words on a
    return)."""

    bus: Bus
    app_id: str = "orchestrator"
    unrouted_events: int = 0
    """Events returned because no queue of the topology binds them (not an error)."""

    async def publish(self, *, commit: Commit, entry: OutboxEntry) -> None:
        """Publish with confirms; raises ``BrokerUnavailable`` if not confirmed. Commands
        name the saga's reply queue in ``reply_to``."""
        with tracing.publishing(commit, entry):  # tracing: publish (and step) span
            await self._publish(commit, entry)

    async def _publish(self, commit: Commit, entry: OutboxEntry) -> None:
        topology = self.bus.topology
        command = entry.kind == "command"
        message = build_message(
            entry.message(),
            message_id=entry.message_id,
            correlation_id=commit.saga_id,
            causation_id=commit.causation_id,
            reply_to=topology.reply_key(commit.saga_name) if command else None,
            app_id=self.app_id,
        )
        await self._send(
            message, command=command, routing_key=entry.routing_key, saga_id=commit.saga_id
        )

    async def publish_batch(self, batch: Message, *, message_id: str, routing_key: str) -> None:
        """Publish an event that stands for several commits' (progress events batched,
        see ``orchestrator.runtime.progress``), with confirms, as :meth:`publish` does.
        Its correlation id is its own id: it belongs to no one saga."""
        message = build_message(
            batch, message_id=message_id, correlation_id=message_id, app_id=self.app_id
        )
        await self._send(message, command=False, routing_key=routing_key, saga_id=None)

    async def _send(
        self, message: aio_pika.Message, *, command: bool, routing_key: str, saga_id: str | None
    ) -> None:
        topology = self.bus.topology
        exchange = topology.commands_exchange if command else topology.events_exchange
        try:
            await self.bus.publish(
                message, exchange=exchange, routing_key=routing_key, mandatory=True
            )
        except BrokerUnavailable as e:
            if not isinstance(e.__cause__, PublishError):
                raise
            # Returned: no queue takes it.
            if not command and not expected(topology, exchange, routing_key):
                self.unrouted_events += 1
                log.info(
                    "outcome_event_unrouted",
                    saga_id=saga_id,
                    routing_key=routing_key,
                    message_type=message.type,
                )
                return
            raise Unroutable(
                f"no queue is bound for {exchange}/{routing_key} ({message.type})"
            ) from e


def expected(topology: Topology, exchange: str, routing_key: str) -> bool:
    """Whether a work queue of the topology is bound to take ``routing_key`` from
    ``exchange`` (topic patterns: ``*`` one word, ``#`` any number)."""
    return any(
        q.exchange == exchange and any(topic_matches(b, routing_key) for b in q.bindings)
        for q in topology.work_queues
    )


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching of a binding key against a routing key."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and p[0] in ("*", k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), routing_key.split("."))


class Dispatcher:
    """Publishes commits' outboxes; the bookkeeper flags them dispatched in batches."""

    def __init__(
        self,
        *,
        store: OutboxStore,
        publisher: OutboxPublisher,
        bookkeeper: Bookkeeper | None = None,
        flush_interval: float = 0.05,
        batch_size: int = 500,
        progress: ProgressBatcher | None = None,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.progress = progress
        """Batches the commits' progress events, if given (``SAGA_PROGRESS_BATCH``)."""
        self.bookkeeper = bookkeeper or Bookkeeper(
            outbox=store, flush_interval=flush_interval, batch_size=batch_size
        )
        self.on_failure: list[Callable[[], None]] = []
        """Called when a publish was not confirmed, or was cancelled before its confirm
        (the relay takes it from there)."""
        self.published = 0

    async def dispatch(self, commit: Commit) -> bool:
        """Publish every message of the commit. False if the broker did not confirm them
        all: the commit stays pending and the relay tries again."""
        try:
            await self.publish(commit)
        except TransientError as e:
            log.warning(
                "outbox_publish_failed",
                saga_id=commit.saga_id,
                version=commit.version,
                error=str(e),
            )
            self._failed()
            return False
        except asyncio.CancelledError:
            # The caller was cancelled mid-publish: e.g. the client library cancels the
            # handlers of a channel that closed with its node. The commit is stored and
            # its outbox pending; the relay takes it after its grace, not its idle time.
            log.info("outbox_publish_cancelled", saga_id=commit.saga_id, version=commit.version)
            self._failed()
            raise
        return True

    def _failed(self) -> None:
        for hook in self.on_failure:
            hook()

    async def publish(self, commit: Commit) -> None:
        """Publish every message of the commit, then flag it (lazily); raises what the
        publisher raised for the first message that failed."""
        if not commit.outbox:
            return
        results = await asyncio.gather(
            *(self._publish(commit, entry) for entry in commit.outbox), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        self.published += len(commit.outbox)
        self.bookkeeper.dispatched(commit.id)
        if self.bookkeeper.full():
            await self.bookkeeper.flush()

    def _publish(self, commit: Commit, entry: OutboxEntry) -> Awaitable[None]:
        if self.progress is not None and is_progress(entry):
            return self.progress.publish(commit, entry)
        return self.publisher.publish(commit=commit, entry=entry)

    async def flush(self) -> None:
        """Flag everything published so far."""
        await self.bookkeeper.flush()

    async def run(self) -> None:
        """Flush the flags a moment after each publish until cancelled, then once more."""
        await self.bookkeeper.run()


@dataclass
class RelayStats:
    """What the relay did since it started (for operators and tests)."""

    relayed: int = 0
    deferred: int = 0
    parked: int = 0
    passes: int = 0
    last_error: str = ""
    parked_ids: list[str] = field(default_factory=list)


class OutboxRelay:
    """Publishes outboxes the dispatcher did not get to (crash, broker outage), each
    with its own backoff; parks those that keep failing."""

    def __init__(
        self,
        *,
        store: OutboxStore,
        dispatcher: Dispatcher,
        clock: Callable[[], datetime],
        saga_names: Sequence[str] | None = None,
        grace: float = 5.0,
        interval: float = 1.0,
        idle: float = 30.0,
        batch_size: int = 200,
        backoff: Backoff | None = None,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.saga_names = list(saga_names) if saga_names is not None else None
        self.grace = grace
        self.batch_size = batch_size
        self.backoff = backoff or Backoff()
        self.pacer = Pacer(interval=interval, idle=idle)
        self.stats = RelayStats()
        self._full = self._paused = False

    @property
    def relayed(self) -> int:
        """Commits published by the relay so far."""
        return self.stats.relayed

    def wake(self) -> None:
        """A publish failed: look again once its grace has passed."""
        self.pacer.wake_in(self.grace)

    async def run_once(self) -> int:
        """Publish one batch of overdue outboxes; returns how many commits were published."""
        self.stats.passes += 1
        now = self.clock()
        overdue = await self.store.undispatched(
            older_than=now - timedelta(seconds=self.grace),
            limit=self.batch_size,
            saga_names=self.saga_names,
        )
        self._full, self._paused = len(overdue) >= self.batch_size, False
        done = 0
        for pending in overdue:
            try:
                with tracing.relaying(pending.commit):  # tracing: in the stored trace
                    await self.dispatcher.publish(pending.commit)
            except Unroutable as e:
                await self._failed(pending, e, now)
            except TransientError as e:  # the broker is away: not this outbox's fault
                log.warning("outbox_relay_paused", error=str(e), left=len(overdue) - done)
                self.stats.last_error = str(e)
                self._paused = True
                break
            except Exception as e:  # e.g. a stored message that no longer validates
                await self._failed(pending, e, now)
            else:
                done += 1
        if overdue:
            log.info("outbox_relayed", commits=done, overdue=len(overdue))
        self.stats.relayed += done
        metrics.outbox_backlog(len(overdue) - done)
        if overdue:
            metrics.outbox_oldest(now, min(p.commit.created_at for p in overdue))
        return done

    async def _failed(self, pending: PendingOutbox, error: Exception, now: datetime) -> None:
        commit = pending.commit
        attempts = pending.attempts + 1
        reason = f"{type(error).__name__}: {error}"[:500]
        self.stats.last_error = reason
        if self.backoff.exhausted(attempts):
            await self.store.park_outbox(commit.id, reason=reason, attempts=attempts)
            self.stats.parked += 1
            self.stats.parked_ids = [*self.stats.parked_ids[-99:], commit.id]
            log.error(
                "outbox_parked",
                saga_id=commit.saga_id,
                version=commit.version,
                attempts=attempts,
                reason=reason,
            )
            return
        # The relay takes an outbox ``grace`` after its time: shift so it comes back
        # after the backoff delay.
        delay = self.backoff.delay(attempts) - self.grace
        await self.store.defer_outbox(
            commit.id, until=now + timedelta(seconds=delay), attempts=attempts, error=reason
        )
        self.stats.deferred += 1
        log.warning(
            "outbox_unpublishable",
            saga_id=commit.saga_id,
            version=commit.version,
            attempts=attempts,
            error=reason,
        )

    async def _next_pass_in(self) -> float:
        if self._paused:
            return self.pacer.interval
        if self._full:
            return 0.0
        upcoming = await self.store.next_undispatched(saga_names=self.saga_names)
        metrics.outbox_oldest(self.clock(), upcoming)
        if upcoming is None:
            return self.pacer.idle
        due = upcoming + timedelta(seconds=self.grace)
        return max((due - self.clock()).total_seconds(), 0.001)  # the interval is the floor

    async def run(self) -> None:
        """Poll until cancelled: again at once while batches come full, else when the
        oldest pending outbox is due, at most ``idle`` seconds apart."""
        while True:
            self.pacer.passed()
            pause = self.pacer.interval
            try:
                await self.run_once()
                pause = await self._next_pass_in()
            except TransientError as e:
                log.warning("outbox_relay_failed", error=str(e))
            except Exception:  # keep relaying whatever happened; it is logged
                log.exception("outbox_relay_crashed")
            await self.pacer.sleep(pause)
