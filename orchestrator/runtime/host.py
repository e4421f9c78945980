"""The shell every service runs in: broker, store, consumers, background tasks, signals.

A service subclasses :class:`ServiceHost`, sets up its parts in ``setup`` and lists its
consumers and background loops. The same class runs in its own process (``run_service``,
the entry point the compose file uses) or inside a test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from orchestrator.errors import OrchestratorError
from orchestrator.messaging.bus import Bus
from orchestrator.messaging.consumer import Consumer, Handler
from orchestrator.messaging.outage import StoreGate
from orchestrator.observability import probes, tracing
from orchestrator.runtime.logs import configure_logging
from orchestrator.runtime.progress import per_saga
from orchestrator.settings import ConfigError, Settings
from orchestrator.store.connect import connect_mongo, store_probe

if TYPE_CHECKING:
    from pymongo import AsyncMongoClient
    from pymongo.asynchronous.database import AsyncDatabase

    from orchestrator.messaging.topology import WorkQueue

__all__ = ["RunnableService", "ServiceHost", "run_service"]

log = structlog.get_logger("host")


class ServiceHost:
    """Owns one service's connections and tasks."""

    service = "service"

    def __init__(self, settings: Settings, *, instance: str = "") -> None:
        self.settings = settings
        self.topology = settings.topology()
        instance = instance or settings.instance
        label = f"{settings.namespace}.{self.service}" + (f".{instance}" if instance else "")
        self.bus = Bus.of(settings, name=label, topology=self.topology)
        self.consumers: list[Consumer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self.store_gate = StoreGate(self._store_answers)
        """Holds the consumers' messages while the store does not answer."""
        self._probes: probes.ProbeServer | None = None
        self.started = False

    @property
    def db(self) -> AsyncDatabase[dict[str, Any]]:
        """The service's database."""
        if self._client is None:
            raise OrchestratorError(f"{self.service}: store used before start()")
        return self._client[self.settings.database]

    async def _store_answers(self) -> bool:
        return self._client is not None and await store_probe(self._client)()

    async def setup(self) -> None:
        """Create stores and indexes, register consumers and loops (override)."""

    def consume(self, queue: str, handler: Handler) -> None:
        """Register a consumer of ``<namespace>.<queue>``."""
        self.consume_queue(self.topology.queue(queue), handler)

    def consume_queue(self, queue: WorkQueue, handler: Handler) -> None:
        """Register a consumer of a work queue of this topology. The handler sees a
        batch of progress events as one envelope per saga (``per_saga``)."""
        self.consumers.append(
            Consumer(
                bus=self.bus,
                queue=queue,
                handler=per_saga(
                    handler, limit=self.settings.prefetch, guard=self.store_gate.guard
                ),
                prefetch=self.settings.prefetch,
                max_body_bytes=self.settings.max_body_bytes,
                max_deferrals=self.settings.max_deferrals,
                store_gate=self.store_gate,
            )
        )

    def background(self, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``loop`` for as long as the service runs."""
        self._tasks.append(asyncio.create_task(loop(), name=f"{self.service}:{loop.__name__}"))

    async def start(self) -> None:
        """Connect, set up, and start consuming (probes answer from the first moment)."""
        self._probes = await probes.attach(self.settings, self.service, self._readiness)
        self._client = await connect_mongo(
            self.settings.require_mongodb_url(),
            app_name=self.bus.name,
            **self.settings.mongodb_options(),
        )
        await self.bus.connect()
        await self.setup()
        for consumer in self.consumers:
            await consumer.start()
        self.started = True
        log.info(
            "service_started",
            service=self.service,
            connection=self.bus.name,
            queues=[c.queue.name for c in self.consumers],
        )

    async def _readiness(self) -> dict[str, str]:
        connection = self.bus.connection if self.bus.connected else None
        consuming = self.started and all(c.consuming for c in self.consumers)
        return await probes.service_checks(
            connection=connection, client=self._client, consuming=consuming
        )

    async def stop(self) -> None:
        """Stop consuming, finish what is in hand, stop loops, disconnect."""
        self.store_gate.close()  # messages held for a store outage go back unsettled
        await probes.detach(self._probes, self._readiness)
        for consumer in self.consumers:
            await consumer.stop()
        await self._cancel_tasks()
        await self.bus.close()
        if self._client is not None:
            await self._client.close()
        self.started = False
        log.info("service_stopped", service=self.service)

    async def kill(self) -> None:
        """Drop everything at once, as a crash would: nothing in hand is acked or flushed."""
        await probes.detach(self._probes, self._readiness)
        for consumer in self.consumers:
            consumer.abort()
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        await self.bus.close()
        if self._client is not None:
            await self._client.close()
        self.started = False

    async def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()


class RunnableService(Protocol):
    """What ``run_service`` runs: a :class:`ServiceHost`, or another shell with the same
    life cycle (the faststream participants' ``StreamService``)."""

    service: str

    async def start(self) -> None:
        """Connect and begin consuming."""

    async def stop(self) -> None:
        """Finish what is in hand and disconnect."""


def run_service(factory: Callable[[Settings], RunnableService]) -> None:
    """Process entry point: configure, run until SIGTERM/SIGINT, stop cleanly."""
    try:
        settings = Settings.from_env()
        host = factory(settings)
        settings.require_mongodb_url()
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    configure_logging(host.service, fmt=settings.log_format)
    try:
        tracing.configure(host.service)  # tracing: on if OTEL_TRACES_EXPORTER names one
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, absent on some platforms

        runner: Callable[[Coroutine[Any, Any, None]], None] = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    try:
        runner(_serve(host))
    except OrchestratorError as e:
        print(f"{host.service}: {e}", file=sys.stderr)
        raise SystemExit(1) from e


async def _serve(host: RunnableService) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await host.start()
    print(f"{host.service} ready", file=sys.stderr, flush=True)
    await stop.wait()
    await host.stop()
