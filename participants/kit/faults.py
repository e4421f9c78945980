"""Fault injection that participants obey at run time: for tests and the failure harness.

Off unless ``faults_enabled`` (``SAGA_FAULTS_ENABLED=true``) is set. Off, a participant
holds :data:`NO_FAULTS`: it reads no rules, subscribes to nothing and changes no message,
so a rule stored or published by mistake has no effect on a deployment that did not opt in.

Where rules live: the ``fault_rules`` collection of the deployment's own database is the
one source of truth. A publisher (the harness's ``FaultsClient``) stores rules there, then
publishes a reload notice on ``<namespace>.control`` (routing key ``faults.all`` or
``faults.<participant>``). Each participant instance with faults enabled listens through
an exclusive, auto-delete queue; it loads its rules at start, on each notice and every
``refresh`` seconds (a backstop for a notice missed while the broker was away), and
answers a notice that has a ``reply_to`` once the new rules are in force. Rules survive
restarts because they are in the store.

The first matching rule applies, claimed by one atomic update of its document before the
handler runs: ``fired`` is incremented and, for a rule with a ``count``, ``remaining``
decremented while some is left. So a count holds across instances and restarts (a crash
rule with ``count=1`` crashes one process, not the one started after it), and a rule
deactivated in the store stops at once, even before the notice arrives. Actions:

* ``decline``: the handler is not run; the step's business refusal is the reply (only
  commands that have one match: reserve stock, authorize payment, schedule shipment);
* ``raise``: :class:`InjectedFault`, a transient error: retried, then dead-lettered;
* ``delay``: the handler runs, the reply is sent ``delay_seconds`` later;
* ``drop``: the handler runs, no reply is sent, the command is acked;
* ``duplicate``: the handler runs, the reply is sent ``copies`` times;
* ``crash``: the handler runs (its effect is stored), then the process exits at once
  with ``exit_code`` (``os._exit``): no reply, no ack, so the broker redelivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import aio_pika
import structlog
from pydantic import ValidationError

from orchestrator.errors import TransientError
from orchestrator.faults import ACK_TYPE, FaultAck, FaultNotice, FaultRule, MongoFaultRules

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel
    from pymongo.asynchronous.database import AsyncDatabase

    from contracts import Message
    from orchestrator.messaging.bus import Bus
    from orchestrator.messaging.envelope import Envelope
    from orchestrator.messaging.topology import Topology

__all__ = ["NO_FAULTS", "FaultHook", "FaultInjector", "InjectedFault", "Refusable"]

log = structlog.get_logger("faults")
Doc = dict[str, Any]

Refusable = Callable[["Message"], bool]
"""Whether a command has a business refusal (so a decline rule can hit it)."""


class InjectedFault(TransientError):
    """A transient failure injected by a ``raise`` rule (retried like any other)."""


class FaultHook(Protocol):
    """What a participant asks before handling a command."""

    async def start(self, *, database: AsyncDatabase[Doc], bus: Bus, topology: Topology) -> None:
        """Load rules and listen for changes."""

    async def stop(self) -> None:
        """Stop listening."""

    async def match(self, envelope: Envelope) -> FaultRule | None:
        """The rule that applies to this delivery (already counted), if any."""

    def crash(self, rule: FaultRule) -> NoReturn:
        """Exit the process at once, as ``rule`` says."""


class _NoFaults:
    """Fault injection disabled: nothing is read, declared or changed."""

    enabled = False

    async def start(self, *, database: AsyncDatabase[Doc], bus: Bus, topology: Topology) -> None:
        """Nothing to start."""
        del database, bus, topology

    async def stop(self) -> None:
        """Nothing to stop."""

    async def match(self, envelope: Envelope) -> FaultRule | None:
        """Never a fault."""
        del envelope
        return None

    def crash(self, rule: FaultRule) -> NoReturn:
        """Unreachable: no rule ever matches."""
        raise RuntimeError(f"fault injection is disabled; rule {rule.rule_id} cannot crash")


NO_FAULTS: FaultHook = _NoFaults()
"""The hook of every participant unless ``faults_enabled`` is set."""


class FaultInjector:
    """Fault injection enabled: rules from the store, reloads through the control exchange."""

    enabled = True

    def __init__(
        self,
        *,
        service: str,
        instance: str,
        namespace: str,
        refusable: Refusable = lambda _command: False,
        refresh: float = 10.0,
        exit: Callable[[int], NoReturn] = os._exit,
    ) -> None:
        self.service = service
        self.refusable = refusable
        self.instance = instance
        self.namespace = namespace
        self.refresh = refresh
        self.rules: tuple[FaultRule, ...] = ()
        self.fired: Counter[str] = Counter()
        """Firings by action in this process."""
        self._exit = exit
        self._loaded = asyncio.Event()
        self._store: MongoFaultRules | None = None
        self._bus: Bus | None = None
        self._channel: AbstractRobustChannel | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def start(self, *, database: AsyncDatabase[Doc], bus: Bus, topology: Topology) -> None:
        """Load the rules, then subscribe to reload notices."""
        log.warning(
            "fault_injection_enabled",
            service=self.service,
            instance=self.instance,
            control_exchange=topology.control_exchange,
        )
        self._store = MongoFaultRules(database=database)
        self._bus = bus
        await self.reload()
        channel = await bus.connection.channel()
        exchange = await channel.get_exchange(topology.control_exchange)
        queue = await channel.declare_queue(
            f"{self.instance}.control.{uuid.uuid4().hex[:6]}", exclusive=True, auto_delete=True
        )
        for key in ("faults.all", f"faults.{self.service}"):
            await queue.bind(exchange, routing_key=key)
        await queue.consume(self._on_notice, no_ack=True)
        self._channel = channel
        self._refresher = asyncio.create_task(self._refresh(), name=f"{self.service}:faults")

    async def stop(self) -> None:
        """Stop listening (the queue goes away with it)."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):  # the connection may already be gone
                await self._channel.close()
        self._channel = None

    async def reload(self) -> tuple[FaultRule, ...]:
        """Read this service's active rules from the store."""
        assert self._store is not None, "start() first"
        self.rules = tuple(await self._store.active(self.service))
        self._loaded.set()
        log.info("fault_rules_loaded", rules=[r.rule_id for r in self.rules])
        return self.rules

    async def match(self, envelope: Envelope) -> FaultRule | None:
        """The first rule that hits this command and could be claimed in the store."""
        await self._loaded.wait()
        assert self._store is not None
        now = datetime.now(UTC)
        for rule in self.rules:
            if not rule.matches(
                self.service,
                envelope.message,
                envelope.correlation_id,
                now=now,
                refusable=self.refusable(envelope.message),
            ):
                continue
            if not await self._store.claim(rule):
                continue  # used up or removed since the last reload
            self.fired[rule.action] += 1
            log.warning(
                "fault_injected",
                action=rule.action,
                rule_id=rule.rule_id,
                command=envelope.message.TYPE,
                attempt=envelope.attempt,
            )
            return rule
        return None

    def crash(self, rule: FaultRule) -> NoReturn:
        """Exit the process now: nothing is acked, flushed or closed."""
        log.warning("fault_crashing_process", rule_id=rule.rule_id, exit_code=rule.exit_code)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        self._exit(rule.exit_code)

    async def _on_notice(self, raw: AbstractIncomingMessage) -> None:
        try:
            notice = FaultNotice.model_validate_json(raw.body)
        except ValidationError as e:
            log.warning("fault_notice_malformed", error=str(e)[:300])
            return
        if notice.namespace != self.namespace:
            log.warning("fault_notice_for_another_namespace", namespace=notice.namespace)
            return
        try:
            rules = await self.reload()
        except TransientError as e:
            log.warning("fault_rules_not_reloaded", error=str(e))
            return
        if raw.reply_to and self._bus is not None:
            await self._acknowledge(notice, raw.reply_to, rules)

    async def _acknowledge(
        self, notice: FaultNotice, reply_to: str, rules: tuple[FaultRule, ...]
    ) -> None:
        assert self._bus is not None
        ack = FaultAck(
            request_id=notice.request_id,
            service=self.service,
            instance=self.instance,
            rules=tuple(r.rule_id for r in rules),
        )
        message = aio_pika.Message(
            ack.model_dump_json().encode(),
            content_type="application/json",
            type=ACK_TYPE,
            correlation_id=notice.request_id,
        )
        try:
            await self._bus.publish(message, exchange="", routing_key=reply_to, mandatory=False)
        except TransientError as e:  # the publisher waits, then reports who did not answer
            log.warning("fault_ack_not_sent", error=str(e))

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            try:
                await self.reload()
            except TransientError as e:
                log.warning("fault_rules_not_reloaded", error=str(e))
