"""Progress events batched (``SAGA_PROGRESS_BATCH``, on by default) on a real broker and
store: concurrent sagas' progress goes in shared messages, and the read side stays
exact, also when a batch fails part-way and comes back round the retry tiers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts import (
    MalformedMessage,
    ProgressEvent,
    SagaProgressBatch,
    SagaProgressed,
    SagaProgressedItem,
)
from orchestrator.messaging.envelope import build_message
from orchestrator.readside import ReadSideService
from orchestrator.runtime.progress import ProgressBatcher
from orchestrator.saga.state import Status
from tests.faults import InjectedFault
from tests.helpers import eventually, metric_value, movements_settled
from tests.integration.conftest import System
from tests.integration.test_readside import (
    analytics_settled,
    expected_summary,
    restock,
    stock_side,
)
from tests.rabbit import depth, take_all

pytestmark = pytest.mark.integration

SAGAS = 40


def batcher_of(system: System) -> ProgressBatcher:
    progress = system.orchestrator.runtime.dispatcher.progress
    assert isinstance(progress, ProgressBatcher)
    return progress


async def run_concurrent_orders(system: System) -> list[str]:
    await restock(system, "apple", SAGAS)
    sagas = await asyncio.gather(*(system.order(("apple", 1)) for _ in range(SAGAS)))
    states = await asyncio.gather(*(system.settle(s) for s in sagas))
    assert [s.status for s in states] == [Status.COMPLETED] * SAGAS
    return list(sagas)


async def assert_read_side_exact(
    readside: ReadSideService, system: System, sagas: list[str]
) -> None:
    expected = [await expected_summary(system, s) for s in sagas]

    async def summaries() -> list[dict[str, Any] | None]:
        return [await readside.summaries.get(s) for s in sagas]

    await eventually(summaries, until=lambda got: got == expected, what="summaries caught up")
    await analytics_settled(readside, SAGAS)
    text = await readside.analytics.metrics()
    completed = metric_value(
        text, "saga_analytics_outcomes_total", saga="order_fulfilment", outcome="completed"
    )
    assert completed == SAGAS  # each saga counted once, redelivered batches included

    async def stock() -> tuple[Any, Any]:
        projected = (await stock_side(readside).stock.levels(["apple"]))["apple"]
        actual = await system.levels("apple")
        return (
            (projected.available, projected.reserved, projected.shipped),
            (actual.available, actual.reserved, actual.shipped),
        )

    projected, _ = await eventually(stock, until=lambda s: s[0] == s[1], what="stock projected")
    assert projected[1:] == (0, SAGAS)  # none held, every order's unit shipped
    await movements_settled(readside.db)
    counts = await readside.summaries.in_flight_counts()
    assert sum(counts.values()) == 0


async def test_concurrent_sagas_share_progress_messages_and_the_read_side_is_exact(
    system: System,
) -> None:
    readside = ReadSideService(system.settings)
    await system.start_extra(readside)
    progress = batcher_of(system)
    before = (progress.batched, progress.messages)

    sagas = await run_concurrent_orders(system)

    await assert_read_side_exact(readside, system, sagas)
    batched, messages = progress.batched - before[0], progress.messages - before[1]
    assert batched > 0  # some progress events went in batches of two or more
    assert messages < 6 * SAGAS  # fewer messages than the six progress events per saga


async def test_a_batch_that_fails_part_way_is_retried_whole_and_counted_once(
    system: System,
) -> None:
    readside = ReadSideService(system.settings)
    await system.start_extra(readside)
    analytics = readside.analytics
    original = analytics.apply
    failed: set[str] = set()

    async def fails_once_per_ending(saga_id: str, event: SagaProgressed) -> bool:
        """The first delivery of each saga's last event fails (a store hiccup) after
        the items before it in its batch were applied."""
        if event.status == "completed" and saga_id not in failed:
            failed.add(saga_id)
            raise InjectedFault("analytics store hiccup")
        return await original(saga_id, event)

    analytics.apply = fails_once_per_ending  # type: ignore[method-assign]
    progress = batcher_of(system)
    before = progress.batched

    sagas = await run_concurrent_orders(system)

    await assert_read_side_exact(readside, system, sagas)
    assert failed == set(sagas)
    assert progress.batched > before


async def test_only_the_failed_items_of_a_batch_go_on_each_alone_where_its_error_sends_it(
    system: System,
) -> None:
    """Review finding: a batch that failed part-way went round the retry tiers whole
    (one retry budget for every saga in it, the items applied again) and was
    dead-lettered whole, under an id no ``--saga-id`` filter finds. Now the failed items
    go on alone: a transient failure to the retry tier, a malformed one to the
    dead-letter queue, each as its saga's own ``saga.progressed``; the batch is acked."""
    readside = ReadSideService(system.settings)
    await system.start_extra(readside)
    calls: dict[str, int] = {}

    async def recording(saga_id: str, event: SagaProgressed) -> bool:
        calls[saga_id] = calls.get(saga_id, 0) + 1
        if saga_id == "probe-bad":
            raise MalformedMessage("schema_violation", "not an event this saga has")
        if saga_id == "probe-flaky" and calls[saga_id] == 1:
            raise InjectedFault("analytics store hiccup")
        return False

    readside.analytics.apply = recording  # type: ignore[method-assign]
    now = datetime.now(UTC)
    items = tuple(
        SagaProgressedItem(
            saga_id=saga_id,
            progressed=SagaProgressed(
                saga_name="probe_saga",
                version=1,
                status="completed",
                events=(ProgressEvent(type="saga_completed", at=now),),
            ),
        )
        for saga_id in ("probe-good1", "probe-bad", "probe-flaky", "probe-good2")
    )
    batch = SagaProgressBatch(saga_name="probe_saga", progress=items)
    topology = system.settings.topology()
    message = build_message(batch, message_id="progress-probe", correlation_id="progress-probe")
    await system.client.bus.publish(
        message, exchange=topology.events_exchange, routing_key="probe_saga.progressed"
    )

    want = {"probe-good1": 1, "probe-bad": 1, "probe-flaky": 2, "probe-good2": 1}
    await eventually(lambda: asyncio.sleep(0, dict(calls)), until=lambda c: c == want)
    queue = topology.queue("analytics.events")
    (letter,) = await eventually(
        lambda: take_all(system.settings.amqp_url, queue.dlq), until=lambda got: len(got) == 1
    )
    assert letter.type == SagaProgressed.TYPE
    assert letter.correlation_id == "probe-bad"
    assert letter.message_id == "probe-bad:v1"
    assert (letter.headers or {})["x-error-reason"] == "schema_violation"
    assert await depth(system.settings.amqp_url, queue.name) == 0
    assert calls == want  # the good items were not applied again
