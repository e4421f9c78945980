"""One RabbitMQ user per service, with permissions for that service's own resources only.

RabbitMQ checks three permissions, each a regular expression over resource names
(https://www.rabbitmq.com/access-control.html):

* **configure**: declare or delete a queue or exchange;
* **write**: publish to an exchange; bind a queue (write on the queue, read on the exchange);
* **read**: consume from or get a queue; the source exchange of a binding.

and, on topic exchanges, **topic permissions**: which routing keys a user may publish with.

With ``SAGA_DECLARE_TOPOLOGY=false`` no service declares anything (passive checks need no
permission), so ``configure`` is ``^$`` for every service but the API, whose dead-letter
operations take an exclusive lock queue ``<dlq>.lock``.

Who owns a work queue follows its name: ``<ns>.orchestrator.*`` is the orchestrator's,
``<ns>.<participant>.*`` a participant's, every other one (projections, analytics,
notifications, a pack's read-side queues) the read side's.

Retry tiers and dead-letter queues are reached through the default exchange (write on
``amq.default``), which RabbitMQ checks per exchange, not per queue: a service that may
retry may put a message into any queue of the vhost by its name. Only the broker moves
messages out of a retry tier (dead-lettering needs no permission), and nobody but the API
reads a dead-letter queue. Closing that gap needs a retry exchange per service instead of
the default exchange (not done).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.messaging.topology import Topology, WorkQueue

__all__ = ["DEFAULT_EXCHANGE", "SERVICES", "ServiceUser", "service_users", "user_name"]

DEFAULT_EXCHANGE = "amq.default"
"""The name RabbitMQ checks permissions of the default exchange ("") under."""
NOTHING = "^$"
SERVICES = ("orchestrator", "inventory", "payment", "shipping", "returns", "readside", "api")
PUBLISHED_EVENTS = {"inventory": ("inventory.restocked",)}
"""Domain events a participant publishes to the events exchange (routing keys)."""


@dataclass(frozen=True, kw_only=True)
class ServiceUser:
    """A service's user and its permissions in the deployment's vhost."""

    service: str
    name: str
    configure: str
    write: str
    read: str
    topic_write: dict[str, str] = field(default_factory=dict)
    """Routing-key patterns per topic exchange this user publishes to."""
    why: tuple[str, ...] = ()
    """What each grant is for, one line each (printed by ``saga topology users``)."""


def user_name(namespace: str, service: str) -> str:
    """The user a service of ``namespace`` connects as: ``<namespace>-<service>``."""
    return f"{namespace}-{service}"


def _any_of(names: list[str] | tuple[str, ...]) -> str:
    if not names:
        return NOTHING
    return "^(" + "|".join(re.escape(n) for n in dict.fromkeys(names)) + ")$"


def _keys(prefixes: tuple[str, ...]) -> str:
    """Routing keys that start with one of ``prefixes`` and a dot."""
    if not prefixes:
        return NOTHING
    return "^(" + "|".join(re.escape(p) for p in prefixes) + r")\."


def owner(topology: Topology, queue: WorkQueue) -> str:
    """The service that consumes ``queue``."""
    head = queue.name.removeprefix(topology.namespace + ".").split(".", 1)[0]
    if head == "orchestrator":
        return "orchestrator"
    if head in topology.participants:
        return head
    return "readside"


def service_users(topology: Topology) -> list[ServiceUser]:
    """Every service's user: the orchestrator, each participant, the read side, the API."""
    ns = topology.namespace
    queues: dict[str, list[str]] = {}
    for q in topology.work_queues:
        queues.setdefault(owner(topology, q), []).append(q.name)
    retry = f"{DEFAULT_EXCHANGE} (retry tiers and dead-letter queue by name)"
    users = [
        ServiceUser(
            service="orchestrator",
            name=user_name(ns, "orchestrator"),
            configure=NOTHING,
            write=_any_of([topology.commands_exchange, topology.events_exchange, DEFAULT_EXCHANGE]),
            read=_any_of(queues.get("orchestrator", [])),
            topic_write={
                topology.commands_exchange: _keys(topology.participants),
                topology.events_exchange: _keys(topology.sagas),
            },
            why=(
                f"read: its start and reply queues ({', '.join(queues.get('orchestrator', []))})",
                f"write: {topology.commands_exchange} with participant keys only, "
                f"{topology.events_exchange} with its sagas' keys only, {retry}",
            ),
        )
    ]
    for p in topology.participants:
        events = PUBLISHED_EVENTS.get(p, ())
        write = [topology.replies_exchange, DEFAULT_EXCHANGE]
        topic: dict[str, str] = {}
        if events:
            write.append(topology.events_exchange)
            topic[topology.events_exchange] = _any_of(events)
        users.append(
            ServiceUser(
                service=p,
                name=user_name(ns, p),
                configure=NOTHING,
                write=_any_of(write),
                read=_any_of(queues.get(p, [])),
                topic_write=topic,
                why=(
                    f"read: {', '.join(queues.get(p, []))}",
                    f"write: {topology.replies_exchange} (replies), {retry}"
                    + (
                        f", {topology.events_exchange} with {', '.join(events)} only"
                        if events
                        else ""
                    ),
                ),
            )
        )
    users += [
        ServiceUser(
            service="readside",
            name=user_name(ns, "readside"),
            configure=NOTHING,
            write=_any_of([DEFAULT_EXCHANGE]),
            read=_any_of(queues.get("readside", [])),
            why=(f"read: {', '.join(queues.get('readside', []))}", f"write: {retry}"),
        ),
        _api_user(topology),
    ]
    return users


def _api_user(topology: Topology) -> ServiceUser:
    """Starts sagas; as the operator's API it also lists, replays and discards dead letters:
    reads every dead-letter queue, publishes a replay to where the message first went."""
    ns = topology.namespace
    dlqs = [q.dlq for q in topology.work_queues]
    starts = tuple(key for saga in topology.routes.sagas for key in saga.starts)
    return ServiceUser(
        service="api",
        name=user_name(ns, "api"),
        configure=_any_of([f"{d}.lock" for d in dlqs]),
        write=_any_of(
            [
                topology.commands_exchange,
                topology.replies_exchange,
                topology.events_exchange,
                DEFAULT_EXCHANGE,
            ]
        ),
        read=_any_of(dlqs),
        why=(
            f"write: {topology.commands_exchange} (starts: {', '.join(starts)}; replays of "
            "dead letters to their original exchange, so every exchange of the namespace)",
            "read: the dead-letter queues (list, replay, discard)",
            "configure: the dead-letter queues' exclusive lock queues <dlq>.lock",
        ),
    )
