"""The orchestrator service: runs every registered saga, consuming each saga's start and
reply queues, with the outbox relay, the deadline watcher and (if configured) history
retention beside it. Commits of concurrent handlers share inserts (group commit)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from orchestrator.errors import StartupRefused, TransientError
from orchestrator.ops.retention import prune_history, saga_keyed_collections
from orchestrator.runtime.batcher import Bookkeeper, CommitBatcher
from orchestrator.runtime.deadlines import DeadlineWatcher
from orchestrator.runtime.engine import SagaRuntime, utcnow
from orchestrator.runtime.host import ServiceHost, run_service
from orchestrator.runtime.options import RuntimeOptions
from orchestrator.runtime.outbox import AmqpOutboxPublisher, Dispatcher, OutboxRelay
from orchestrator.runtime.progress import MAX_BATCH_BYTES, ProgressBatcher
from orchestrator.saga.registry import VersionInUse
from orchestrator.store.mongo import MongoSagaStore

if TYPE_CHECKING:
    from orchestrator.saga.registry import SagaRegistry
    from orchestrator.settings import Settings

__all__ = ["OrchestratorService", "main"]

log = structlog.get_logger("orchestrator")


class OrchestratorService(ServiceHost):
    """Runs the sagas of ``SAGA_DEFINITIONS`` (or of the registry it is given)."""

    service = "orchestrator"

    def __init__(
        self, settings: Settings, *, registry: SagaRegistry | None = None, instance: str = ""
    ) -> None:
        super().__init__(settings, instance=instance)
        self.registry = registry or settings.registry()
        self._runtime: SagaRuntime | None = None
        self._store: MongoSagaStore | None = None
        self._relay: OutboxRelay | None = None
        self._deadlines: DeadlineWatcher | None = None
        self._batcher: CommitBatcher | None = None
        self.options = RuntimeOptions.from_settings(settings)

    @property
    def runtime(self) -> SagaRuntime:
        """The saga runtime (after start)."""
        assert self._runtime is not None, "start() the service first"
        return self._runtime

    @property
    def store(self) -> MongoSagaStore:
        """The saga store (after start)."""
        assert self._store is not None, "start() the service first"
        return self._store

    @property
    def relay(self) -> OutboxRelay:
        """The outbox relay (after start)."""
        assert self._relay is not None, "start() the service first"
        return self._relay

    @property
    def deadlines(self) -> DeadlineWatcher:
        """The deadline watcher (after start)."""
        assert self._deadlines is not None, "start() the service first"
        return self._deadlines

    @property
    def batcher(self) -> CommitBatcher:
        """The group-commit batcher in front of the store (after start)."""
        assert self._batcher is not None, "start() the service first"
        return self._batcher

    async def setup(self) -> None:
        """Store, group commit, runtime, relay, deadline watcher; consume the start and
        reply queues."""
        store = MongoSagaStore(database=self.db)
        await store.ensure_indexes()
        # A version left out while sagas still run on it would strand them: refuse.
        try:
            self.registry.check_in_flight(await store.in_flight(self.registry.names))
        except VersionInUse as e:
            raise StartupRefused(str(e)) from e
        options = self.options
        bookkeeper = Bookkeeper(outbox=store, deadlines=store)
        batcher = CommitBatcher(
            store=store,
            window=options.commit_window,
            max_batch=options.commit_batch,
            bookkeeper=bookkeeper,
        )
        publisher = AmqpOutboxPublisher(bus=self.bus)
        progress = (
            ProgressBatcher(
                publisher=publisher,
                max_batch=options.progress_batch,
                # The read side refuses bodies above its SAGA_MAX_BODY_BYTES (the same
                # setting, in one deployment): a batch stays well under it.
                max_bytes=min(MAX_BATCH_BYTES, self.settings.max_body_bytes // 2),
            )
            if options.progress_batch > 1
            else None
        )
        dispatcher = Dispatcher(
            store=store, publisher=publisher, bookkeeper=bookkeeper, progress=progress
        )
        self._store, self._batcher = store, batcher
        self._runtime = SagaRuntime(
            registry=self.registry,
            store=batcher,
            dispatcher=dispatcher,
            publish_progress=self.settings.publish_progress,
        )
        self._relay, self._deadlines = self._pollers(store, self._runtime)
        dispatcher.on_failure.append(self._relay.wake)
        batcher.on_stored.append(self._deadlines.armed)
        self.background(bookkeeper.run)
        self.background(self._relay.run)
        self.background(self._deadlines.run)
        if options.retention is not None:
            self.background(self._retain)
        for name in self.registry.names:
            starts, replies = self.topology.saga_queues(name)
            self.consume_queue(starts, self._runtime.handle)
            self.consume_queue(replies, self._runtime.handle)

    def _pollers(
        self, store: MongoSagaStore, runtime: SagaRuntime
    ) -> tuple[OutboxRelay, DeadlineWatcher]:
        options = self.options
        relay = OutboxRelay(
            store=store,
            dispatcher=runtime.dispatcher,
            clock=utcnow,
            saga_names=self.registry.names,
            grace=self.settings.relay_grace,
            interval=self.settings.relay_interval,
            idle=options.poll_idle,
            batch_size=options.relay_batch,
            backoff=options.outbox_backoff,
        )
        watcher = DeadlineWatcher(
            store=store,
            runtime=runtime,
            clock=utcnow,
            interval=self.settings.deadline_poll,
            idle=options.poll_idle,
            batch_size=options.deadline_batch,
            backoff=options.deadline_backoff,
        )
        return relay, watcher

    async def _retain(self) -> None:
        """Remove finished sagas older than ``SAGA_RETENTION_DAYS``, every interval."""
        retention = self.options.retention
        assert retention is not None
        collections = saga_keyed_collections(self.settings.packs())
        while True:
            try:
                report = await prune_history(
                    self.store,
                    self.db,
                    older_than=retention,
                    now=utcnow(),
                    collections=collections,
                )
                if report.sagas:
                    log.info("history_pruned", sagas=report.sagas, commits=report.commits)
            except TransientError as e:
                log.warning("history_prune_failed", error=str(e))
            except Exception:  # retention must never stop the orchestrator
                log.exception("history_prune_crashed")
            await asyncio.sleep(self.options.retention_interval)


def main() -> None:
    """Entry point ``saga-orchestrator``."""
    run_service(OrchestratorService)
