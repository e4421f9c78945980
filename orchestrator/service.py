"""The orchestrator service: consumes start commands and replies, runs the order saga."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.deadlines import DeadlineWatcher
from orchestrator.host import ServiceHost, run_service
from orchestrator.mongo_store import MongoSagaStore
from orchestrator.order_saga import order_fulfilment
from orchestrator.outbox import AmqpOutboxPublisher, Dispatcher, OutboxRelay
from orchestrator.runtime import SagaRuntime, utcnow

if TYPE_CHECKING:
    from orchestrator.definition import SagaDefinition
    from orchestrator.settings import Settings

__all__ = ["OrchestratorService", "main"]


class OrchestratorService(ServiceHost):
    """Runs one saga definition (the order saga unless told otherwise)."""

    service = "orchestrator"

    def __init__(
        self, settings: Settings, *, saga: SagaDefinition | None = None, instance: str = ""
    ) -> None:
        super().__init__(settings, instance=instance)
        self.saga = saga or order_fulfilment(
            timeout=settings.step_timeout, max_sends=settings.step_max_sends
        )
        self._runtime: SagaRuntime | None = None
        self._store: MongoSagaStore | None = None
        self._relay: OutboxRelay | None = None

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

    async def setup(self) -> None:
        """Store, runtime, relay; consume the start and reply queues."""
        store = MongoSagaStore(database=self.db)
        await store.ensure_indexes()
        dispatcher = Dispatcher(store=store, publisher=AmqpOutboxPublisher(bus=self.bus))
        self._store = store
        self._runtime = SagaRuntime(
            saga=self.saga,
            store=store,
            dispatcher=dispatcher,
            publish_progress=self.settings.publish_progress,
        )
        self._relay = OutboxRelay(
            store=store,
            dispatcher=dispatcher,
            clock=utcnow,
            grace=self.settings.relay_grace,
            interval=self.settings.relay_interval,
        )
        self._deadlines = DeadlineWatcher(
            store=store,
            runtime=self._runtime,
            clock=utcnow,
            interval=self.settings.deadline_poll,
        )
        self.background(dispatcher.run)
        self.background(self._relay.run)
        self.background(self._deadlines.run)
        self.consume("orchestrator.commands", self._runtime.handle)
        self.consume("orchestrator.replies", self._runtime.handle)


def main() -> None:
    """Entry point ``saga-orchestrator``."""
    run_service(OrchestratorService)
