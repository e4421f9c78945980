"""What a team declares: a participant's command handlers, written as faststream handlers.

A handler takes the command model as its one message parameter and returns the reply
(a business refusal is a reply too); anything else it needs comes from faststream's
context, so adding a field to a contract never breaks a signature::

    shipping = StreamParticipant(service="shipping")
    Shipments = Annotated[MongoShipments, uses("shipments")]

    @shipping.resource("shipments")
    async def open_shipments(service: StreamService) -> MongoShipments:
        return MongoShipments(database=service.db, undeliverable=("Atlantis",))

    @shipping.command(ScheduleShipment, refusal=lambda c, why: ShipmentFailed(...))
    async def schedule(command: ScheduleShipment, saga_id: SagaId, shipments: Shipments):
        ...

The declaration holds no connection: :class:`~participants.kit.streams.service.StreamService`
builds a ``RabbitBroker`` from it for one deployment's settings, so one process (a test)
can run several instances on different namespaces.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from faststream import Depends

if TYPE_CHECKING:
    from contracts import Message
    from orchestrator.messaging.envelope import Envelope
    from participants.kit.streams.service import StreamService

__all__ = [
    "Attempt",
    "CommandSpec",
    "Resource",
    "SagaId",
    "StreamParticipant",
    "current_envelope",
    "handling",
    "uses",
]


@dataclass(frozen=True)
class _Handling:
    envelope: Envelope
    resources: Mapping[str, Any]


_HANDLING: ContextVar[_Handling] = ContextVar("saga_handling")


@contextmanager
def handling(envelope: Envelope, resources: Mapping[str, Any]) -> Iterator[None]:
    """What the delivery middleware sets around one handler call (read by the
    dependencies below, and by the subscribers' decoder)."""
    token = _HANDLING.set(_Handling(envelope, resources))
    try:
        yield
    finally:
        _HANDLING.reset(token)


def current_envelope() -> Envelope:
    """The command being handled (inside a handler or its dependencies)."""
    return _HANDLING.get().envelope


# Plain async dependencies, not faststream ``Context`` fields: fast_depends runs a
# Context field's lookup in a worker thread on every call, a thread hop per parameter.
async def _saga_id() -> str:
    return _HANDLING.get().envelope.correlation_id


async def _attempt() -> int:
    return _HANDLING.get().envelope.attempt


SagaId = Annotated[str, Depends(_saga_id)]
"""A handler parameter: the saga id (the command's ``correlation_id``), already checked."""
Attempt = Annotated[int, Depends(_attempt)]
"""A handler parameter: the delivery attempt of this command (1 for the first)."""


def uses(name: str) -> Any:
    """A handler parameter's dependency on resource ``name`` of the running service:
    ``Annotated[MongoShipments, uses("shipments")]``."""

    async def resource() -> Any:
        try:
            return _HANDLING.get().resources[name]
        except KeyError:
            raise LookupError(f"no resource {name!r}; register it with @resource") from None

    resource.__name__ = f"resource_{name}"
    return Depends(resource)


C = TypeVar("C", bound="Message")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
Resource = Callable[["StreamService"], Awaitable[Any]]
"""Builds something handlers use (a store) once the service has its database."""


@dataclass(frozen=True, kw_only=True)
class CommandSpec:
    """One command a participant handles."""

    kind: type[Message]
    handler: Callable[..., Awaitable[Any]]
    refusal: Callable[[Any, str], Message] | None = None
    """(command, reason) -> the business refusal (what an injected ``decline`` replies)."""
    queue: str
    """The work queue suffix it arrives on (``shipping.commands``)."""


class StreamParticipant:
    """The declaration of a participant service written with faststream."""

    def __init__(self, *, service: str, queue: str = "") -> None:
        self.service = service
        self.queue = queue or f"{service}.commands"
        self.commands: dict[type[Message], CommandSpec] = {}
        self.resources: dict[str, Resource] = {}

    def command(
        self,
        kind: type[C],
        *,
        refusal: Callable[[C, str], Message] | None = None,
        queue: str = "",
    ) -> Callable[[F], F]:
        """Register the decorated function as the handler of ``kind``. It returns the
        reply, or None for a command nobody waits on."""

        def register(handler: F) -> F:
            if kind in self.commands:
                raise ValueError(f"{self.service}: {kind.__name__} already has a handler")
            self.commands[kind] = CommandSpec(
                kind=kind, handler=handler, refusal=refusal, queue=queue or self.queue
            )
            return handler

        return register

    def resource(self, name: str) -> Callable[[Resource], Resource]:
        """Register a builder of resource ``name`` (a handler reads it with ``uses(name)``)."""

        def register(build: Resource) -> Resource:
            self.resources[name] = build
            return build

        return register

    @property
    def queues(self) -> tuple[str, ...]:
        """Every work queue suffix a handler listens on, in registration order."""
        return tuple(dict.fromkeys(spec.queue for spec in self.commands.values()))

    def refusable(self, command: Message) -> bool:
        """Whether ``command`` has a business refusal (so a decline rule can hit it)."""
        spec = self.commands.get(type(command))
        return spec is not None and spec.refusal is not None
