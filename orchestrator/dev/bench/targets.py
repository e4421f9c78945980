"""The two things measured, behind one interface: the system and the raw-broker baseline.

A :class:`Target` owns one driver connection (which declares the target's topology, as
every client does), the outcome watcher and the start publisher, and runs one
concurrency level at a time, sampling CPU and store commands at the window's edges.
Both targets stay up for the whole run so that their levels can alternate: the machine
may change speed over minutes (shared hosts do), and the ratio compares like with like.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aio_pika

from orchestrator.dev.bench.baseline import roles_of
from orchestrator.dev.bench.children import BenchProcess
from orchestrator.dev.bench.cpu import CpuSampler, find_broker_pid, tree_pids
from orchestrator.dev.bench.driver import ClosedLoop, OutcomeWatcher, Starter
from orchestrator.dev.bench.results import LevelResult, StoreOps
from orchestrator.messaging.envelope import build_message
from orchestrator.saga.definition import routing_key

if TYPE_CHECKING:
    from pathlib import Path

    from aio_pika.abc import AbstractChannel, AbstractConnection

    from contracts import Message
    from orchestrator.dev.bench.baseline import RawTopology
    from orchestrator.dev.bench.runner import BenchConfig, Display
    from orchestrator.dev.bench.system import BenchSystem
    from orchestrator.settings import Settings

__all__ = ["Target", "baseline_roles", "baseline_target", "saga_starter", "system_target"]

StarterFactory = Callable[["AbstractChannel"], Awaitable[Starter]]
Declare = Callable[["AbstractChannel"], Awaitable[None]]
EdgeHook = Callable[[str, str], None]
"""Told ``("start" | "end", "c<concurrency>")`` at each measured window's edges."""


def saga_starter(exchange: str, start_of: Callable[[str], Message]) -> StarterFactory:
    """Starts sagas by publishing ``start_of(saga_id)`` to ``exchange`` (confirmed,
    mandatory), exactly as ``SagaClient.start`` does. The system gets the workload's
    start of each saga, the baseline the same start command every time."""

    async def make(channel: AbstractChannel) -> Starter:
        target = await channel.get_exchange(exchange, ensure=False)

        async def start(saga_id: str) -> None:
            command = start_of(saga_id)
            message = build_message(
                command, message_id=f"{saga_id}:start", correlation_id=saga_id, app_id="bench"
            )
            await target.publish(message, routing_key=routing_key(command), timeout=15)

        return start

    return make


class Target:
    """One measured target: its driver connection and how to sample its processes."""

    def __init__(
        self,
        name: str,
        *,
        amqp_url: str,
        namespace: str,
        events: str,
        declare: Declare,
        starter: StarterFactory,
        sampler: CpuSampler,
        store_ops: Callable[[], StoreOps] = StoreOps,
        on_edge: EdgeHook | None = None,
    ) -> None:
        self.name = name
        self.amqp_url = amqp_url
        self.namespace = namespace
        self.events = events
        self.declare = declare
        self.starter = starter
        self.sampler = sampler
        self.store_ops = store_ops
        self.on_edge = on_edge
        self.levels: list[LevelResult] = []
        self._connection: AbstractConnection | None = None
        self._watcher = OutcomeWatcher()
        self._start: Starter | None = None

    async def __aenter__(self) -> Target:
        self._connection = await aio_pika.connect(
            self.amqp_url, client_properties={"connection_name": f"{self.namespace}.bench"}
        )
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        await self.declare(channel)
        await self._watcher.attach(
            await self._connection.channel(),
            exchange=self.events,
            queue=f"{self.namespace}.bench.outcomes",
        )
        self._start = await self.starter(channel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def level(self, concurrency: int, config: BenchConfig, display: Display) -> LevelResult:
        """Warm up, measure, drain at ``concurrency`` sagas in flight."""
        assert self._start is not None, "enter the target first"
        loop = ClosedLoop(
            start=self._start,
            watcher=self._watcher,
            concurrency=concurrency,
            warmup=config.warmup,
            window=config.duration,
            saga_timeout=config.saga_timeout,
        )
        edges: dict[str, tuple[dict[str, float], StoreOps, dict[str, float]]] = {}

        async def hook(edge: str) -> None:
            edges[edge] = (self.sampler.sample(), self.store_ops(), self.sampler.rss())
            if self.on_edge is not None:
                self.on_edge(edge, f"c{concurrency}")

        display.phase(f"{self.name}: {concurrency} in flight")
        ticker = asyncio.create_task(_tick(loop, display))
        try:
            await loop.run(hook)
        finally:
            ticker.cancel()
        result = _result(self.name, loop, edges)
        self.levels.append(result)
        return result


def _result(
    target: str,
    loop: ClosedLoop,
    edges: dict[str, tuple[dict[str, float], StoreOps, dict[str, float]]],
) -> LevelResult:
    (cpu0, ops0, rss0), (cpu1, ops1, rss1) = edges["start"], edges["end"]
    every: dict[str, int] = {}
    for sample in loop.samples:
        every[sample.outcome] = every.get(sample.outcome, 0) + 1
    return LevelResult(
        target=target,
        concurrency=loop.concurrency,
        window=loop.window,
        outcomes=loop.outcomes(),
        latency=loop.latency(),
        started=loop.started,
        all_outcomes=every,
        cpu={k: v - cpu0.get(k, 0.0) for k, v in cpu1.items()},
        store=ops1.minus(ops0),
        rss_start=rss0,
        rss_end=rss1,
    )


async def _tick(loop: ClosedLoop, display: Display) -> None:
    while True:
        fraction, rate, in_flight = loop.live_status()
        display.update(fraction, f"{rate:7.1f} sagas/s  {in_flight:4d} in flight")
        await asyncio.sleep(0.5)


def _add_broker(sampler: CpuSampler, amqp_url: str) -> None:
    """Sample the broker too when it runs on this machine."""
    host = urllib.parse.urlsplit(amqp_url).hostname
    if host in ("127.0.0.1", "localhost", "::1") and (pid := find_broker_pid()) is not None:
        sampler.add("broker", [pid])


def system_target(system: BenchSystem, start_of: Callable[[str], Message]) -> Target:
    """The system: its services (and the embedded store) sampled, commands counted."""
    sampler = CpuSampler()
    for name, pids in system.pids().items():
        sampler.add(name, tree_pids(pids[0]) if name == "store" else pids)
    _add_broker(sampler, system.settings.amqp_url)
    topology = system.settings.topology()
    return Target(
        "system",
        amqp_url=system.settings.amqp_url,
        namespace=system.settings.namespace,
        events=topology.events_exchange,
        declare=topology.declare,
        starter=saga_starter(topology.commands_exchange, start_of),
        sampler=sampler,
        store_ops=system.store_ops,
        on_edge=system.profile_edge,
    )


def baseline_roles(raw: RawTopology, settings: Settings, log_dir: Path) -> list[BenchProcess]:
    """The baseline's processes (not started): they read the plan from ``log_dir``."""
    plan_file = log_dir / "plan.json"
    raw.plan.write(plan_file)
    module = "orchestrator.dev.bench.baseline"
    return [
        BenchProcess(role, settings, log_dir=log_dir, argv=["-m", module, role, str(plan_file)])
        for role in roles_of(raw.plan)
    ]


def baseline_target(
    raw: RawTopology, roles: list[BenchProcess], amqp_url: str, start: Message
) -> Target:
    """The raw-broker baseline: its role processes sampled."""
    sampler = CpuSampler()
    for role in roles:
        sampler.add(role.service, [role.pid] if role.pid else [])
    _add_broker(sampler, amqp_url)
    return Target(
        "baseline",
        amqp_url=amqp_url,
        namespace=raw.namespace,
        events=raw.events,
        declare=raw.declare,
        starter=saga_starter(raw.commands, lambda _saga_id: start),
        sampler=sampler,
    )
