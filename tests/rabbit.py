"""Raw broker access for tests: inspect and publish without the project's code."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractIncomingMessage


async def take_all(amqp_url: str, queue: str) -> list[AbstractIncomingMessage]:
    """Remove and return every message in ``queue`` (basic.get until empty)."""
    taken: list[AbstractIncomingMessage] = []
    connection = await aio_pika.connect(
        amqp_url, client_properties={"connection_name": "test.inspect"}
    )
    async with connection:
        channel = await connection.channel()
        q = await channel.get_queue(queue, ensure=True)
        while (message := await q.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
    return taken


async def depth(amqp_url: str, queue: str) -> int:
    """Messages ready in ``queue``."""
    connection = await aio_pika.connect(
        amqp_url, client_properties={"connection_name": "test.inspect"}
    )
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, passive=True)
        return q.declaration_result.message_count or 0
