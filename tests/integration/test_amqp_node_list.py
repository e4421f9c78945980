"""A list of broker nodes on the default broker: a dead node in the list is skipped, and
when no node answers the error names every node without its password."""

from __future__ import annotations

import pytest
from yarl import URL

from orchestrator.errors import BrokerUnavailable
from orchestrator.messaging.bus import Bus
from orchestrator.settings import Settings
from tests.integration.rabbit_nodes import free_port

pytestmark = pytest.mark.integration


async def test_a_dead_node_first_in_the_list_is_skipped(settings: Settings) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    listed = settings.with_(amqp_url=f"{dead},{settings.amqp_url}")
    bus = Bus.of(listed, name=f"{settings.namespace}.node-list")
    await bus.connect(timeout=10)
    try:
        transport = bus.connection.transport
        assert transport is not None
        assert transport.connection.url.port == URL(settings.amqp_url).port
        assert transport.connection.url.port != URL(dead).port
    finally:
        await bus.close()


async def test_no_node_answering_names_every_node_without_passwords(settings: Settings) -> None:
    ports = (free_port(), free_port())
    urls = ",".join(f"amqp://svc:s3cret@127.0.0.1:{p}/" for p in ports)
    bus = Bus.of(settings.with_(amqp_url=urls), name=f"{settings.namespace}.nowhere")
    with pytest.raises(BrokerUnavailable) as error:
        await bus.connect(timeout=1)
    message = str(error.value)
    for port in ports:
        assert f"amqp://svc:***@127.0.0.1:{port}/" in message
    assert "s3cret" not in message
