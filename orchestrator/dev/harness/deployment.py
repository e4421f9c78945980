"""One scenario's own system: a fresh namespace and database, the four services as
processes with fault injection enabled, a client, and a clean teardown.

Nothing is shared with another run or with a real deployment: every exchange and queue
is under ``harness-<scenario>-<hex>``, the data in database ``harness_<scenario>_<hex>``,
and both are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aio_pika
from aio_pika.exceptions import AMQPError

from orchestrator.client import SagaClient
from orchestrator.dev.embedded import EmbeddedMongo
from orchestrator.dev.harness.faults_client import FaultsClient
from orchestrator.dev.processes import ServiceProcess, services_of
from orchestrator.saga.state import Status
from orchestrator.settings import Settings
from orchestrator.store.connect import connect_mongo

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage
    from pymongo import AsyncMongoClient
    from pymongo.asynchronous.database import AsyncDatabase

__all__ = ["Deployment", "HarnessEnv", "harness_env"]

SETTLED = [s.value for s in Status if s.settled]

HARNESS_DEFAULTS: Mapping[str, Any] = {
    "faults_enabled": True,
    "log_format": "json",
    "retry_delays": (0.1, 0.3),
    "step_timeout": 5.0,
    "step_max_sends": 3,
    "relay_grace": 0.5,
    "relay_interval": 0.2,
    "deadline_poll": 0.2,
    # The read side is not part of the scenarios and nothing consumes its queues here.
    "publish_progress": False,
}
"""Settings of every scenario's services; a scenario overrides some."""


@dataclass(frozen=True, kw_only=True)
class HarnessEnv:
    """Where scenarios run: the broker, the MongoDB server, a folder for service logs."""

    amqp_url: str
    mongodb_url: str
    workdir: Path


@contextlib.asynccontextmanager
async def harness_env(
    *, amqp_url: str, workdir: Path, mongodb_url: str | None = None
) -> AsyncIterator[HarnessEnv]:
    """MONGODB_URL if given (or set), else an embedded server in ``workdir`` for the run."""
    url = mongodb_url or os.environ.get("MONGODB_URL")
    if url:
        yield HarnessEnv(amqp_url=amqp_url, mongodb_url=url, workdir=workdir)
        return
    server = EmbeddedMongo(workdir / "nx-27017")
    url = await asyncio.to_thread(server.start)
    try:
        yield HarnessEnv(amqp_url=amqp_url, mongodb_url=url, workdir=workdir)
    finally:
        await asyncio.to_thread(server.stop)


class Deployment:
    """The system one scenario runs against."""

    def __init__(self, env: HarnessEnv, *, name: str, overrides: Mapping[str, Any]) -> None:
        tag = uuid.uuid4().hex[:6]
        self.namespace = f"harness-{name}-{tag}"
        self.settings = Settings(
            amqp_url=env.amqp_url,
            mongodb_url=env.mongodb_url,
            namespace=self.namespace,
            database=f"harness_{name.replace('-', '_')}_{tag}",
        ).with_(**{**HARNESS_DEFAULTS, **overrides})
        self.topology = self.settings.topology()
        self.log_dir = env.workdir / self.namespace
        self.processes: dict[str, ServiceProcess] = {}
        self._generations: Counter[str] = Counter()
        self._client: SagaClient | None = None
        self._faults: FaultsClient | None = None
        self._mongo: AsyncMongoClient[dict[str, Any]] | None = None

    @property
    def client(self) -> SagaClient:
        """Starts sagas and reads them."""
        assert self._client is not None, "start() first"
        return self._client

    @property
    def faults(self) -> FaultsClient:
        """Installs fault rules."""
        assert self._faults is not None, "start() first"
        return self._faults

    @property
    def db(self) -> AsyncDatabase[dict[str, Any]]:
        """The scenario's database."""
        assert self._mongo is not None, "start() first"
        return self._mongo[self.settings.database]

    @property
    def participants(self) -> tuple[str, ...]:
        """The registered packs' participant services."""
        return tuple(services_of(self.settings, core=False))

    @property
    def listeners(self) -> int:
        """Participant processes running now (each answers fault-rule notices)."""
        return sum(1 for s in self.participants if s in self.processes and self.processes[s].alive)

    async def start(self) -> None:
        """Connect (declaring the topology), then start the services and wait for them."""
        self._client = SagaClient(self.settings, name="harness")
        await self._client.connect()
        self._mongo = await connect_mongo(
            self.settings.require_mongodb_url(), app_name=f"{self.namespace}.harness"
        )
        self._faults = FaultsClient(bus=self._client.bus, database=self.db)
        services = ("orchestrator", *self.participants)
        await asyncio.gather(*(self.start_service(s) for s in services))

    async def start_service(self, service: str, timeout: float = 60.0) -> ServiceProcess:
        """Start (or start again) a service as a new instance: a, b, c, ..."""
        instance = "abcdefghijklmnopqrstuvwxyz"[self._generations[service] % 26]
        self._generations[service] += 1
        process = ServiceProcess(service, self.settings, log_dir=self.log_dir, instance=instance)
        self.processes[service] = process
        await process.started(timeout=timeout)
        return process

    def kill(self, service: str) -> None:
        """SIGKILL a service: no cleanup, nothing acked."""
        self.processes[service].kill()

    async def exited(self, service: str, timeout: float = 30.0) -> int:
        """Wait until a service's process ends by itself; its exit code."""
        process = self.processes[service]
        deadline = time.monotonic() + timeout
        while process.alive:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service} still running after {timeout}s")
            await asyncio.sleep(0.05)
        assert process.process is not None
        return int(process.process.returncode)

    async def settled(self, saga_ids: Iterable[str]) -> set[str]:
        """Which of these sagas are terminal or parked (one query)."""
        cursor = self.client.store.commits.find(
            {"saga_id": {"$in": list(saga_ids)}, "status": {"$in": SETTLED}}, {"saga_id": 1}
        )
        return {doc["saga_id"] async for doc in cursor}

    async def depths(self) -> dict[str, int]:
        """Ready messages in every queue of the namespace, by name without namespace."""
        depths: dict[str, int] = {}
        channel = await self.client.bus.connection.channel()
        try:
            for name in self.topology.all_queue_names():
                queue = await channel.declare_queue(name, passive=True)
                depths[self._short(name)] = queue.declaration_result.message_count or 0
        finally:
            with contextlib.suppress(AMQPError, RuntimeError):
                await channel.close()
        return depths

    async def take_dead_letters(self) -> dict[str, Counter[str]]:
        """Empty every dead-letter queue; what each held, by ``x-error-reason``."""
        found: dict[str, Counter[str]] = {}
        channel = await self.client.bus.connection.channel()
        try:
            for work in self.topology.work_queues:
                queue = await channel.declare_queue(work.dlq, passive=True)
                reasons: Counter[str] = Counter()
                while (message := await queue.get(no_ack=True, fail=False)) is not None:
                    reasons[_reason(message)] += 1
                if reasons:
                    found[self._short(work.name)] = reasons
        finally:
            with contextlib.suppress(AMQPError, RuntimeError):
                await channel.close()
        return found

    async def publish_raw(
        self, queue: str, body: bytes, *, type_name: str | None, correlation_id: str | None
    ) -> None:
        """Publish bytes as they are (no validation) to a work queue, like a buggy client."""
        message = aio_pika.Message(
            body,
            type=type_name,
            correlation_id=correlation_id,
            message_id=f"raw-{uuid.uuid4().hex[:12]}",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self.client.bus.publish(
            message, exchange="", routing_key=self.topology.queue(queue).name
        )

    async def stop(self) -> None:
        """Stop the services, then delete the namespace's queues and exchanges and drop
        the database. Safe to call after a partial start."""
        await asyncio.gather(
            *(asyncio.to_thread(p.stop, 10.0) for p in self.processes.values()),
            return_exceptions=True,
        )
        await _delete_topology(self.settings)
        if self._client is not None:
            await self._client.close()
        if self._mongo is not None:
            with contextlib.suppress(Exception):  # the report matters more than cleanup
                await self._mongo.drop_database(self.settings.database)
            await self._mongo.close()

    def _short(self, name: str) -> str:
        return name.removeprefix(self.namespace + ".")


async def _delete_topology(settings: Settings) -> None:
    connection = await aio_pika.connect(
        settings.amqp_url,
        client_properties={"connection_name": f"{settings.namespace}.teardown"},
        timeout=30,
    )
    async with connection:
        channel = await connection.channel()
        await settings.topology().delete(channel)


def _reason(message: AbstractIncomingMessage) -> str:
    headers = message.headers or {}
    reason: Any = headers.get("x-error-reason")
    if reason is None:  # dead-lettered by the broker itself (quorum delivery limit)
        deaths = headers.get("x-death")
        first = deaths[0] if isinstance(deaths, list) and deaths else None
        reason = f"broker:{_text(first.get('reason'))}" if isinstance(first, dict) else None
    return _text(reason) if reason is not None else "unknown"


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
