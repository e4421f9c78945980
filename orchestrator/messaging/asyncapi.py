"""An AsyncAPI 3.0 document of a deployment, generated from what it runs.

Nothing here is written by hand: the channels come from the topology (exchanges, work
queues, their bindings, retry tiers and dead-letter queues), the messages from the
contract registry (each model's JSON schema), and who sends and receives what from the
registered saga definitions (start, each step's command, replies and compensation, the
outcome and progress events). A queue's messages are the routed messages its bindings
match, so a pack's event queue documents itself.

The document describes the whole deployment, not one application: every operation says
which service performs it (``x-service`` and a ``service:<name>`` tag), and every
message which saga and step use it and in which role (``x-sagas``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic.json_schema import models_json_schema

from contracts import (
    Message,
    SagaCompensated,
    SagaCompleted,
    SagaFailed,
    SagaProgressBatch,
    SagaProgressed,
)
from orchestrator.messaging.connection import split_urls
from orchestrator.messaging.envelope import ATTEMPT, CAUSATION_ID, HANDLER_ATTEMPTS, SAGA_VERSION
from orchestrator.saga.decide import outcome_key
from orchestrator.saga.definition import routing_key

if TYPE_CHECKING:
    from orchestrator.messaging.topology import Topology, WorkQueue
    from orchestrator.saga.definition import Step
    from orchestrator.saga.registry import SagaRegistry
    from orchestrator.settings import Settings

__all__ = ["asyncapi_document", "deployment_asyncapi"]

AMQP_BINDING = "0.3.0"
OUTCOME_TYPES: dict[str, type[Message]] = {
    "completed": SagaCompleted,
    "failed": SagaFailed,
    "compensated": SagaCompensated,
}


@dataclass(frozen=True)
class Route:
    """One kind of message published to one exchange under one routing key."""

    exchange: str
    key: str
    message: type[Message]
    sender: str
    saga: str | None = None
    version: int | None = None
    step: str | None = None
    role: str = ""


def saga_routes(topology: Topology, registry: SagaRegistry) -> list[Route]:
    """Every message the registered sagas send or are sent, with who sends it."""
    commands, replies = topology.commands_exchange, topology.replies_exchange
    events = topology.events_exchange
    routes: list[Route] = []
    for d in registry:

        def add(exchange: str, key: str, kind: type[Message], sender: str, **more: Any) -> None:
            routes.append(Route(exchange, key, kind, sender, d.name, d.version, **more))  # noqa: B023

        add(commands, routing_key(d.start), d.start, "client", role="start")
        for s in d.steps:
            for kind, role in _step_messages(s):
                if role in ("command", "compensation"):
                    add(commands, routing_key(kind), kind, "orchestrator", step=s.name, role=role)
                else:
                    reply_key = topology.reply_key(d.name)
                    add(replies, reply_key, kind, s.participant, step=s.name, role=role)
        for outcome, kind in OUTCOME_TYPES.items():
            add(events, outcome_key(d.name, outcome), kind, "orchestrator", role="outcome")
        progressed = outcome_key(d.name, "progressed")
        add(events, progressed, SagaProgressed, "orchestrator", role="progress")
        add(events, progressed, SagaProgressBatch, "orchestrator", role="progress")
    return routes


def _step_messages(step: Step) -> list[tuple[type[Message], str]]:
    found: list[tuple[type[Message], str]] = [
        (step.command_type, "command"),
        (step.success, "success"),
    ]
    if step.failure is not None:  # retriable steps may have none
        found.append((step.failure, "failure"))
    if step.compensation_type is not None:
        found.append((step.compensation_type, "compensation"))
    if step.compensated is not None:
        found.append((step.compensated, "compensated"))
    return found


def other_routes(
    topology: Topology, types: Mapping[str, type[Message]], known: Iterable[Route]
) -> list[Route]:
    """Registered contracts no saga uses, routed under their type name without the
    version: an event if an event queue binds that key (``inventory.restocked``), else a
    command if a command queue does (``inventory.restock_stock``). Others are documented
    as messages only."""
    used = {r.message for r in known}
    found = []
    for cls in types.values():
        key = routing_key(cls)
        if cls in used:
            continue
        if _bound(topology, topology.events_exchange, key):
            sender = key.split(".", 1)[0]
            found.append(Route(topology.events_exchange, key, cls, sender, role="event"))
        elif _bound(topology, topology.commands_exchange, key):
            found.append(Route(topology.commands_exchange, key, cls, "client", role="command"))
    return found


def _bound(topology: Topology, exchange: str, key: str) -> bool:
    return any(
        q.exchange == exchange and any(matches(b, key) for b in q.bindings)
        for q in topology.work_queues
    )


def matches(binding: str, key: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` zero or more words."""
    return _match(binding.split("."), key.split("."))


def _match(binding: list[str], key: list[str]) -> bool:
    if not binding:
        return not key
    if binding[0] == "#":
        return any(_match(binding[1:], key[i:]) for i in range(len(key) + 1))
    if not key:
        return False
    return binding[0] in ("*", key[0]) and _match(binding[1:], key[1:])


def _id(text: str) -> str:
    """A component, channel or operation key: dots become underscores (the names and
    addresses inside keep their dots)."""
    return text.replace(".", "_")


def _channel_id(exchange_role: str, key: str) -> str:
    return _id(f"{exchange_role}.{key}")


def _queue_id(topology: Topology, q: WorkQueue) -> str:
    return _id(f"queue.{q.name.removeprefix(f'{topology.namespace}.')}")


def _routing_channels(topology: Topology, routes: list[Route]) -> dict[str, Any]:
    kinds = {
        topology.commands_exchange: ("commands", "topic"),
        topology.replies_exchange: ("replies", "direct"),
        topology.events_exchange: ("events", "topic"),
    }
    channels: dict[str, Any] = {}
    for r in routes:
        role, kind = kinds[r.exchange]
        channel = channels.setdefault(
            _channel_id(role, r.key),
            {
                "address": r.key,
                "title": f"{r.exchange} / {r.key}",
                "messages": {},
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {
                            "name": r.exchange,
                            "type": kind,
                            "durable": True,
                            "autoDelete": False,
                            "vhost": "/",
                        },
                        "bindingVersion": AMQP_BINDING,
                    }
                },
            },
        )
        message = _id(r.message.TYPE)
        channel["messages"][message] = {"$ref": f"#/components/messages/{message}"}
    return channels


def _queue_channel(topology: Topology, q: WorkQueue, routes: list[Route]) -> dict[str, Any]:
    received = {
        _id(r.message.TYPE)
        for r in routes
        if r.exchange == q.exchange and any(matches(b, r.key) for b in q.bindings)
    }
    return {
        "address": q.name,
        "title": q.name,
        "description": q.purpose,
        "messages": {t: {"$ref": f"#/components/messages/{t}"} for t in sorted(received)},
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {
                    "name": q.name,
                    "durable": True,
                    "exclusive": False,
                    "autoDelete": False,
                    "vhost": "/",
                },
                "bindingVersion": AMQP_BINDING,
            }
        },
        "x-bindings": [{"exchange": q.exchange, "routingKey": b} for b in q.bindings],
        "x-arguments": topology.work_queue_arguments(q),
        "x-retry-queues": [
            {"name": q.retry_queue(i), "delaySeconds": d} for i, d in enumerate(q.retry_delays)
        ],
        "x-dead-letter-queue": q.dlq,
        "x-max-attempts": q.max_attempts,
    }


def _consumer(topology: Topology, q: WorkQueue) -> str:
    suffix = q.name.removeprefix(f"{topology.namespace}.")
    first = suffix.split(".", 1)[0]
    if first == "orchestrator" or first in topology.participants:
        return first
    return "readside"


def _operations(topology: Topology, routes: list[Route], queues: dict[str, Any]) -> dict[str, Any]:
    roles = {
        topology.commands_exchange: "commands",
        topology.replies_exchange: "replies",
        topology.events_exchange: "events",
    }
    ops: dict[str, Any] = {}
    for r in routes:
        channel = _channel_id(roles[r.exchange], r.key)
        op = ops.setdefault(
            _id(f"{r.sender}.send.{channel}"),
            {
                "action": "send",
                "channel": {"$ref": f"#/channels/{channel}"},
                "title": f"{r.sender} publishes to {r.exchange} with key {r.key}",
                "messages": [],
                "tags": [{"name": f"service:{r.sender}"}],
                "bindings": {
                    "amqp": {"deliveryMode": 2, "mandatory": True, "bindingVersion": AMQP_BINDING}
                },
                "x-service": r.sender,
            },
        )
        ref = {"$ref": f"#/channels/{channel}/messages/{_id(r.message.TYPE)}"}
        if ref not in op["messages"]:
            op["messages"].append(ref)
        if r.saga and {"name": f"saga:{r.saga}"} not in op["tags"]:
            op["tags"].append({"name": f"saga:{r.saga}"})
    for q in topology.work_queues:
        channel_id = _queue_id(topology, q)
        consumer = _consumer(topology, q)
        ops[_id(f"{consumer}.receive.{channel_id}")] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "title": f"{consumer} consumes {q.name}",
            "description": f"{q.purpose}. Acked after the effect is stored; a failure goes "
            f"to the retry tiers, then to {q.dlq} with the reason in x-error-* headers.",
            "messages": [
                {"$ref": f"#/channels/{channel_id}/messages/{t}"}
                for t in queues[channel_id]["messages"]
            ],
            "tags": [{"name": f"service:{consumer}"}],
            "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING}},
            "x-service": consumer,
        }
    return ops


def _messages(
    types: Mapping[str, type[Message]], routes: list[Route]
) -> tuple[dict[str, Any], dict[str, Any]]:
    classes = sorted(types.values(), key=lambda c: c.TYPE)
    refs, defs = models_json_schema(
        [(c, "validation") for c in classes], ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    usage: dict[str, list[dict[str, Any]]] = {}
    for r in routes:
        if r.saga is None:
            continue
        entry = {"saga": r.saga, "version": r.version, "role": r.role, "sender": r.sender}
        entry |= {"step": r.step} if r.step else {}
        if entry not in usage.setdefault(r.message.TYPE, []):
            usage[r.message.TYPE].append(entry)
    messages = {}
    for c in classes:
        headers: dict[str, Any] = {
            CAUSATION_ID: {"type": "string", "description": "id of the message that caused it"}
        }
        if any(u["role"] in ("success", "failure", "compensated") for u in usage.get(c.TYPE, [])):
            headers[HANDLER_ATTEMPTS] = {"type": "integer", "description": "attempts it took"}
        if any(u["role"] == "start" for u in usage.get(c.TYPE, [])):
            headers[SAGA_VERSION] = {"type": "integer", "description": "definition version"}
        headers[ATTEMPT] = {"type": "integer", "description": "delivery attempt (retry tiers)"}
        messages[_id(c.TYPE)] = {
            "name": c.TYPE,
            "title": c.__name__,
            "summary": (c.__doc__ or c.TYPE).strip().splitlines()[0],
            "contentType": "application/json",
            "payload": refs[(c, "validation")],
            "headers": {"type": "object", "properties": headers},
            "correlationId": {
                "location": "$message.header#/correlation_id",
                "description": "the AMQP correlation_id property: the saga id",
            },
            "bindings": {"amqp": {"messageType": c.TYPE, "bindingVersion": AMQP_BINDING}},
            "x-sagas": usage.get(c.TYPE, []),
        }
    return messages, schemas


def asyncapi_document(
    *,
    topology: Topology,
    registry: SagaRegistry,
    types: Mapping[str, type[Message]],
    amqp_url: str,
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the deployment ``topology`` and ``registry`` make."""
    routes = saga_routes(topology, registry)
    routes += other_routes(topology, types, routes)
    channels = _routing_channels(topology, routes)
    for q in topology.work_queues:
        channels[_queue_id(topology, q)] = _queue_channel(topology, q, routes)
    messages, schemas = _messages(types, routes)
    sagas = ", ".join(f"{d.name} v{d.version}" for d in registry)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": f"Saga orchestrator ({topology.namespace})",
            "version": _version(),
            "description": f"Every contract and channel of namespace {topology.namespace!r}, "
            f"generated from its topology and registered sagas ({sagas}).",
        },
        "defaultContentType": "application/json",
        "servers": _servers(amqp_url),
        "channels": channels,
        "operations": _operations(topology, routes, channels),
        "components": {"messages": messages, "schemas": schemas},
    }


def deployment_asyncapi(settings: Settings, registry: SagaRegistry | None = None) -> dict[str, Any]:
    """The document of the deployment ``settings`` describe (its packs are loaded first,
    so their contracts are registered)."""
    from contracts import registered_types  # noqa: PLC0415 - after the packs registered theirs

    registry = registry or settings.registry()
    return asyncapi_document(
        topology=settings.topology(),
        registry=registry,
        types=registered_types(),
        amqp_url=settings.amqp_url,
    )


def _servers(amqp_url: str) -> dict[str, Any]:
    """One server per broker node of ``AMQP_URL`` (``rabbitmq``, ``rabbitmq-2``, ...)."""
    servers: dict[str, Any] = {}
    for i, node in enumerate(split_urls(amqp_url)):
        url = urlsplit(node)
        tls = url.scheme == "amqps"
        servers["rabbitmq" if i == 0 else f"rabbitmq-{i + 1}"] = {
            "host": f"{url.hostname or '127.0.0.1'}:{url.port or (5671 if tls else 5672)}",
            "protocol": url.scheme or "amqp",
            "protocolVersion": "0.9.1",
            "pathname": url.path or "/",
        }
    return servers


def _version() -> str:
    try:
        return metadata.version("saga-orchestrator")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        return "0.0.0"
