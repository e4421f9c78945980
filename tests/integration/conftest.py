"""The whole system in the test's event loop: orchestrator, four participants, a client.

Shipping runs as the aio-pika ``ShippingService`` unless ``SAGA_TEST_SHIPPING=faststream``
is set, or a test module overrides the ``shipping_flavour`` fixture: then the faststream
one (``participants.shipping.streams``) runs in its place, on the same queues and store.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from contracts import OrderLine, PlaceOrder, RequestReturn
from orchestrator.client import SagaClient, new_saga_id
from orchestrator.dev.harness import InvariantReport, check_invariants
from orchestrator.runtime.host import ServiceHost
from orchestrator.runtime.service import OrchestratorService
from orchestrator.saga.state import SagaState, Status
from orchestrator.settings import Settings
from participants.inventory import InventoryService, Levels
from participants.kit.streams import StreamService
from participants.payment import PaymentService
from participants.returns import ReturnsService
from participants.shipping import MongoShipments, ShippingService
from participants.shipping.streams import shipping as stream_shipping
from tests.helpers import delete_topology, eventually

pytestmark = pytest.mark.integration


@dataclass
class System:
    """Running services plus shortcuts the tests share."""

    settings: Settings
    client: SagaClient
    orchestrator: OrchestratorService
    inventory: InventoryService
    payment: PaymentService
    shipping: ShippingService | StreamService
    returns: ReturnsService = None  # type: ignore[assignment]  # views built without it
    extra: list[ServiceHost] = field(default_factory=list)

    async def order(
        self,
        *lines: tuple[str, int],
        amount_cents: int = 1_000,
        ship_to: str = "1 Main Street, Springfield",
        saga_id: str | None = None,
        version: int | None = None,
    ) -> str:
        """Place an order through the broker (on definition ``version``, default the
        newest); returns its saga id."""
        saga_id = saga_id or new_saga_id()
        command = PlaceOrder(
            order_id=f"order-{saga_id[:8]}",
            customer_id="customer-1",
            lines=tuple(OrderLine(sku=s, quantity=q) for s, q in lines),
            amount_cents=amount_cents,
            ship_to=ship_to,
        )
        return await self.client.start(command, saga_id=saga_id, version=version)

    async def completed_order(self, *lines: tuple[str, int], amount_cents: int = 1_000) -> str:
        """Place an order and wait until it completed and settled: its stock shipped and
        its payment captured (what a return needs); returns its saga id."""
        saga_id = await self.order(*lines, amount_cents=amount_cents)
        state = await self.settle(saga_id)
        assert state.status is Status.COMPLETED, state
        reservations = self.inventory.inventory.reservations
        await eventually(
            lambda: reservations.find_one({"_id": saga_id}),
            until=lambda doc: doc is not None and doc["status"] == "shipped",
            what="order's stock shipped",
        )
        await eventually(
            lambda: self.payment_of(saga_id),
            until=lambda doc: doc is not None and doc["status"] == "captured",
            what="order's payment captured",
        )
        return saga_id

    async def return_order(
        self,
        order_saga_id: str,
        *lines: tuple[str, int],
        refund_cents: int,
        currency: str = "EUR",
        saga_id: str | None = None,
        version: int | None = None,
    ) -> str:
        """Request a return of an order through the broker (on definition ``version``,
        default the newest); returns the return's saga id."""
        saga_id = saga_id or new_saga_id()
        command = RequestReturn(
            return_id=f"return-{saga_id[:8]}",
            order_saga_id=order_saga_id,
            lines=tuple(OrderLine(sku=s, quantity=q) for s, q in lines),
            refund_cents=refund_cents,
            currency=currency,
        )
        return await self.client.start(command, saga_id=saga_id, version=version)

    async def settle(self, saga_id: str, timeout: float = 60.0) -> SagaState:
        """Wait until the saga is terminal or parked."""
        return await self.client.wait_settled(saga_id, timeout=timeout)

    async def levels(self, sku: str) -> Levels:
        """Stock of a SKU."""
        return await self.inventory.inventory.levels(sku)

    async def payment_of(self, saga_id: str) -> dict[str, Any] | None:
        """The saga's payment document."""
        return await self.payment.payments.get(saga_id)

    async def shipment_of(self, saga_id: str) -> dict[str, Any] | None:
        """The saga's shipment document."""
        return await MongoShipments(database=self.shipping.db, undeliverable=()).get(saga_id)

    async def restart_orchestrator(self, *, crash: bool) -> OrchestratorService:
        """Stop (or kill) the orchestrator and start a fresh instance on the same queues."""
        if crash:
            await self.orchestrator.kill()
        else:
            await self.orchestrator.stop()
        self.orchestrator = OrchestratorService(self.settings, instance="restarted")
        await self.orchestrator.start()
        return self.orchestrator

    async def invariants(
        self, initial_stock: dict[str, int], saga_ids: list[str], timeout: float = 60.0
    ) -> InvariantReport:
        """Wait for quiescence (the invariants hold) and return the report; a report with
        violations at the deadline fails the test with the violations listed."""
        db = self.inventory.db

        async def check() -> InvariantReport:
            return await check_invariants(
                db,
                saga_ids=saga_ids,
                initial_stock=initial_stock,
                packs=self.settings.packs(),
            )

        return await eventually(check, until=lambda r: r.ok, timeout=timeout, what="invariants")

    async def start_extra(self, service: ServiceHost) -> ServiceHost:
        """Start another service instance (stopped at teardown)."""
        await service.start()
        self.extra.append(service)
        return service


SHIPPING_FLAVOURS = ("aio-pika", "faststream")


def shipping_service(settings: Settings, flavour: str) -> ShippingService | StreamService:
    """The shipping participant of one flavour."""
    if flavour == "faststream":
        return StreamService(stream_shipping, settings)
    if flavour == "aio-pika":
        return ShippingService(settings)
    raise ValueError(f"no shipping flavour {flavour!r}; one of {', '.join(SHIPPING_FLAVOURS)}")


async def start_system(settings: Settings, *, shipping_flavour: str = "aio-pika") -> System:
    """Start every service and a client."""
    orchestrator = OrchestratorService(settings)
    inventory = InventoryService(settings)
    payment = PaymentService(settings)
    shipping = shipping_service(settings, shipping_flavour)
    # The returns participant runs when its saga is registered (tests may register others).
    returns = ReturnsService(settings) if "order_return" in orchestrator.registry else None
    for service in (orchestrator, inventory, payment, shipping, returns):
        if service is not None:
            await service.start()
    client = SagaClient(settings, name="test-client")
    await client.connect()
    return System(
        settings=settings,
        client=client,
        orchestrator=orchestrator,
        inventory=inventory,
        payment=payment,
        shipping=shipping,
        returns=returns,
    )


async def stop_system(system: System) -> None:
    """Stop whatever still runs."""
    await system.client.close()
    for service in (
        system.orchestrator,
        system.inventory,
        system.payment,
        system.shipping,
        system.returns,
        *system.extra,
    ):
        if service is not None and service.started:
            await service.stop()


@pytest.fixture
def shipping_flavour() -> str:
    """Which shipping participant the system runs: ``SAGA_TEST_SHIPPING``, else aio-pika."""
    return os.environ.get("SAGA_TEST_SHIPPING") or "aio-pika"


@pytest.fixture
async def system(settings: Settings, shipping_flavour: str) -> AsyncIterator[System]:
    """The running system for one test."""
    running = await start_system(settings, shipping_flavour=shipping_flavour)
    try:
        yield running
    finally:
        await stop_system(running)


SystemFactory = Callable[..., Awaitable[System]]


@pytest.fixture
async def make_system(settings: Settings, shipping_flavour: str) -> AsyncIterator[SystemFactory]:
    """Start the system with some settings changed: ``await make_system(step_timeout=1)``."""
    started: list[System] = []

    async def make(**changes: Any) -> System:
        running = await start_system(settings.with_(**changes), shipping_flavour=shipping_flavour)
        started.append(running)
        return running

    try:
        yield make
    finally:
        for running in started:
            await stop_system(running)
            if (running.settings.retry_delays, running.settings.saga_definitions) != (
                settings.retry_delays,
                settings.saga_definitions,
            ):  # other retry tiers or other sagas: queues the test's teardown does not know
                await delete_topology(running.settings)
