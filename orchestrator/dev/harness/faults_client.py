"""Installing fault rules from outside the participants: the harness's side of
``participants.kit.faults``.

A rule is stored in the deployment's ``fault_rules`` collection first (the source of
truth, so it survives restarts), then a reload notice goes out on the control exchange.
Each participant instance with faults enabled reloads and answers; :meth:`install` waits
for as many answers as the caller says are listening, so a rule is in force everywhere
before the caller goes on. Participants without faults enabled do not listen: nobody
answers, and the call says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import aio_pika
from pydantic import ValidationError

from orchestrator.errors import OrchestratorError
from orchestrator.faults import NOTICE_TYPE, FaultAck, FaultNotice, FaultRule, MongoFaultRules

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage
    from pymongo.asynchronous.database import AsyncDatabase

    from orchestrator.messaging.bus import Bus

__all__ = ["FaultsClient", "FaultsNotApplied"]


class FaultsNotApplied(OrchestratorError):
    """Fewer participant instances confirmed the rules than were expected."""


class FaultsClient:
    """Stores fault rules and tells running participants to obey them."""

    def __init__(self, *, bus: Bus, database: AsyncDatabase[dict[str, Any]]) -> None:
        self.bus = bus
        self.store = MongoFaultRules(database=database)
        self.namespace = bus.topology.namespace

    async def install(
        self, *rules: FaultRule, listeners: int, timeout: float = 15.0
    ) -> list[FaultAck]:
        """Store ``rules``, then have ``listeners`` participant instances reload them."""
        participants = ("*", *self.bus.topology.participants)
        for rule in rules:
            if rule.participant not in participants:
                raise ValueError(
                    f"rule {rule.rule_id}: no participant {rule.participant!r}; "
                    f"one of {', '.join(participants)}"
                )
        await self.store.add(rules)
        return await self.notify(listeners=listeners, timeout=timeout)

    async def clear(self, *, listeners: int, timeout: float = 15.0) -> list[FaultAck]:
        """Deactivate every rule (their counters stay), then have participants reload."""
        await self.store.deactivate()
        return await self.notify(listeners=listeners, timeout=timeout)

    async def fired(self) -> Counter[str]:
        """Firings so far, by action, over every rule ever installed here."""
        counts: Counter[str] = Counter()
        for rule, fired in await self.store.fired():
            counts[rule.action] += fired
        return counts

    async def notify(self, *, listeners: int, timeout: float = 15.0) -> list[FaultAck]:
        """Publish a reload notice and wait for ``listeners`` answers (none if 0)."""
        notice = FaultNotice(namespace=self.namespace, request_id=uuid.uuid4().hex)
        channel = await self.bus.connection.channel()
        try:
            replies = await channel.declare_queue(exclusive=True, auto_delete=True)
            acks: asyncio.Queue[FaultAck] = asyncio.Queue()

            async def on_ack(raw: AbstractIncomingMessage) -> None:
                with contextlib.suppress(ValidationError):
                    ack = FaultAck.model_validate_json(raw.body)
                    if ack.request_id == notice.request_id:
                        acks.put_nowait(ack)

            await replies.consume(on_ack, no_ack=True)
            message = aio_pika.Message(
                notice.model_dump_json().encode(),
                content_type="application/json",
                type=NOTICE_TYPE,
                reply_to=replies.name,
                correlation_id=notice.request_id,
            )
            # Not mandatory: with no participant listening the notice has nowhere to go,
            # which is reported below as missing answers.
            await self.bus.publish(
                message,
                exchange=self.bus.topology.control_exchange,
                routing_key="faults.all",
                mandatory=False,
            )
            return await _collect(acks, listeners, timeout)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()


async def _collect(acks: asyncio.Queue[FaultAck], expected: int, timeout: float) -> list[FaultAck]:
    got: list[FaultAck] = []
    try:
        async with asyncio.timeout(timeout):
            while len(got) < expected:
                got.append(await acks.get())
    except TimeoutError:
        who = ", ".join(sorted(a.instance for a in got)) or "none"
        raise FaultsNotApplied(
            f"{len(got)} of {expected} participant instances confirmed the fault rules within "
            f"{timeout:g}s (answered: {who}); are they running with SAGA_FAULTS_ENABLED=true?"
        ) from None
    return got
