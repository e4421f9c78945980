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
from typing import TYPE_CHECKING, Any

import structlog

from orchestrator.errors import OrchestratorError
from orchestrator.logs import configure_logging
from orchestrator.messaging.bus import Bus
from orchestrator.messaging.consumer import Consumer, Handler
from orchestrator.mongo import connect_mongo
from orchestrator.settings import ConfigError, Settings

if TYPE_CHECKING:
    from pymongo import AsyncMongoClient
    from pymongo.asynchronous.database import AsyncDatabase

__all__ = ["ServiceHost", "run_service"]

log = structlog.get_logger("host")


class ServiceHost:
    """Owns one service's connections and tasks."""

    service = "service"

    def __init__(self, settings: Settings, *, instance: str = "") -> None:
        self.settings = settings
        self.topology = settings.topology()
        instance = instance or settings.instance
        label = f"{settings.namespace}.{self.service}" + (f".{instance}" if instance else "")
        self.bus = Bus(url=settings.amqp_url, name=label, topology=self.topology)
        self.consumers: list[Consumer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self.started = False

    @property
    def db(self) -> AsyncDatabase[dict[str, Any]]:
        """The service's database."""
        if self._client is None:
            raise OrchestratorError(f"{self.service}: store used before start()")
        return self._client[self.settings.database]

    async def setup(self) -> None:
        """Create stores and indexes, register consumers and loops (override)."""

    def consume(self, queue: str, handler: Handler) -> None:
        """Register a consumer of ``<namespace>.<queue>``."""
        self.consumers.append(
            Consumer(
                bus=self.bus,
                queue=self.topology.queue(queue),
                handler=handler,
                prefetch=self.settings.prefetch,
                max_body_bytes=self.settings.max_body_bytes,
            )
        )

    def background(self, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``loop`` for as long as the service runs."""
        self._tasks.append(asyncio.create_task(loop(), name=f"{self.service}:{loop.__name__}"))

    async def start(self) -> None:
        """Connect, set up, and start consuming."""
        self._client = await connect_mongo(
            self.settings.require_mongodb_url(), app_name=self.bus.name
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

    async def stop(self) -> None:
        """Stop consuming, finish what is in hand, stop loops, disconnect."""
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


def run_service(factory: Callable[[Settings], ServiceHost]) -> None:
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
        import uvloop  # noqa: PLC0415 - optional speed-up, absent on some platforms

        runner: Callable[[Coroutine[Any, Any, None]], None] = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    try:
        runner(_serve(host))
    except OrchestratorError as e:
        print(f"{host.service}: {e}", file=sys.stderr)
        raise SystemExit(1) from e


async def _serve(host: ServiceHost) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await host.start()
    print(f"{host.service} ready", file=sys.stderr, flush=True)
    await stop.wait()
    await host.stop()
