"""The system under test: the orchestrator and the saga's participants as separate
processes, on a fresh namespace and database, seeded by the saga's workload, and
everything removed afterwards.

MongoDB is MONGODB_URL if set, else an embedded ``nx-27017`` server in the work folder.
Each service runs under :mod:`orchestrator.dev.bench.probe`, which counts its MongoDB
commands (and profiles it when asked).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING, Any

import aio_pika
import pymongo
from pymongo.errors import PyMongoError

from orchestrator.dev.bench.children import BenchProcess, start_all, stop_all
from orchestrator.dev.bench.cpu import rss_mib
from orchestrator.dev.bench.probe import COUNTS_ENV
from orchestrator.dev.bench.results import StoreOps
from orchestrator.dev.bench.workloads import BenchContext, Workload
from orchestrator.dev.embedded import EmbeddedMongo
from orchestrator.dev.processes import services_of
from orchestrator.store.connect import connect_mongo
from orchestrator.store.shape import TERMINAL

if TYPE_CHECKING:
    from pathlib import Path

    from pymongo import AsyncMongoClient
    from pymongo.asynchronous.database import AsyncDatabase

    from orchestrator.dev.bench.profilers import Profilers
    from orchestrator.settings import Settings

__all__ = ["BenchSystem", "Workload"]


Doc = dict[str, Any]

SCAN_TIMEOUT = 600.0
"""Seconds for the bench's own whole-collection work on a large seeded history (the
store-side message count, dropping the database), beyond the services' operation limit."""


class BenchSystem:
    """Store, services and their clean-up."""

    def __init__(
        self,
        settings: Settings,
        *,
        work_dir: Path,
        log_dir: Path,
        services: tuple[str, ...],
        seeding: tuple[str, ...] = (),
        profilers: Profilers | None = None,
        probe: bool = True,
    ) -> None:
        self.settings = settings
        self.probe = probe
        self.service_names = services
        self.seeding_names = seeding
        """Services run only while the workload prepares."""
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
        """Store, the workload's seed, services (ready to take sagas)."""
        if not self.settings.mongodb_url:
            self.mongo = EmbeddedMongo(self.work_dir / "mongo")
            url = await asyncio.to_thread(self.mongo.start)
            self.settings = self.settings.with_(mongodb_url=url)
        self._client = await connect_mongo(
            self.settings.require_mongodb_url(), app_name=f"{self.settings.namespace}.bench"
        )
        await workload.seed(self.db)
        (self.work_dir / "counts").mkdir(parents=True, exist_ok=True)
        names = (*self.service_names, *self.seeding_names)
        self.services = {name: self._service(name) for name in names}
        await start_all(self.services.values())

    async def prepare(self, workload: Workload) -> None:
        """The workload's preparation with the services running; then the services only
        it needed stop."""
        read_side = "readside" in self.service_names
        context = BenchContext(settings=self.settings, database=self.db, read_side=read_side)
        await workload.prepare(context)
        seeding = [self.services.pop(name) for name in self.seeding_names]
        await stop_all(seeding)

    def _service(self, name: str) -> BenchProcess:
        module = services_of(self.settings)[name]
        if not self.probe:  # as deployed: nothing counts or profiles (idle measurements)
            return BenchProcess(name, self.settings, log_dir=self.log_dir, argv=["-m", module])
        env = {COUNTS_ENV: str(self.counts_file(name))}
        if self.profilers is not None:
            env |= self.profilers.env_for(name)
        return BenchProcess(
            name,
            self.settings,
            log_dir=self.log_dir,
            argv=["-m", "orchestrator.dev.bench.probe", module],
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

    def rss(self) -> dict[str, float]:
        """Resident memory (MiB) of each service and of the embedded store."""
        return {name: sum(rss_mib(pid) for pid in pids) for name, pids in self.pids().items()}

    async def outbox_messages(self, since: datetime | None = None) -> dict[str, int]:
        """What the commits stored from ``since`` on say was sent: commands (each
        answered by one reply) and events, of which outcomes and progress events. A
        store-side cross-check of the broker's count."""
        counts = {"command": 0, "event": 0, "outcome": 0, "progress": 0}
        # Only the measured window, filtered by the server: a seeded history (--history)
        # holds hundreds of thousands of commits that must not come over the wire. With no
        # index on created_at the server still scans, hence the long time limit.
        window = {} if since is None else {"created_at": {"$gte": since}}
        # The whole outbox, not "outbox.kind": the embedded server drops nested projections.
        with pymongo.timeout(SCAN_TIMEOUT):
            found = self.db["saga_commits"].find(window, {"outbox": 1, "created_at": 1})
            docs = await found.to_list()
        for doc in docs:
            if since is not None and _aware(doc.get("created_at")) < since:
                continue  # before measuring: the workload's preparation, clones
            for entry in doc.get("outbox") or []:
                kind = str(entry.get("kind", "event"))
                counts[kind] = counts.get(kind, 0) + 1
                suffix = str(entry.get("routing_key", "")).rsplit(".", 1)[-1]
                if kind == "event" and suffix == "progressed":
                    counts["progress"] += 1
                elif kind == "event" and suffix in TERMINAL:
                    counts["outcome"] += 1
        return counts

    def event_queues(self) -> list[str]:
        """Every queue bound to the events exchange (the read side's, the packs')."""
        topology = self.settings.topology()
        return [q.name for q in topology.work_queues if q.exchange == topology.events_exchange]

    async def cleanup(self) -> None:
        """Stop what still runs, delete the namespace and the database, stop the store."""
        await stop_all(self.services.values())
        connection = await aio_pika.connect(
            self.settings.amqp_url,
            client_properties={"connection_name": f"{self.settings.namespace}.bench-cleanup"},
        )
        async with connection:
            await self.settings.topology().delete(await connection.channel())
        try:
            if self._client is not None:
                if self.mongo is None:  # a real MongoDB: drop what the run wrote
                    with pymongo.timeout(SCAN_TIMEOUT):
                        await self._client.drop_database(self.settings.database)
                await self._client.close()
        finally:
            if self.mongo is not None:  # its data folder goes with the run's temp folder
                await asyncio.to_thread(self.mongo.stop)


def _aware(at: object) -> datetime:
    """A stored time as an aware datetime (the oldest possible if it is missing)."""
    if not isinstance(at, datetime):
        return datetime.min.replace(tzinfo=UTC)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"
