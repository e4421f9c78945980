"""Test helpers: wait for asynchronous effects without sleeping blindly."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from orchestrator.messaging.connection import connect_amqp

if TYPE_CHECKING:
    from orchestrator.settings import Settings

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], bool] = bool,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call ``probe`` until ``until(result)`` holds; fail with the last result at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await probe()
        if until(result):
            return result
        if loop.time() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout}s; last value: {result!r}")
        await asyncio.sleep(interval)


READSIDE_GUARDS = (
    "readside_sagas",
    "readside_stock_sagas",
    "readside_restocks",
    "readside_analytics",
)
READSIDE_COUNTERS = ("readside_counters", "readside_stock_levels", "readside_metrics")


async def movements_settled(
    db: Any,
    *,
    guards: tuple[str, ...] = READSIDE_GUARDS,
    counters: tuple[str, ...] = READSIDE_COUNTERS,
    timeout: float = 30.0,
) -> None:
    """Wait until no read-side movement is under way
    (:mod:`orchestrator.readside.counters`): no guard holds ``pending``, no counter a
    mark. A guard is written before its counters, the marks are removed last, so equal
    totals alone do not mean a projection stopped moving."""

    async def busy() -> list[str]:
        found = []
        for name in guards:
            cursor = db[name].find({"pending": {"$exists": True}}, {"_id": 1})
            found += [f"{name}/{d['_id']}" async for d in cursor]
        for name in counters:
            docs = await db[name].find({}, {"marks": 1}).to_list(None)
            found += [f"{name}/{d['_id']} (marks)" for d in docs if d.get("marks")]
        return found

    await eventually(busy, until=lambda b: b == [], timeout=timeout, what="no movement under way")


CLI = "import sys; from orchestrator.cli import main; main(sys.argv[1:])"


async def run_cli(settings: Settings, *argv: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """Run ``saga ARGV`` in its own process against this test's system:
    (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLI,
        *argv,
        env={**os.environ, **settings.to_env(), "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def delete_topology(settings: Settings) -> None:
    """Delete a namespace's exchanges and queues (with this variant's retry tiers)."""
    connection = await connect_amqp(
        settings.amqp_urls,
        name=f"{settings.namespace}.teardown",
        ssl_context=settings.amqp_ssl_context(),
    )
    async with connection:
        channel = await connection.channel()
        await settings.topology().delete(channel)


async def delete_queues_beyond(settings: Settings, running: Settings) -> None:
    """Delete the queues ``settings`` declares that the ``running`` system does not (an
    instance with other sagas declared them; the running system's stay)."""
    keep = set(running.topology().all_queue_names())
    connection = await connect_amqp(settings.amqp_urls, name=f"{settings.namespace}.teardown")
    async with connection:
        channel = await connection.channel()
        for name in settings.topology().all_queue_names():
            if name not in keep:
                await channel.queue_delete(name)


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name{labels}`` in a Prometheus text exposition."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None
