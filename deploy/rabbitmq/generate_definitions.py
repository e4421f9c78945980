"""Write the RabbitMQ definitions (exchanges, queues, bindings) of one saga deployment.

The JSON is not written by hand: this script runs ``Topology.declare`` against a channel
that only records what it is asked to declare, so every name, flag and queue argument in
the file is exactly what the services declare at start-up. A queue imported with other
arguments than a service later declares makes that service fail with PRECONDITION_FAILED.

The topology is derived from the registered sagas, exactly as the services derive it:
``SAGA_DEFINITIONS`` (default: the shipped packs) decides which queues exist. Regenerate
after changing ``orchestrator/messaging/topology.py`` or the registered sagas, from the
repository root::

    uv run python deploy/rabbitmq/generate_definitions.py > deploy/rabbitmq/definitions.json

``--namespace`` writes the topology of another namespace (``SAGA_NAMESPACE``). Other topology
settings (``SAGA_RETRY_DELAYS``, ``SAGA_QUEUE_TYPE``, ``SAGA_DELIVERY_LIMIT``) are the code's
defaults; a deployment that changes them needs definitions generated for them.

The output holds the vhost ``/`` and the topology only, no users or permissions: those live
in ``users.json`` beside this file (see ``deploy/README.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from orchestrator.messaging.topology import Topology
from orchestrator.settings import Settings

VHOST = "/"


@dataclass
class _RecordedExchange:
    name: str


@dataclass
class _RecordedQueue:
    name: str
    recorder: _Recorder

    async def bind(
        self,
        exchange: _RecordedExchange | str,
        routing_key: str | None = None,
        *,
        arguments: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        _refuse(kwargs, f"bind of {self.name}")
        source = exchange if isinstance(exchange, str) else exchange.name
        self.recorder.bindings.append(
            {
                "source": source,
                "vhost": VHOST,
                "destination": self.name,
                "destination_type": "queue",
                "routing_key": routing_key if routing_key is not None else self.name,
                "arguments": dict(arguments or {}),
            }
        )


@dataclass
class _Recorder:
    """Stands in for an aio-pika channel; keeps aio-pika's defaults for unset flags."""

    exchanges: list[dict[str, Any]] = field(default_factory=list)
    queues: list[dict[str, Any]] = field(default_factory=list)
    bindings: list[dict[str, Any]] = field(default_factory=list)

    async def declare_exchange(
        self,
        name: str,
        type: Any = "direct",
        *,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        passive: bool = False,
        arguments: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> _RecordedExchange:
        _refuse(kwargs, f"exchange {name}")
        if passive:
            raise ValueError(f"exchange {name}: a passive declaration defines nothing")
        self.exchanges.append(
            {
                "name": name,
                "vhost": VHOST,
                "type": getattr(type, "value", type),
                "durable": durable,
                "auto_delete": auto_delete,
                "internal": internal,
                "arguments": dict(arguments or {}),
            }
        )
        return _RecordedExchange(name)

    async def declare_queue(
        self,
        name: str,
        *,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        passive: bool = False,
        arguments: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> _RecordedQueue:
        _refuse(kwargs, f"queue {name}")
        if exclusive or passive:
            raise ValueError(f"queue {name}: exclusive or passive queues cannot be defined")
        self.queues.append(
            {
                "name": name,
                "vhost": VHOST,
                "durable": durable,
                "auto_delete": auto_delete,
                "arguments": dict(arguments or {}),
            }
        )
        return _RecordedQueue(name, self)


def _refuse(kwargs: dict[str, Any], what: str) -> None:
    """Fail loudly on a declaration option this recorder does not model."""
    if kwargs:
        raise TypeError(f"{what}: unsupported declaration options {sorted(kwargs)}")


def definitions(topology: Topology) -> dict[str, Any]:
    """The definitions document of ``topology``, in the order ``declare`` declares it."""
    recorder = _Recorder()
    asyncio.run(topology.declare(recorder))  # type: ignore[arg-type]
    return {
        "vhosts": [{"name": VHOST}],
        "exchanges": recorder.exchanges,
        "queues": recorder.queues,
        "bindings": recorder.bindings,
    }


def main(argv: list[str] | None = None) -> None:
    """Print the definitions JSON to stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", default="saga", help="topology namespace (default: saga)")
    args = parser.parse_args(argv)
    # production definitions: replicated retry tiers and dead-letter queues
    settings = Settings.from_env({"SAGA_RETRY_QUEUE_TYPE": "quorum", **os.environ}).with_(
        namespace=args.namespace
    )
    document = definitions(settings.topology())
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
