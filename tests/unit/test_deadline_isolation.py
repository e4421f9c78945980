"""Deadlines and outboxes of one saga must not wait on another saga's orchestrator.

Two orchestrator deployments share one store (the documented way to run sagas on
separate instances): one serves ``order_fulfilment``, the other ``order_return``. Each
deadline watcher polls the store's oldest passed deadlines and leaves those of sagas it
does not serve to the other instance; each outbox relay publishes the oldest unpublished
commits.
"""

from __future__ import annotations

from contracts import OrderLine, PlaceOrder, RequestReturn
from orchestrator.messaging.envelope import Envelope
from orchestrator.packs.order_fulfilment import ORDER_FULFILMENT
from orchestrator.packs.order_return import ORDER_RETURN
from orchestrator.runtime.deadlines import DeadlineWatcher
from orchestrator.runtime.engine import SagaRuntime
from orchestrator.runtime.outbox import Dispatcher, OutboxRelay
from orchestrator.saga.commits import Commit, OutboxEntry
from orchestrator.saga.definition import SagaDefinition
from orchestrator.saga.registry import SagaRegistry
from orchestrator.saga.state import EventType
from orchestrator.store.memory import InMemorySagaStore
from orchestrator.testing import FakeClock, InMemoryOutboxPublisher

TIMEOUT = 30.0


def runtime(definition: SagaDefinition, store: InMemorySagaStore, clock: FakeClock) -> SagaRuntime:
    registry = SagaRegistry([definition]).with_defaults(timeout=TIMEOUT, max_sends=3)
    publisher = InMemoryOutboxPublisher(clock=clock)
    return SagaRuntime(
        registry=registry,
        store=store,
        dispatcher=Dispatcher(store=store, publisher=publisher),
        clock=clock,
    )


def start(message: PlaceOrder | RequestReturn, saga_id: str) -> Envelope:
    return Envelope(message=message, message_id=f"{saga_id}:start", correlation_id=saga_id)


def a_return(i: int) -> RequestReturn:
    return RequestReturn(
        return_id=f"return-{i}",
        order_saga_id=f"order-saga-{i}",
        lines=(OrderLine(sku="apple", quantity=1),),
        refund_cents=100,
    )


ORDER = PlaceOrder(
    order_id="order-1",
    customer_id="c-1",
    lines=(OrderLine(sku="apple", quantity=1),),
    amount_cents=1_000,
    ship_to="1 Main Street",
)


async def test_a_batch_of_another_sagas_overdue_deadlines_does_not_starve_ours() -> None:
    """Scenario: the order_return orchestrator is down; two return sagas' step deadlines
    passed first (batch_size=2 stands for the default 500); then an order saga's. The
    order orchestrator's watcher polls again and again: it must resend ReserveStock."""
    store, clock = InMemorySagaStore(), FakeClock()
    orders = runtime(ORDER_FULFILMENT, store, clock)
    returns = runtime(ORDER_RETURN, store, clock)
    for i in range(2):
        await returns.handle(start(a_return(i), f"return-saga-{i}"))
    clock.advance(1)
    await orders.handle(start(ORDER, "order-saga"))
    clock.advance(TIMEOUT + 10)  # every deadline has passed; nobody serves the returns
    watcher = DeadlineWatcher(store=store, runtime=orders, clock=clock, batch_size=2)

    for _ in range(5):
        await watcher.run_once()

    state = await store.load("order-saga")
    events = [e.type for c in await store.history("order-saga") for e in c.events]
    assert EventType.COMMAND_RESENT in events, state


async def test_commits_the_relay_cannot_publish_do_not_starve_ours() -> None:
    """Scenario: the store holds two unpublished commits of a saga another deployment
    serves, with a command type this process does not know (a user's saga, or a pack
    removed since); then the broker refuses our order saga's ReserveStock once. The
    relay (batch_size=2 stands for the default 200) must publish ours."""
    store, clock = InMemorySagaStore(), FakeClock()
    foreign = OutboxEntry(
        kind="command",
        type="cars.book_car.v1",  # registered in the other deployment's process only
        body={"trip_id": "t-1"},
        message_id="trip:book_car:do",
        routing_key="cars.book_car",
    )
    for i in range(2):
        await store.append(
            Commit(
                saga_id=f"trip-{i}",
                saga_name="travel",
                version=1,
                causation_id="start",
                events=(),
                outbox=(foreign,),
                created_at=clock(),
            )
        )
    clock.advance(1)
    orders = runtime(ORDER_FULFILMENT, store, clock)
    publisher = orders.dispatcher.publisher
    assert isinstance(publisher, InMemoryOutboxPublisher)
    publisher.fail(times=1)
    await orders.handle(start(ORDER, "order-saga"))
    clock.advance(60)
    relay = OutboxRelay(
        store=store, dispatcher=orders.dispatcher, clock=clock, grace=5, batch_size=2
    )

    for _ in range(5):
        await relay.run_once()

    assert "inventory.reserve_stock" in [m.routing_key for m in publisher.sent]
