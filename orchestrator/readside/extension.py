"""How a saga pack adds projections to the read side.

A pack's ``readside`` part is a factory ``(database, settings) -> ReadSideExtension``.
The read-side service consumes the extension's queues (declared by the pack's
``queues``), and ``saga projections rebuild`` empties its collections and replays every
saga's progress events into it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from contracts import SagaProgressed
    from orchestrator.messaging.envelope import Envelope
    from orchestrator.settings import Settings

__all__ = ["ExtensionFactory", "ReadSideExtension"]


class ReadSideExtension(Protocol):
    """Projections of one pack."""

    collections: tuple[str, ...]
    """Collections a rebuild empties first."""

    def handlers(self) -> Mapping[str, Callable[[Envelope], Awaitable[None]]]:
        """Queue suffix (``projections.stock``) -> handler of its deliveries."""
        ...

    async def ensure_indexes(self) -> None:
        """Create what its reads need. Idempotent."""
        ...

    async def rebuild_begin(self) -> None:
        """Replay what does not come from saga events (e.g. restocks), after emptying."""
        ...

    async def rebuild_saga(self, saga_id: str, events: list[SagaProgressed]) -> None:
        """Replay one saga's progress events, oldest first."""
        ...

    async def close(self) -> None:
        """Release what its handlers hold (e.g. an HTTP client); the read side stops."""
        ...


ExtensionFactory = Callable[["AsyncDatabase[dict[str, Any]]", "Settings"], ReadSideExtension]
