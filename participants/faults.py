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
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Protocol

import aio_pika
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pymongo.errors import PyMongoError

from contracts import (
    AuthorizePayment,
    Message,
    PaymentDeclined,
    ReserveStock,
    ScheduleShipment,
    ShipmentFailed,
    StockReservationFailed,
    registered_types,
)
from orchestrator.errors import StoreUnavailable, TransientError

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel
    from pymongo.asynchronous.database import AsyncDatabase

    from orchestrator.messaging.bus import Bus
    from orchestrator.messaging.envelope import Envelope
    from orchestrator.messaging.topology import Topology

__all__ = [
    "ACK_TYPE",
    "NOTICE_TYPE",
    "NO_FAULTS",
    "FaultAck",
    "FaultAction",
    "FaultHook",
    "FaultInjector",
    "FaultNotice",
    "FaultRule",
    "InjectedFault",
    "MongoFaultRules",
    "refusal",
]

log = structlog.get_logger("faults")
Doc = dict[str, Any]

FaultAction = Literal["decline", "raise", "delay", "drop", "duplicate", "crash"]
NOTICE_TYPE = "faults.reload.v1"
ACK_TYPE = "faults.reloaded.v1"


class InjectedFault(TransientError):
    """A transient failure injected by a ``raise`` rule (retried like any other)."""


class FaultRule(BaseModel):
    """One fault rule: which commands it hits and what happens to them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex[:12],
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Unique id; the stored document's _id",
    )
    participant: str = Field(description="Service name (inventory, payment, shipping) or '*'")
    action: FaultAction
    command: str | None = Field(
        default=None,
        description="Command type as 'payment.authorize_payment.v1', 'payment.authorize_payment' "
        "or 'authorize_payment'; None hits every command of the participant",
    )
    saga_id: str | None = Field(default=None, description="Only this saga's commands")
    count: int | None = Field(
        default=None, ge=1, description="Fire this many times in all (every instance), then stop"
    )
    delay_seconds: float = Field(default=0.0, ge=0, le=3600, description="For delay")
    copies: int = Field(default=2, ge=2, le=100, description="For duplicate: sends of the reply")
    reason: str = Field(default="injected fault", max_length=500, description="decline / raise")
    exit_code: int = Field(default=70, ge=1, le=255, description="For crash")
    expires_at: datetime | None = Field(default=None, description="Ignored after this time")

    @model_validator(mode="after")
    def _consistent(self) -> FaultRule:
        if self.action == "delay" and self.delay_seconds <= 0:
            raise ValueError("a delay rule needs delay_seconds > 0")
        known = set().union(*(_command_names(t) for t in registered_types()))
        if self.command is not None and self.command not in known:
            raise ValueError(f"no message type is called {self.command!r}")
        return self

    def matches(self, service: str, command: Message, saga_id: str, *, now: datetime) -> bool:
        """Whether this rule hits ``command`` of ``saga_id`` arriving at ``service``."""
        if self.participant not in ("*", service):
            return False
        if self.command is not None and self.command not in _command_names(command.TYPE):
            return False
        if self.saga_id is not None and self.saga_id != saga_id:
            return False
        if self.expires_at is not None and self.expires_at <= now:
            return False
        # A refusal exists only for steps that can be refused; elsewhere decline is a no-op.
        return self.action != "decline" or type(command) in _REFUSALS


def _command_names(type_name: str) -> set[str]:
    """``payment.authorize_payment.v1`` -> the three spellings a rule may use."""
    unversioned = type_name.rsplit(".", 1)[0]
    return {type_name, unversioned, unversioned.split(".", 1)[-1]}


_REFUSALS: dict[type[Message], Callable[[Any, str], Message]] = {
    ReserveStock: lambda c, r: StockReservationFailed(order_id=c.order_id, reason=r),
    AuthorizePayment: lambda c, r: PaymentDeclined(order_id=c.order_id, reason=r),
    ScheduleShipment: lambda c, r: ShipmentFailed(order_id=c.order_id, reason=r),
}


def refusal(command: Message, reason: str) -> Message:
    """The business refusal replying to ``command`` (decline rules only match these)."""
    try:
        return _REFUSALS[type(command)](command, reason)
    except KeyError:
        raise ValueError(f"{command.TYPE} has no business refusal") from None


class FaultNotice(BaseModel):
    """Control message: reload the fault rules of ``namespace`` from the store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str
    request_id: str


class FaultAck(BaseModel):
    """Answer to a notice: this instance now obeys these rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    service: str
    instance: str
    rules: tuple[str, ...]


class MongoFaultRules:
    """``fault_rules``: per rule the rule's fields, ``_id`` (its id), ``active``, ``fired``
    (firings so far) and ``remaining`` (left of its count; None without a count)."""

    def __init__(self, *, database: AsyncDatabase[Doc]) -> None:
        self.collection = database["fault_rules"]

    async def add(self, rules: Iterable[FaultRule]) -> None:
        """Store rules as active."""
        docs = [
            {
                "_id": r.rule_id,
                **r.model_dump(mode="python"),
                "active": True,
                "fired": 0,
                "remaining": r.count,
                "seq": time.time_ns() + i,  # rules are tried in the order they were added
            }
            for i, r in enumerate(rules)
        ]
        if docs:
            await _store(self.collection.insert_many(docs))

    async def deactivate(self, rule_ids: Iterable[str] | None = None) -> int:
        """Deactivate some rules, or all; their counters stay. Returns how many."""
        query: Doc = {"active": True}
        if rule_ids is not None:
            query["_id"] = {"$in": list(rule_ids)}
        result = await _store(self.collection.update_many(query, {"$set": {"active": False}}))
        return int(result.modified_count)

    async def active(self, service: str | None = None) -> list[FaultRule]:
        """Active rules with firings left (for ``service`` if given), oldest first."""
        docs = await _store(self.collection.find({"active": True}).to_list(None))
        docs.sort(key=lambda d: (d.get("seq", 0), d["_id"]))
        rules = [_rule(d) for d in docs if d.get("remaining") is None or d["remaining"] > 0]
        return [r for r in rules if service is None or r.participant in ("*", service)]

    async def claim(self, rule: FaultRule) -> bool:
        """Count one firing; False if the rule is gone, inactive or used up."""
        query: Doc = {"_id": rule.rule_id, "active": True}
        change: Doc = {"$inc": {"fired": 1}}
        if rule.count is not None:
            query["remaining"] = {"$gt": 0}
            change["$inc"]["remaining"] = -1
        result = await _store(self.collection.update_one(query, change))
        return bool(result.modified_count == 1)

    async def fired(self) -> list[tuple[FaultRule, int]]:
        """Every rule ever stored (active or not) with its firings."""
        docs = await _store(self.collection.find({}).to_list(None))
        return [(_rule(d), int(d.get("fired", 0))) for d in docs]


def _rule(doc: Doc) -> FaultRule:
    fields = {k: v for k, v in doc.items() if k in FaultRule.model_fields}
    return FaultRule.model_validate(fields)


async def _store(op: Any) -> Any:
    try:
        return await op
    except PyMongoError as e:
        raise StoreUnavailable(f"fault rules: {e}") from e


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
        refresh: float = 10.0,
        exit: Callable[[int], NoReturn] = os._exit,
    ) -> None:
        self.service = service
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
            if not rule.matches(self.service, envelope.message, envelope.correlation_id, now=now):
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
