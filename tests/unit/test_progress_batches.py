"""Progress events of concurrent commits go as one message (``SAGA_PROGRESS_BATCH``):
each commit is flagged dispatched only once its own progress event was confirmed, a
failed batch leaves every commit in it pending, and a consumer sees one envelope per
saga, every item applied before the delivery is settled."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from contracts import (
    Message,
    ProgressEvent,
    SagaProgressBatch,
    SagaProgressed,
    SagaProgressedItem,
    encode,
)
from orchestrator.errors import BrokerUnavailable, StoreUnavailable, Unroutable
from orchestrator.messaging.envelope import Envelope
from orchestrator.messaging.outage import StoreGate
from orchestrator.runtime.outbox import Dispatcher
from orchestrator.runtime.progress import MAX_BATCH_BYTES, BatchFailed, ProgressBatcher, per_saga
from orchestrator.saga.commits import Commit, OutboxEntry
from orchestrator.store.memory import InMemorySagaStore

NOW = datetime(2026, 12, 3, tzinfo=UTC)


def progressed(version: int, *, saga: str = "order_fulfilment", note: str = "") -> SagaProgressed:
    return SagaProgressed(
        saga_name=saga,
        version=version,
        status="running",
        events=(ProgressEvent(type="step_started", at=NOW, step="reserve_stock"),),
        start={"note": note},
    )


def commit(
    saga_id: str, *, version: int = 1, saga: str = "order_fulfilment", note: str = ""
) -> Commit:
    command = OutboxEntry(
        kind="command",
        type="inventory.reserve_stock.v1",
        body={},
        message_id=f"{saga_id}:reserve_stock:do",
        routing_key="inventory.reserve_stock",
    )
    message = progressed(version, saga=saga, note=note)
    progress = OutboxEntry(
        kind="event",
        type=SagaProgressed.TYPE,
        body=message.model_dump(mode="json"),
        message_id=f"{saga_id}:v{version}",
        routing_key=f"{saga}.progressed",
    )
    return Commit(
        saga_id=saga_id,
        saga_name=saga,
        version=version,
        causation_id="start",
        events=(),
        outbox=(command, progress),
        created_at=NOW,
    )


class Broker:
    """Records what is published; ``confirm`` releases the confirms when set."""

    def __init__(self, *, fail_batches: bool = False) -> None:
        self.singles: list[OutboxEntry] = []
        self.batches: list[tuple[SagaProgressBatch, str]] = []
        self.confirm = asyncio.Event()
        self.confirm.set()
        self.fail_batches = fail_batches

    async def publish(self, *, commit: Commit, entry: OutboxEntry) -> None:
        await self.confirm.wait()
        self.singles.append(entry)

    async def publish_batch(self, batch: Message, *, message_id: str, routing_key: str) -> None:
        assert isinstance(batch, SagaProgressBatch)
        await self.confirm.wait()
        if self.fail_batches:
            raise BrokerUnavailable("not confirmed: the channel closed")
        self.batches.append((batch, routing_key))


def dispatcher_on(broker: Broker) -> tuple[Dispatcher, ProgressBatcher]:
    progress = ProgressBatcher(publisher=broker, max_batch=100)
    return Dispatcher(store=InMemorySagaStore(), publisher=broker, progress=progress), progress


async def test_concurrent_commits_share_one_progress_message_in_their_order() -> None:
    broker = Broker()
    dispatcher, progress = dispatcher_on(broker)
    commits = [commit(f"s{i}") for i in range(5)]

    results = await asyncio.gather(*(dispatcher.dispatch(c) for c in commits))

    assert results == [True] * 5
    ((batch, key),) = broker.batches
    assert key == "order_fulfilment.progressed"
    assert [item.saga_id for item in batch.progress] == ["s0", "s1", "s2", "s3", "s4"]
    assert all(item.progressed == progressed(1) for item in batch.progress)
    # The commands went one by one, as before; the progress events only in the batch.
    assert sorted(e.message_id for e in broker.singles) == [
        f"s{i}:reserve_stock:do" for i in range(5)
    ]
    assert progress.batched == 5
    assert progress.messages == 1
    assert dispatcher.bookkeeper.pending == 5  # each commit flagged once


async def test_a_commit_alone_sends_a_plain_progress_event() -> None:
    broker = Broker()
    dispatcher, _ = dispatcher_on(broker)

    assert await dispatcher.dispatch(commit("alone"))

    assert broker.batches == []
    assert sorted(e.message_id for e in broker.singles) == ["alone:reserve_stock:do", "alone:v1"]


async def test_saga_types_go_in_messages_of_their_own() -> None:
    broker = Broker()
    dispatcher, _ = dispatcher_on(broker)
    commits = [commit("o1"), commit("r1", saga="order_return"), commit("o2")]
    commits.append(commit("r2", saga="order_return"))

    await asyncio.gather(*(dispatcher.dispatch(c) for c in commits))

    by_key = {key: [i.saga_id for i in b.progress] for b, key in broker.batches}
    assert by_key == {
        "order_fulfilment.progressed": ["o1", "o2"],
        "order_return.progressed": ["r1", "r2"],
    }


async def test_no_commit_is_flagged_before_its_batch_is_confirmed() -> None:
    broker = Broker()
    broker.confirm.clear()
    dispatcher, _ = dispatcher_on(broker)
    tasks = [asyncio.create_task(dispatcher.dispatch(commit(f"s{i}"))) for i in range(3)]
    for _ in range(20):
        await asyncio.sleep(0)

    assert dispatcher.bookkeeper.pending == 0
    assert not any(t.done() for t in tasks)
    broker.confirm.set()
    assert await asyncio.gather(*tasks) == [True, True, True]
    assert dispatcher.bookkeeper.pending == 3


async def test_a_batch_not_confirmed_leaves_every_commit_in_it_pending() -> None:
    broker = Broker(fail_batches=True)
    dispatcher, _ = dispatcher_on(broker)
    woken: list[str] = []
    dispatcher.on_failure.append(lambda: woken.append("relay"))

    results = await asyncio.gather(*(dispatcher.dispatch(commit(f"s{i}")) for i in range(4)))

    assert results == [False] * 4
    assert dispatcher.bookkeeper.pending == 0  # none flagged: the relay sends them again
    assert dispatcher.published == 0
    assert woken == ["relay"] * 4


async def test_a_stored_body_that_no_longer_validates_fails_only_its_own_commit() -> None:
    broker = Broker()
    dispatcher, _ = dispatcher_on(broker)
    bad = commit("bad")
    entries = list(bad.outbox)
    entries[1] = OutboxEntry(
        kind="event",
        type=SagaProgressed.TYPE,
        body={"saga_name": "order_fulfilment", "version": "not a number"},
        message_id="bad:v1",
        routing_key="order_fulfilment.progressed",
    )
    bad = Commit(**{**bad.__dict__, "outbox": tuple(entries)})

    results = await asyncio.gather(
        *(dispatcher.dispatch(c) for c in (commit("a"), bad, commit("b"))),
        return_exceptions=True,
    )

    assert results[0] is True
    assert results[2] is True
    assert isinstance(results[1], Exception)  # as without batching: the relay parks it
    ((batch, _),) = broker.batches
    assert [i.saga_id for i in batch.progress] == ["a", "b"]
    assert dispatcher.bookkeeper.pending == 2


async def test_a_batch_too_big_for_one_message_is_split() -> None:
    broker = Broker()
    dispatcher, progress = dispatcher_on(broker)
    note = "x" * 20_000
    commits = [commit(f"s{i}", note=note) for i in range(20)]

    await asyncio.gather(*(dispatcher.dispatch(c) for c in commits))

    sent = [i.saga_id for b, _ in broker.batches for i in b.progress]
    sent += [e.message_id.split(":")[0] for e in broker.singles if e.message_id.endswith(":v1")]
    assert sorted(sent) == sorted(f"s{i}" for i in range(20))
    assert len(broker.batches) > 1
    assert all(len(encode(b)) <= MAX_BATCH_BYTES + 1024 for b, _ in broker.batches)
    assert progress.messages == len(broker.batches) + sum(
        1 for e in broker.singles if e.message_id.endswith(":v1")
    )


def batch_envelope(*items: tuple[str, int]) -> Envelope:
    batch = SagaProgressBatch(
        saga_name="order_fulfilment",
        progress=tuple(
            SagaProgressedItem(saga_id=saga_id, progressed=progressed(version))
            for saga_id, version in items
        ),
    )
    return Envelope(message=batch, message_id="progress-1", correlation_id="progress-1")


async def test_a_consumer_sees_one_envelope_per_saga() -> None:
    seen: list[tuple[str, str, int]] = []

    async def handler(envelope: Envelope) -> None:
        assert isinstance(envelope.message, SagaProgressed)
        seen.append((envelope.correlation_id, envelope.message_id, envelope.message.version))

    await per_saga(handler)(batch_envelope(("a", 1), ("b", 3), ("a", 2)))

    assert seen == [("a", "a:v1", 1), ("b", "b:v3", 3), ("a", "a:v2", 2)]


async def test_a_failing_item_fails_the_delivery_after_every_item_ran() -> None:
    done: list[str] = []

    async def handler(envelope: Envelope) -> None:
        await asyncio.sleep(0)
        if envelope.correlation_id == "b":
            raise RuntimeError("store down")
        done.append(envelope.correlation_id)

    with pytest.raises(BatchFailed, match="store down") as raised:
        await per_saga(handler)(batch_envelope(("a", 1), ("b", 1), ("c", 1)))
    assert done == ["a", "c"]  # settled only after the others finished
    assert [(item.saga_id, type(e)) for item, e in raised.value.failures] == [("b", RuntimeError)]
    assert raised.value.applied == 2


async def test_items_run_no_more_at_once_than_the_limit_across_deliveries() -> None:
    """Without a bound, 64 deliveries of 100 items made 6,400 handlers queue writes
    long enough to outlast the read side's leases (review finding)."""
    running, most = 0, 0

    async def handler(envelope: Envelope) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        for _ in range(3):
            await asyncio.sleep(0)
        running -= 1

    handle = per_saga(handler, limit=4)
    batches = [batch_envelope(*((f"s{d}-{i}", 1) for i in range(10))) for d in range(3)]
    await asyncio.gather(*(handle(b) for b in batches))

    assert most == 4


async def test_a_route_gone_for_one_saga_type_fails_only_its_own_commits() -> None:
    """Review finding: one saga type's progress route missing (Unroutable) failed, and in
    the end parked, the commits of every other saga type batched in the same turn."""

    class HalfRouted(Broker):
        async def publish(self, *, commit: Commit, entry: OutboxEntry) -> None:
            if entry.routing_key.startswith("order_return"):
                raise Unroutable("no queue is bound for order_return.progressed")
            await super().publish(commit=commit, entry=entry)

        async def publish_batch(self, batch: Message, *, message_id: str, routing_key: str) -> None:
            await asyncio.sleep(0)
            if routing_key.startswith("order_return"):
                raise Unroutable("no queue is bound for order_return.progressed")
            await super().publish_batch(batch, message_id=message_id, routing_key=routing_key)

    broker = HalfRouted()
    dispatcher, _ = dispatcher_on(broker)
    commits = [commit("r1", saga="order_return"), commit("r2", saga="order_return")]
    commits += [commit("o1"), commit("o2")]

    results = await asyncio.gather(*(dispatcher.dispatch(c) for c in commits))

    assert results == [False, False, True, True]
    assert [[i.saga_id for i in b.progress] for b, _ in broker.batches] == [["o1", "o2"]]
    assert dispatcher.bookkeeper.pending == 2  # o1 and o2 flagged; r1 and r2 stay pending


async def test_other_messages_pass_through() -> None:
    seen: list[Any] = []

    async def handler(envelope: Envelope) -> None:
        seen.append(envelope.message)

    single = Envelope(message=progressed(1), message_id="a:v1", correlation_id="a")
    await per_saga(handler)(single)
    assert seen == [progressed(1)]


async def test_an_outage_during_a_batch_holds_each_item_instead_of_failing_it() -> None:
    """Review finding: the store gate guarded the whole batch and asked whether the
    store answers only after the last item; an election that ended by then sent the
    early items to the retry tiers, attempts counted. Each item is held now."""
    store = {"up": False, "failures": 0}
    applied: list[str] = []

    async def probe() -> bool:
        answer = bool(store["up"])
        store["up"] = True  # the election ends just after the first question
        return answer

    async def handler(envelope: Envelope) -> None:
        await asyncio.sleep(0)  # a store round trip, timing out while it is down
        if not store["up"]:
            store["failures"] += 1
            if store["failures"] >= 8:  # or after two waves, asked or not
                store["up"] = True
            raise StoreUnavailable("no primary")
        applied.append(envelope.correlation_id)

    gate = StoreGate(probe, fresh=0.0, backoff=0.001, max_backoff=0.002)
    handle = gate.guard(per_saga(handler, limit=4, guard=gate.guard))

    await handle(batch_envelope(*((f"s{i}", 1) for i in range(40))))  # raises nothing

    assert sorted(applied) == sorted(f"s{i}" for i in range(40))
    assert gate.outages == 1
    assert store["failures"] == 4  # the first wave only: held, then run again


async def test_a_progress_event_alone_is_published_in_its_submitters_context() -> None:
    """A lone progress event goes out from the batcher's task, but in the context of the
    commit that sent it: what its publish logs (a channel renewed after a nack) carries the
    saga's bound fields, and its span the saga's trace."""
    seen: dict[str, Any] = {}

    class Recording(Broker):
        async def publish(self, *, commit: Commit, entry: OutboxEntry) -> None:
            if entry.kind == "event":
                seen.update(structlog.contextvars.get_contextvars())
            await super().publish(commit=commit, entry=entry)

    dispatcher, _ = dispatcher_on(Recording())
    with structlog.contextvars.bound_contextvars(saga_id="alone", message_id="m-1", attempt=2):
        assert await dispatcher.dispatch(commit("alone"))

    assert {k: seen.get(k) for k in ("saga_id", "message_id", "attempt")} == {
        "saga_id": "alone",
        "message_id": "m-1",
        "attempt": 2,
    }
