"""The system under test: the four services as separate processes, on a fresh namespace
and database, with stock seeded, and everything removed afterwards.

MongoDB is MONGODB_URL if set, else an embedded ``nx-27017`` server in the work folder.
Each service runs under :mod:`orchestrator.bench.probe`, which counts its MongoDB
commands (and profiles it when asked).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

import aio_pika
from pymongo.errors import PyMongoError

from contracts import OrderLine, PlaceOrder
from orchestrator.bench.children import BenchProcess, start_all, stop_all
from orchestrator.bench.probe import COUNTS_ENV
from orchestrator.bench.results import StoreOps
from orchestrator.embedded import EmbeddedMongo
from orchestrator.mongo import connect_mongo
from orchestrator.processes import SERVICES

if TYPE_CHECKING:
    from pathlib import Path

    from pymongo import AsyncMongoClient
    from pymongo.asynchronous.database import AsyncDatabase

    from orchestrator.bench.profilers import Profilers
    from orchestrator.settings import Settings

__all__ = ["CORE_SERVICES", "BenchSystem", "Workload"]

Doc = dict[str, Any]
CORE_SERVICES = ("orchestrator", "inventory", "payment", "shipping")
"""The saga path. The read side (``readside``) is optional; the HTTP API is never needed:
the benchmark starts sagas through the broker."""
READ_SIDE_QUEUES = (
    "projections.sagas",
    "projections.stock",
    "notifications.events",
    "analytics.events",
)


@dataclass(frozen=True, kw_only=True)
class Workload:
    """The orders the benchmark places: ``lines`` SKUs of ``skus``, one unit each, an
    amount payment accepts and an address shipping delivers to, so every saga completes."""

    skus: int = 100
    lines: int = 1
    stock: int = 1_000_000_000

    def sku_names(self) -> list[str]:
        """Every SKU the orders draw from."""
        return [f"bench-{i:04d}" for i in range(self.skus)]

    def order(self, saga_id: str) -> PlaceOrder:
        """The order of one saga."""
        skus = random.sample(self.sku_names(), min(self.lines, self.skus))
        return PlaceOrder(
            order_id=f"bench-{saga_id[:16]}",
            customer_id="bench-customer",
            lines=tuple(OrderLine(sku=s, quantity=1) for s in skus),
            amount_cents=1_999,
            ship_to="1 Main Street, Springfield",
        )


class BenchSystem:
    """Store, services and their clean-up."""

    def __init__(
        self,
        settings: Settings,
        *,
        work_dir: Path,
        log_dir: Path,
        services: tuple[str, ...] = CORE_SERVICES,
        profilers: Profilers | None = None,
    ) -> None:
        self.settings = settings
        self.service_names = services
        self.work_dir = work_dir
        self.log_dir = log_dir
        self.profilers = profilers
        self.mongo: EmbeddedMongo | None = None
        self.services: dict[str, BenchProcess] = {}
        self._client: AsyncMongoClient[Doc] | None = None

    @property
    def embedded(self) -> bool:
        """Whether the store is the embedded server this object started."""
        return self.mongo is not None

    async def start(self, workload: Workload) -> None:
        """Store, seeded stock, services (ready to take orders)."""
        if not self.settings.mongodb_url:
            self.mongo = EmbeddedMongo(self.work_dir / "mongo")
            url = await asyncio.to_thread(self.mongo.start)
            self.settings = self.settings.with_(mongodb_url=url)
        self._client = await connect_mongo(
            self.settings.require_mongodb_url(), app_name=f"{self.settings.namespace}.bench"
        )
        await self._seed(workload)
        (self.work_dir / "counts").mkdir(parents=True, exist_ok=True)
        self.services = {name: self._service(name) for name in self.service_names}
        await start_all(self.services.values())

    async def _seed(self, workload: Workload) -> None:
        from participants.inventory.store import MongoInventory  # noqa: PLC0415

        inventory = MongoInventory(database=self.db)
        for sku in workload.sku_names():
            await inventory.set_stock(sku, workload.stock)

    def _service(self, name: str) -> BenchProcess:
        env = {COUNTS_ENV: str(self.counts_file(name))}
        if self.profilers is not None:
            env |= self.profilers.env_for(name)
        return BenchProcess(
            name,
            self.settings,
            log_dir=self.log_dir,
            argv=["-m", "orchestrator.bench.probe", SERVICES[name]],
            env=env,
        )

    @property
    def db(self) -> AsyncDatabase[Doc]:
        """The benchmark's database (for seeding and counting)."""
        assert self._client is not None, "start() first"
        return self._client[self.settings.database]

    async def describe_store(self) -> str:
        """Which MongoDB this is."""
        if self.mongo is not None:
            return f"embedded nx-27017 {_version('nx-27017')} (SQLite-backed wire-protocol server)"
        assert self._client is not None, "start() first"
        try:
            info = await self._client.admin.command("buildInfo")
        except PyMongoError as e:
            return f"MongoDB at MONGODB_URL (version unknown: {e})"
        return f"MongoDB {info.get('version', '?')} at MONGODB_URL"

    def counts_file(self, service: str) -> Path:
        """Where the probe of ``service`` writes its command counts."""
        return self.work_dir / "counts" / f"{service}.json"

    def store_ops(self) -> StoreOps:
        """MongoDB commands each service has sent so far (as last written by its probe)."""
        by_service: dict[str, dict[str, int]] = {}
        for name in self.services:
            try:
                by_service[name] = json.loads(self.counts_file(name).read_text())
            except (OSError, ValueError):
                by_service[name] = {}
        return StoreOps(by_service=by_service)

    def pids(self) -> dict[str, list[int]]:
        """Process ids per service, and of the embedded store if this object started it."""
        pids = {name: [p.pid] for name, p in self.services.items() if p.pid is not None}
        if self.mongo is not None and self.mongo.process is not None:
            pids["store"] = [self.mongo.process.pid]
        return pids

    def profile_edge(self, edge: str, label: str) -> None:
        """Start (``edge == "start"``) or stop the services' profilers, if profiling."""
        if self.profilers is None:
            return
        if edge == "start":
            self.profilers.begin(self.services, label)
        else:
            self.profilers.end(self.services, label)

    def pause(self) -> None:
        """SIGSTOP the services and the embedded store, so that their background loops
        (outbox relay, deadline poller) do not run while the baseline is measured."""
        for pids in self.pids().values():
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT what :meth:`pause` stopped."""
        for pids in self.pids().values():
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

    async def stop_services(self) -> None:
        """SIGTERM the services and wait (their probes write final counts and profiles)."""
        await stop_all(self.services.values())

    async def outbox_messages(self) -> dict[str, int]:
        """What the commits say was sent: commands (each answered by one reply) and events.
        A store-side cross-check of the broker's count."""
        counts = {"command": 0, "event": 0}
        # The whole outbox, not "outbox.kind": the embedded server drops nested projections.
        async for doc in self.db["saga_commits"].find({}, {"outbox": 1}):
            for entry in doc.get("outbox") or []:
                kind = str(entry.get("kind", "event"))
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    def read_side_queues(self) -> list[str]:
        """Queues only the read side consumes (not started by the benchmark)."""
        topology = self.settings.topology()
        return [topology.queue(suffix).name for suffix in READ_SIDE_QUEUES]

    async def cleanup(self) -> None:
        """Stop what still runs, delete the namespace and the database, stop the store."""
        await stop_all(self.services.values())
        connection = await aio_pika.connect(
            self.settings.amqp_url,
            client_properties={"connection_name": f"{self.settings.namespace}.bench-cleanup"},
        )
        async with connection:
            await self.settings.topology().delete(await connection.channel())
        if self._client is not None:
            await self._client.drop_database(self.settings.database)
            await self._client.close()
        if self.mongo is not None:
            await asyncio.to_thread(self.mongo.stop)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"
