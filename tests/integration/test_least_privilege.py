"""Least-privilege users on the local broker: ``saga topology apply`` declares the topology
as the administrator, ``saga topology users`` creates one user per service, and each
service runs as its own user with ``SAGA_DECLARE_TOPOLOGY=false``.

Users are named after the test's namespace (``<namespace>-<service>``) in the default
vhost and removed after the test, with the policies ``apply`` set.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused

from contracts import OrderLine, PlaceOrder
from orchestrator.cli.topology import apply_policies, apply_topology
from orchestrator.client import SagaClient, new_saga_id
from orchestrator.messaging.management import Management, management_for
from orchestrator.messaging.permissions import service_users
from orchestrator.messaging.topology import TopologyMissing
from orchestrator.ops.dlq import list_dead_letters, replay
from orchestrator.ops.letters import EVERYTHING
from orchestrator.readside.service import ReadSideService
from orchestrator.runtime.host import ServiceHost
from orchestrator.runtime.service import OrchestratorService
from orchestrator.saga.state import Status
from orchestrator.settings import Settings
from participants.inventory import InventoryService
from participants.kit.streams import StreamService
from participants.payment import PaymentService
from participants.returns import ReturnsService
from tests.helpers import eventually, run_cli
from tests.integration.conftest import SHIPPING_FLAVOURS, shipping_service

pytestmark = pytest.mark.integration


def as_user(url: str, user: str, password: str) -> str:
    """``url`` with other credentials."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}:{parts.port or 5672}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


@dataclass
class Deployment:
    """The applied topology and the services' users of one test."""

    admin: Settings
    management: Management
    passwords: dict[str, str]

    def settings_for(self, service: str) -> Settings:
        """The settings a service runs with: its own user, no declarations."""
        user = f"{self.admin.namespace}-{service}"
        url = as_user(self.admin.amqp_url, user, self.passwords[service])
        return self.admin.with_(amqp_url=url, declare_topology=False)

    async def connect(self, service: str) -> aio_pika.abc.AbstractRobustConnection:
        """A connection as the service's user."""
        return await aio_pika.connect_robust(
            self.settings_for(service).amqp_url,
            client_properties={"connection_name": f"{self.admin.namespace}.{service}.probe"},
        )


async def deploy(settings: Settings) -> AsyncIterator[Deployment]:
    """Apply the topology and policies, create the users; remove users and policies after."""
    topology = settings.topology()
    management = management_for(settings.amqp_url)
    await apply_topology(topology, settings.amqp_url)
    await apply_policies(topology, management)
    users = service_users(topology)
    passwords = {u.service: secrets.token_urlsafe(16) for u in users}
    try:
        for user in users:
            await management.put_user(user, passwords[user.service])
        yield Deployment(admin=settings, management=management, passwords=passwords)
    finally:
        for user in users:
            await management.delete_user(user.name)
        for policy in topology.policies():
            await management.delete_policy(policy.name)


@pytest.fixture
async def deployment(settings: Settings) -> AsyncIterator[Deployment]:
    """The test's namespace applied, with its users (the ``settings`` fixture deletes the
    topology afterwards)."""
    async for applied in deploy(settings):
        yield applied


async def _ack(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    await message.ack()


async def refused_consume(connection: aio_pika.abc.AbstractConnection, queue: str) -> bool:
    """Whether consuming ``queue`` is refused (the queue itself exists)."""
    channel = await connection.channel()
    declared = await channel.declare_queue(queue, passive=True)
    try:
        await declared.consume(_ack)
    except ChannelAccessRefused:
        return True
    await channel.close()
    return False


async def refused_publish(
    connection: aio_pika.abc.AbstractConnection, exchange: str, key: str
) -> bool:
    """Whether publishing to ``exchange`` with ``key`` is refused."""
    channel = await connection.channel(publisher_confirms=True)
    target = await channel.get_exchange(exchange, ensure=False)
    try:
        await target.publish(aio_pika.Message(b"{}"), routing_key=key, timeout=10)
    except ChannelAccessRefused:
        return True
    await channel.close()
    return False


async def test_participant_cannot_consume_another_participants_queue(
    deployment: Deployment,
) -> None:
    """Inventory's user reads its own queues, not payment's or shipping's, nor an
    orchestrator queue."""
    ns = deployment.admin.namespace
    connection = await deployment.connect("inventory")
    async with connection:
        assert not await refused_consume(connection, f"{ns}.inventory.commands")
        assert await refused_consume(connection, f"{ns}.payment.commands")
        assert await refused_consume(connection, f"{ns}.shipping.commands")
        assert await refused_consume(connection, f"{ns}.orchestrator.order_fulfilment.replies")
        assert await refused_consume(connection, f"{ns}.inventory.commands.dlq")


async def test_participant_cannot_publish_outcome_events(deployment: Deployment) -> None:
    """A participant cannot announce a saga outcome: payment may not publish to the events
    exchange at all, inventory only its own ``inventory.restocked``."""
    ns = deployment.admin.namespace
    events = f"{ns}.events"
    async with await deployment.connect("payment") as payment:
        assert await refused_publish(payment, events, "order_fulfilment.completed")
        assert await refused_publish(payment, f"{ns}.commands", "inventory.release_stock")
        assert not await refused_publish(payment, f"{ns}.replies", "order_fulfilment")
    async with await deployment.connect("inventory") as inventory:
        assert await refused_publish(inventory, events, "order_fulfilment.completed")
        assert await refused_publish(inventory, events, "order_fulfilment.progressed")
        assert not await refused_publish(inventory, events, "inventory.restocked")


async def test_orchestrator_cannot_read_participant_command_queues(
    deployment: Deployment,
) -> None:
    """The orchestrator's user consumes its start and reply queues only, and publishes
    commands to participants but not start commands."""
    ns = deployment.admin.namespace
    async with await deployment.connect("orchestrator") as connection:
        assert not await refused_consume(connection, f"{ns}.orchestrator.order_fulfilment.starts")
        for participant in ("inventory", "payment", "shipping", "returns"):
            assert await refused_consume(connection, f"{ns}.{participant}.commands")
        assert await refused_consume(connection, f"{ns}.projections.sagas")
        assert await refused_publish(connection, f"{ns}.commands", "orders.place_order")
        assert await refused_publish(connection, f"{ns}.replies", "order_fulfilment")


@pytest.mark.parametrize(
    ("flavour", "policies"),
    [*((f, False) for f in SHIPPING_FLAVOURS), ("aio-pika", True)],
    ids=[*SHIPPING_FLAVOURS, "policies"],
)
async def test_every_service_runs_with_its_own_user(
    settings: Settings, flavour: str, *, policies: bool
) -> None:
    """With the topology applied and SAGA_DECLARE_TOPOLOGY=false, every service connects as
    its own user (shipping in both flavours; retry delays and delivery limit as arguments
    or as policies), and an order saga completes and reaches the read side."""
    applied = settings.with_(topology_policies=policies)
    try:
        async for deployment in deploy(applied):
            await run_every_service(deployment, flavour)
    finally:
        if policies:  # other queue names than the settings fixture deletes
            async with await aio_pika.connect(settings.amqp_url) as connection:
                await applied.topology().delete(await connection.channel())


async def run_every_service(deployment: Deployment, flavour: str) -> None:
    """Start every service as its own user, run one order saga to completion."""
    for_ = deployment.settings_for
    services: list[ServiceHost | StreamService] = [
        OrchestratorService(for_("orchestrator")),
        InventoryService(for_("inventory")),
        PaymentService(for_("payment")),
        shipping_service(for_("shipping"), flavour),
        ReturnsService(for_("returns")),
        ReadSideService(for_("readside")),
    ]
    client = SagaClient(for_("api"), name="api")
    started: list[ServiceHost | StreamService] = []
    try:
        for service in services:
            await service.start()
            started.append(service)
        await client.connect()
        inventory = services[1]
        assert isinstance(inventory, InventoryService)
        await inventory.inventory.set_stock("apple", 10)
        saga_id = new_saga_id()
        command = PlaceOrder(
            order_id=f"order-{saga_id[:8]}",
            customer_id="customer-1",
            lines=(OrderLine(sku="apple", quantity=3),),
            amount_cents=1_500,
            ship_to="1 Main Street, Springfield",
        )
        await client.start(command, saga_id=saga_id)
        state = await client.wait_settled(saga_id, timeout=60)
        assert state.status is Status.COMPLETED, state
        readside = services[5]
        assert isinstance(readside, ReadSideService)
        summary = await eventually(
            lambda: readside.summaries.get(saga_id),
            until=lambda s: s is not None and s.get("status") == "completed",
            what="saga summary completed",
        )
        assert summary is not None
    finally:
        await client.close()
        for service in reversed(started):
            await service.stop()


async def test_cli_check_apply_check(settings: Settings) -> None:
    """``saga topology check`` lists what is missing until ``saga topology apply`` ran."""
    code, out, err = await run_cli(settings, "topology", "check")
    assert code == 1, err
    assert f"missing queue {settings.namespace}.payment.commands\n" in out
    assert "saga topology apply" in err
    code, out, err = await run_cli(settings, "topology", "apply")
    try:
        assert code == 0, err
        assert "set 4 policies" in out
        code, out, err = await run_cli(settings, "topology", "check")
        assert code == 0, err
        assert "complete" in out
        code, out, err = await run_cli(settings, "topology", "users", "--service", "payment")
        assert code == 0, err
        assert f"rabbitmqctl set_permissions -p / {settings.namespace}-payment '^$'" in out
    finally:
        management = management_for(settings.amqp_url)
        for policy in settings.topology().policies():
            await management.delete_policy(policy.name)


async def test_service_process_exits_naming_the_missing_topology(settings: Settings) -> None:
    """The service process prints which queue or exchange is missing and how to create it,
    and exits 1."""
    env = {**os.environ, **settings.with_(declare_topology=False).to_env()}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "participants.payment",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1
    text = err.decode()
    assert f"missing: exchange {settings.namespace}.commands" in text
    assert "`saga topology apply`" in text


async def test_service_refuses_to_start_when_topology_is_missing(settings: Settings) -> None:
    """Without ``saga topology apply`` a non-declaring service names what is missing and
    the command that creates it."""
    service = PaymentService(settings.with_(declare_topology=False))
    with pytest.raises(TopologyMissing) as refused:
        await service.start()
    await service.stop()
    message = str(refused.value)
    assert f"exchange {settings.namespace}.commands" in message
    assert "saga topology apply" in message


async def test_retry_delay_comes_from_the_policy_and_changes_in_place(
    settings: Settings,
) -> None:
    """With SAGA_TOPOLOGY_POLICIES=true the retry tiers carry no TTL argument: the policy
    sets it, and a new delay is applied to the existing queues by applying again."""
    tunable = settings.with_(topology_policies=True, retry_delays=(0.2, 0.5, 1.0))
    topology = tunable.topology()
    work = topology.queue("payment.commands")
    management = management_for(settings.amqp_url)
    try:
        await apply_topology(topology, settings.amqp_url)
        await apply_policies(topology, management)
        slower = tunable.with_(retry_delays=(0.3, 0.5, 1.0)).topology()
        assert slower.queue("payment.commands").retry_queue(0) == work.retry_queue(0)
        await apply_topology(slower, settings.amqp_url)  # same queues: no conflict
        await apply_policies(slower, management)
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.default_exchange.publish(
                aio_pika.Message(b"retry me"), routing_key=work.retry_queue(0)
            )
            queue = await channel.declare_queue(work.name, passive=True)
            back = await eventually(
                lambda: queue.get(fail=False), until=lambda m: m is not None, what="expired back"
            )
            assert back is not None
            assert back.body == b"retry me"
            await back.ack()
        policies = {p["name"]: p for p in await management.policies()}
        assert policies[f"{settings.namespace}.retry.1"]["definition"] == {"message-ttl": 300}
    finally:
        for policy in topology.policies():
            await management.delete_policy(policy.name)
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            await topology.delete(await connection.channel())


async def test_api_user_replays_dead_letters_but_reads_no_work_queue(
    deployment: Deployment,
) -> None:
    """The API's user lists and replays dead letters (read on the dead-letter queues, its
    exclusive lock queue, publish to the default exchange) and cannot consume work."""
    ns = deployment.admin.namespace
    work = f"{ns}.payment.commands"
    admin = await aio_pika.connect(deployment.admin.amqp_url)
    async with admin:
        channel = await admin.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(b"parked", message_id="parked-1"), routing_key=f"{work}.dlq"
        )
        client = SagaClient(deployment.settings_for("api"), name="api")
        await client.bus.connect()
        try:
            depths = {q.name: q.messages for q in await list_dead_letters(client.bus)}
            assert depths[f"{work}.dlq"] == 1
            report = await replay(client.bus, f"{work}.dlq", selector=EVERYTHING)
            assert report.count("done") == 1, report
            assert await refused_consume(client.bus.connection, work)
        finally:
            await client.bus.close()
        queue = await channel.declare_queue(work, passive=True)
        back = await eventually(
            lambda: queue.get(fail=False), until=lambda m: m is not None, what="replayed"
        )
        assert back is not None
        assert back.body == b"parked"
        await back.ack()
