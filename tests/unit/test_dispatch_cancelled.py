"""A dispatch cancelled before its confirm (the handler's channel closed with its broker
node: the client library cancels the handler) wakes the relay, as a failed publish does.
Before, the outbox waited for the relay's idle timer: about 23 s of sagas standing still
after a node's death in the failover test, with nothing logged."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.runtime.outbox import Dispatcher
from orchestrator.saga.commits import Commit, OutboxEntry
from orchestrator.store.memory import InMemorySagaStore
from orchestrator.testing import FakeClock


class _Hanging:
    """A publisher whose confirm never comes."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def publish(self, *, commit: Commit, entry: OutboxEntry) -> None:
        self.started.set()
        await asyncio.Event().wait()


async def test_a_cancelled_dispatch_wakes_the_relay_and_stays_cancelled() -> None:
    clock = FakeClock()
    publisher = _Hanging()
    dispatcher = Dispatcher(store=InMemorySagaStore(), publisher=publisher)
    woken: list[str] = []
    dispatcher.on_failure.append(lambda: woken.append("relay"))
    entry = OutboxEntry(
        kind="command",
        type="inventory.reserve_stock.v1",
        body={},
        message_id="s:reserve_stock:do",
        routing_key="inventory.reserve_stock",
    )
    commit = Commit(
        saga_id="s",
        saga_name="order_fulfilment",
        version=1,
        causation_id="start",
        events=(),
        outbox=(entry,),
        created_at=clock(),
    )
    task = asyncio.create_task(dispatcher.dispatch(commit))
    await publisher.started.wait()

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert woken == ["relay"]
    assert dispatcher.published == 0
