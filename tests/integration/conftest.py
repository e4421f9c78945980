"""The whole system in the test's event loop: orchestrator, three participants, a client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from contracts import OrderLine, PlaceOrder
from orchestrator.client import SagaClient, new_saga_id
from orchestrator.harness import InvariantReport, check_invariants
from orchestrator.host import ServiceHost
from orchestrator.service import OrchestratorService
from orchestrator.settings import Settings
from orchestrator.state import SagaState
from participants.inventory import InventoryService, Levels
from participants.payment import PaymentService
from participants.shipping import ShippingService
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
    shipping: ShippingService
    extra: list[ServiceHost] = field(default_factory=list)

    async def order(
        self,
        *lines: tuple[str, int],
        amount_cents: int = 1_000,
        ship_to: str = "1 Main Street, Springfield",
        saga_id: str | None = None,
    ) -> str:
        """Place an order through the broker; returns its saga id."""
        saga_id = saga_id or new_saga_id()
        command = PlaceOrder(
            order_id=f"order-{saga_id[:8]}",
            customer_id="customer-1",
            lines=tuple(OrderLine(sku=s, quantity=q) for s, q in lines),
            amount_cents=amount_cents,
            ship_to=ship_to,
        )
        return await self.client.start(command, saga_id=saga_id)

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
        return await self.shipping.shipments.get(saga_id)

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
            return await check_invariants(db, saga_ids=saga_ids, initial_stock=initial_stock)

        return await eventually(check, until=lambda r: r.ok, timeout=timeout, what="invariants")

    async def start_extra(self, service: ServiceHost) -> ServiceHost:
        """Start another service instance (stopped at teardown)."""
        await service.start()
        self.extra.append(service)
        return service


async def start_system(settings: Settings) -> System:
    """Start every service and a client."""
    orchestrator = OrchestratorService(settings)
    inventory = InventoryService(settings)
    payment = PaymentService(settings)
    shipping = ShippingService(settings)
    for service in (orchestrator, inventory, payment, shipping):
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
    )


async def stop_system(system: System) -> None:
    """Stop whatever still runs."""
    await system.client.close()
    for service in (
        system.orchestrator,
        system.inventory,
        system.payment,
        system.shipping,
        *system.extra,
    ):
        if service.started:
            await service.stop()


@pytest.fixture
async def system(settings: Settings) -> AsyncIterator[System]:
    """The running system for one test."""
    running = await start_system(settings)
    try:
        yield running
    finally:
        await stop_system(running)


SystemFactory = Callable[..., Awaitable[System]]


@pytest.fixture
async def make_system(settings: Settings) -> AsyncIterator[SystemFactory]:
    """Start the system with some settings changed: ``await make_system(step_timeout=1)``."""
    started: list[System] = []

    async def make(**changes: Any) -> System:
        running = await start_system(settings.with_(**changes))
        started.append(running)
        return running

    try:
        yield make
    finally:
        for running in started:
            await stop_system(running)
            if running.settings.retry_delays != settings.retry_delays:
                await delete_topology(running.settings)  # its retry tiers have other names
