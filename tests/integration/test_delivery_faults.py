"""Duplicated deliveries, a crash between store and publish, and contention."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

from orchestrator.messaging.bus import Bus
from orchestrator.ports import OutboxPublisher
from orchestrator.saga.commits import Commit, OutboxEntry
from orchestrator.saga.state import Status
from tests.helpers import eventually
from tests.integration.conftest import System

pytestmark = pytest.mark.integration


def publish_everything_twice(bus: Bus) -> list[str]:
    """Make ``bus`` publish every message twice (a duplicating network or relay)."""
    original = bus.publish
    seen: list[str] = []

    async def twice(message: Any, **kwargs: Any) -> None:
        seen.append(message.message_id)
        await original(message, **kwargs)
        await original(message, **kwargs)

    bus.publish = twice  # type: ignore[method-assign]
    return seen


async def test_every_command_and_reply_delivered_twice_has_effect_once(system: System) -> None:
    """Duplicated commands and replies: each effect happens once and the history has no
    duplicate events."""
    for service in (system.orchestrator, system.inventory, system.payment, system.shipping):
        publish_everything_twice(service.bus)
    await system.inventory.inventory.set_stock("apple", 10)

    completed = await system.order(("apple", 2))
    compensated = await system.order(("apple", 3), ship_to="Atlantis")
    assert (await system.settle(completed)).status is Status.COMPLETED
    assert (await system.settle(compensated)).status is Status.COMPENSATED

    apple = await eventually(
        lambda: system.levels("apple"),
        until=lambda lv: lv.shipped == 2,
        what="completed order shipped",
    )
    assert (apple.available, apple.reserved, apple.shipped) == (8, 0, 2)
    payment = await system.payment_of(completed)
    assert payment is not None
    assert payment["status"] == "captured"
    for saga_id in (completed, compensated):
        history = await system.client.history(saga_id)
        events = [(e.type, e.step) for c in history for e in c.events]
        assert len(events) == len(set(events)), f"duplicate events in {events}"
        assert [c.version for c in history] == list(range(1, len(history) + 1))
    assert system.orchestrator.runtime.stats.duplicates > 0, "no duplicate reached the saga"


class CrashBeforePublishing:
    """An outbox publisher that 'dies' when asked to send one kind of command."""

    def __init__(self, inner: OutboxPublisher, routing_key: str) -> None:
        self.inner = inner
        self.routing_key = routing_key
        self.crashed = asyncio.Event()

    async def publish(self, *, commit: Commit, entry: OutboxEntry) -> None:
        if entry.routing_key == self.routing_key:
            self.crashed.set()
            await asyncio.Event().wait()  # the process is gone; nothing after this runs
        await self.inner.publish(commit=commit, entry=entry)


async def test_crash_between_store_and_publish_delays_but_never_drops(system: System) -> None:
    """The orchestrator stores a step and dies before publishing its command; after a
    restart the relay publishes it and the saga completes."""
    await system.inventory.inventory.set_stock("apple", 5)
    dispatcher = system.orchestrator.runtime.dispatcher
    crasher = CrashBeforePublishing(dispatcher.publisher, "payment.authorize_payment")
    dispatcher.publisher = crasher

    saga_id = await system.order(("apple", 1))
    await asyncio.wait_for(crasher.crashed.wait(), timeout=30)
    stored = await system.client.history(saga_id)
    pending = [
        c for c in stored if any(o.routing_key == "payment.authorize_payment" for o in c.outbox)
    ]
    assert len(pending) == 1, "the step was stored before the crash"
    assert await system.payment_of(saga_id) is None, "nothing was published"

    restarted = await system.restart_orchestrator(crash=True)
    state = await system.settle(saga_id)

    assert state.status is Status.COMPLETED
    assert restarted.relay.relayed >= 1
    apple = await system.levels("apple")
    assert apple.total == 5
    assert apple.available == 4


async def test_contention_sells_exactly_the_stock(system: System) -> None:
    """50 concurrent orders for a SKU with stock for 20: exactly 20 succeed, none oversold,
    and available + reserved + shipped stays 20 throughout."""
    await system.inventory.inventory.set_stock("gpu", 20)

    sagas = await asyncio.gather(*(system.order(("gpu", 1)) for _ in range(50)))

    async def total_is_conserved() -> int:
        levels = await system.levels("gpu")
        assert levels.total == 20, levels
        assert levels.available >= 0, levels
        return levels.total

    states = []
    for saga_id in sagas:
        states.append(await system.settle(saga_id, timeout=120))
        await total_is_conserved()
    outcomes = collections.Counter(s.status for s in states)
    assert outcomes == {Status.COMPLETED: 20, Status.FAILED: 30}
    levels = await eventually(
        lambda: system.levels("gpu"),
        until=lambda lv: lv.shipped == 20,
        what="every completed order shipped",
    )
    assert (levels.available, levels.reserved, levels.shipped) == (0, 0, 20)
