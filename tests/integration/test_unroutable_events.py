"""Outcome events are published mandatory: a return is seen, and what it means depends
on whether the topology expects a queue to take the event."""

from __future__ import annotations

import asyncio
import dataclasses

import aio_pika
import pytest

from orchestrator.errors import BrokerUnavailable, Unroutable
from orchestrator.messaging.topology import QueueSpec, Routes
from orchestrator.runtime.outbox import AmqpOutboxPublisher, topic_matches
from orchestrator.saga.commits import Commit, OutboxEntry
from orchestrator.saga.state import Status
from tests.integration.conftest import System

pytestmark = pytest.mark.integration


def test_topic_matching_follows_amqp() -> None:
    assert topic_matches("*.progressed", "order_fulfilment.progressed")
    assert not topic_matches("*.progressed", "a.b.progressed")
    assert topic_matches("#", "a.b.c")
    assert topic_matches("order_fulfilment.#", "order_fulfilment")
    assert topic_matches("a.#.c", "a.c")
    assert topic_matches("a.#.c", "a.x.y.c")
    assert not topic_matches("a.*", "b.c")


async def completed_outcome(system: System) -> tuple[Commit, OutboxEntry]:
    """The commit that completed a real saga, and its outcome event."""
    await system.inventory.inventory.set_stock("apple", 5)
    saga_id = await system.order(("apple", 1))
    assert (await system.settle(saga_id)).status is Status.COMPLETED
    for commit in reversed(await system.client.history(saga_id)):
        events = [o for o in commit.outbox if o.kind == "event" and "progressed" not in o.type]
        if events:
            return commit, events[0]
    raise AssertionError("no outcome event in the saga's outboxes")


async def test_an_event_no_queue_is_meant_to_take_is_counted_not_retried(
    system: System,
) -> None:
    commit, event = await completed_outcome(system)
    publisher = AmqpOutboxPublisher(bus=system.client.bus)
    nobody = dataclasses.replace(event, routing_key="nobody_listens.completed")
    await publisher.publish(commit=commit, entry=nobody)  # returned, and that is fine
    assert publisher.unrouted_events == 1
    await publisher.publish(commit=commit, entry=event)  # routed: a pack's queue takes it
    assert publisher.unrouted_events == 1


async def test_an_event_whose_expected_queue_is_missing_is_unroutable(system: System) -> None:
    """A queue the topology says takes ``ghost.completed`` is not on the broker (its
    binding is gone): the return raises ``Unroutable``, which the relay retries with
    backoff and then parks with the reason, instead of losing the event."""
    commit, event = await completed_outcome(system)
    bus = system.client.bus
    declared = bus.topology
    ghost = QueueSpec(suffix="ghost.outcomes", bindings=("ghost.completed",), purpose="test")
    routes = dataclasses.replace(declared.routes, queues=(*declared.routes.queues, ghost))
    assert isinstance(routes, Routes)
    bus.topology = dataclasses.replace(declared, routes=routes)  # not declared on the broker
    try:
        publisher = AmqpOutboxPublisher(bus=bus)
        with pytest.raises(Unroutable, match=r"ghost\.completed"):
            await publisher.publish(
                commit=commit, entry=dataclasses.replace(event, routing_key="ghost.completed")
            )
        assert publisher.unrouted_events == 0
    finally:
        bus.topology = declared


async def test_a_return_fails_its_own_publish_when_the_same_id_is_in_flight_twice(
    system: System,
) -> None:
    """A relay republish and a dispatch of one outbox entry can be in flight at once with
    the same message id. The broker returns the one no queue takes: that publish must
    fail (so its outbox stays pending), and the routed one must be confirmed; the client
    library matches a return by message id, so one id is never in flight twice."""
    bus = system.client.bus
    exchange = bus.topology.commands_exchange
    channel = await bus.connection.channel()
    try:
        queue = await channel.declare_queue(f"{system.settings.namespace}.same-id-probe")
        await queue.bind(exchange, routing_key="same_id_probe.routed")
        for _round in range(5):
            returned, routed = await asyncio.gather(
                bus.publish(
                    aio_pika.Message(b"{}", message_id="same-id"),
                    exchange=exchange,
                    routing_key="same_id_probe.nobody",
                ),
                bus.publish(
                    aio_pika.Message(b"{}", message_id="same-id"),
                    exchange=exchange,
                    routing_key="same_id_probe.routed",
                ),
                return_exceptions=True,
            )
            assert isinstance(returned, BrokerUnavailable), f"returned yet confirmed: {returned!r}"
            assert routed is None, f"routed yet failed: {routed!r}"
            delivered = await queue.get(timeout=5)
            await delivered.ack()
            assert delivered.routing_key == "same_id_probe.routed"
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await channel.close()
