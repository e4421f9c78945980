"""Messages in flight while the orchestrator is upgraded to per-saga queues.

The previous release consumed ``<ns>.orchestrator.replies`` and sent every command with
``reply_to="orchestrator"``. A command it published just before the upgrade is handled
by a participant afterwards: the reply must still reach the saga."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from contracts import OrderLine, PlaceOrder
from orchestrator.messaging.bus import Bus
from orchestrator.messaging.envelope import Envelope, build_message
from orchestrator.runtime.engine import SagaRuntime
from orchestrator.runtime.outbox import Dispatcher
from orchestrator.saga.commits import Commit, OutboxEntry
from orchestrator.saga.state import Status
from tests.integration.conftest import SystemFactory

pytestmark = pytest.mark.integration


@dataclass(frozen=True, kw_only=True)
class PreviousReleasePublisher:
    """Publishes as the release before per-saga queues: ``reply_to`` is ``orchestrator``."""

    bus: Bus

    async def publish(self, *, commit: Commit, entry: OutboxEntry) -> None:
        command = entry.kind == "command"
        message = build_message(
            entry.message(),
            message_id=entry.message_id,
            correlation_id=commit.saga_id,
            causation_id=commit.causation_id,
            reply_to="orchestrator" if command else None,
            app_id="orchestrator",
        )
        topology = self.bus.topology
        exchange = topology.commands_exchange if command else topology.events_exchange
        await self.bus.publish(
            message, exchange=exchange, routing_key=entry.routing_key, mandatory=command
        )


async def test_a_reply_to_a_command_sent_before_the_upgrade_reaches_its_saga(
    make_system: SystemFactory,
) -> None:
    """Scenario: the previous release stores an order saga and publishes ReserveStock
    (reply_to "orchestrator"); the orchestrator is upgraded; inventory reserves and
    replies. The saga must go on at once, not after its 120 s step deadline."""
    system = await make_system(step_timeout=120.0)
    await system.inventory.inventory.set_stock("apple", 5)
    store = system.orchestrator.store
    dispatcher = Dispatcher(store=store, publisher=PreviousReleasePublisher(bus=system.client.bus))
    registry = system.orchestrator.registry
    previous = SagaRuntime(registry=registry, store=store, dispatcher=dispatcher)
    order = PlaceOrder(
        order_id="order-1",
        customer_id="c-1",
        lines=(OrderLine(sku="apple", quantity=2),),
        amount_cents=1_000,
        ship_to="1 Main Street",
    )

    await previous.handle(Envelope(message=order, message_id="old:start", correlation_id="old"))
    await dispatcher.flush()  # published and flagged: the new relay has nothing to resend
    state = await system.settle("old", timeout=20)

    assert state.status is Status.COMPLETED, state
