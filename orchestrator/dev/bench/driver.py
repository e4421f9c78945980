"""The closed-loop load driver: N sagas in flight, end-to-end latency from the broker side.

Each of N workers starts a saga (a confirmed publish of its start message), waits for the
saga's outcome event, records the time between the two, and starts the next one. Outcome
events (``<saga>.completed|failed|compensated``) arrive on an exclusive queue bound to the
events exchange, so measuring never reads the store the system writes to. The same driver
runs the system and the raw-broker baseline; only the start publisher and the exchange
the outcomes come from differ.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.dev.bench.results import Percentiles

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

__all__ = ["ClosedLoop", "OutcomeWatcher", "Sample", "Starter", "WindowHook"]

Starter = Callable[[str], Awaitable[None]]
"""Publish the start message of saga ``saga_id`` and return once the broker confirmed it."""
WindowHook = Callable[[str], Awaitable[None]]
"""Called with ``"start"`` and ``"end"`` at the edges of the measured window."""

OUTCOME_KEYS = ("*.completed", "*.failed", "*.compensated")


class OutcomeWatcher:
    """Saga outcome events from an exclusive queue, handed to whoever waits for the saga."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[str]] = {}
        self.received = 0

    async def attach(
        self,
        channel: AbstractChannel,
        *,
        exchange: str,
        queue: str,
        keys: Sequence[str] = OUTCOME_KEYS,
    ) -> None:
        """Declare ``queue`` (exclusive: it goes with this connection), bind it to
        ``exchange`` and start consuming."""
        target = await channel.get_exchange(exchange, ensure=True)
        declared = await channel.declare_queue(queue, exclusive=True, auto_delete=True)
        for key in keys:
            await declared.bind(target, routing_key=key)
        await declared.consume(self._on_message, no_ack=True)

    def expect(self, saga_id: str) -> asyncio.Future[str]:
        """A future for the outcome (``completed``, ``failed``, ``compensated``) of a saga
        about to be started."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[saga_id] = future
        return future

    def forget(self, saga_id: str) -> None:
        """Stop waiting for a saga."""
        self._waiting.pop(saga_id, None)

    async def _on_message(self, raw: AbstractIncomingMessage) -> None:
        self.received += 1
        future = self._waiting.pop(raw.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result((raw.routing_key or "").rsplit(".", 1)[-1])


@dataclass(frozen=True, slots=True)
class Sample:
    """One saga: when it was started and settled (``time.perf_counter``), and how."""

    started: float
    settled: float
    outcome: str

    @property
    def latency(self) -> float:
        """Seconds from publishing the start to receiving the outcome."""
        return self.settled - self.started


@dataclass
class ClosedLoop:
    """``concurrency`` sagas in flight for ``warmup + window`` seconds, then a drain."""

    start: Starter
    watcher: OutcomeWatcher
    concurrency: int
    warmup: float
    window: float
    saga_timeout: float = 60.0
    samples: list[Sample] = field(default_factory=list)
    started: int = 0
    window_start: float = 0.0
    window_end: float = 0.0

    async def run(self, hook: WindowHook | None = None) -> None:
        """Run the workers; ``hook`` is awaited at the window's edges."""
        now = time.perf_counter()
        self.window_start = now + self.warmup
        self.window_end = self.window_start + self.window
        edges = asyncio.create_task(self._edges(hook))
        workers = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]
        try:
            await asyncio.gather(*workers)
            await edges
        finally:
            for task in (*workers, edges):
                task.cancel()

    async def _edges(self, hook: WindowHook | None) -> None:
        await asyncio.sleep(max(0.0, self.window_start - time.perf_counter()))
        if hook is not None:
            await hook("start")
        await asyncio.sleep(max(0.0, self.window_end - time.perf_counter()))
        if hook is not None:
            await hook("end")

    async def _worker(self) -> None:
        while time.perf_counter() < self.window_end:
            saga_id = uuid.uuid4().hex
            waiter = self.watcher.expect(saga_id)
            began = time.perf_counter()
            await self.start(saga_id)
            self.started += 1
            try:
                async with asyncio.timeout(self.saga_timeout):
                    outcome = await waiter
            except TimeoutError:
                self.watcher.forget(saga_id)
                outcome = "timeout"
            self.samples.append(Sample(began, time.perf_counter(), outcome))

    def in_window(self) -> list[Sample]:
        """Sagas that settled inside the measured window."""
        return [s for s in self.samples if self.window_start <= s.settled <= self.window_end]

    def outcomes(self) -> dict[str, int]:
        """Sagas settled in the window, by outcome."""
        counts: dict[str, int] = {}
        for s in self.in_window():
            counts[s.outcome] = counts.get(s.outcome, 0) + 1
        return counts

    def latency(self) -> Percentiles:
        """Latency of the sagas that settled (not timed out) in the window."""
        return Percentiles.of([s.latency for s in self.in_window() if s.outcome != "timeout"])

    def live_status(self) -> tuple[float, float, int]:
        """(fraction of the run done, sagas/s settled over the last two seconds, in flight)."""
        now = time.perf_counter()
        total = self.warmup + self.window
        begun = self.window_start - self.warmup
        recent = sum(1 for s in self.samples[-5000:] if s.settled >= now - 2.0)
        in_flight = self.started - len(self.samples)
        return min(1.0, (now - begun) / total) if total else 1.0, recent / 2.0, in_flight
