"""Upcasters of stored saga events: old shapes become the current one on read.

Every stored event carries ``schema``, the version of its type's shape when it was
written (documents without it are schema 1). Reading an event runs the chain of its
type from the stored schema to the current one, one small pure function per step, so a
store never has to be migrated in place. A shape change is: bump the type's schema in
:data:`EVENT_UPCASTERS`, register ``@EVENT_UPCASTERS.register(type, old_schema)`` for
the step, and keep a test with a document of the old shape.

Chains so far:

* ``saga_started`` 1 -> 2: the saga's definition version became part of the event
  (``saga_version``); sagas stored before that ran on version 1. Their start commit
  carries no in-flight marker for the store to count (``counted`` False).
* ``saga_parked`` 1 -> 2: a saga can park before the pivot (a compensation that keeps
  failing) or after it (a retriable step that keeps failing); ``phase`` says which.
  Every saga parked before retriable steps existed was compensating.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "EVENT_UPCASTERS",
    "EventSchemaError",
    "EventUpcaster",
    "EventUpcasters",
    "current_schema",
    "upcast_event",
]

Doc = dict[str, Any]
EventUpcaster = Callable[[Doc], Doc]
"""Turns the stored form of an event at schema N into its form at schema N + 1."""


class EventSchemaError(ValueError):
    """A stored event is of a schema this code does not know (written by a newer
    release), or an upcaster is missing from its chain."""


class EventUpcasters:
    """The current schema of each event type and the upcasters leading to it."""

    def __init__(self, current: Mapping[str, int]) -> None:
        self.current = dict(current)
        self._chains: dict[tuple[str, int], EventUpcaster] = {}

    def schema(self, event_type: str) -> int:
        """The schema events of this type are written with (1 if not listed)."""
        return self.current.get(event_type, 1)

    def register(self, event_type: str, schema: int) -> Callable[[EventUpcaster], EventUpcaster]:
        """Register how an event of ``event_type`` stored at ``schema`` becomes
        ``schema + 1``."""

        def register(fn: EventUpcaster) -> EventUpcaster:
            if (event_type, schema) in self._chains:
                raise ValueError(f"{event_type} schema {schema} already has an upcaster")
            if schema >= self.schema(event_type):
                raise ValueError(f"{event_type} is at schema {self.schema(event_type)}")
            self._chains[(event_type, schema)] = fn
            return fn

        return register

    def upcast(self, doc: Mapping[str, Any]) -> Doc:
        """The stored event ``doc`` in its type's current shape (a new dict; ``doc`` is
        not changed). Raises :class:`EventSchemaError` for a schema newer than this code
        knows or a chain with a missing link."""
        kind = str(doc.get("type", ""))
        schema = int(doc.get("schema") or 1)
        target = self.schema(kind)
        if schema > target:
            raise EventSchemaError(
                f"event {kind!r} is stored at schema {schema}; this release reads up to "
                f"{target} (was it written by a newer orchestrator?)"
            )
        out: Doc = {**doc, "data": dict(doc.get("data") or {})}
        while schema < target:
            step = self._chains.get((kind, schema))
            if step is None:
                raise EventSchemaError(f"no upcaster for {kind!r} from schema {schema}")
            out = step(out)
            schema += 1
        out["schema"] = target
        return out


EVENT_UPCASTERS = EventUpcasters({"saga_started": 2, "saga_parked": 2})
"""The saga events of this release: their current schemas and upcasters."""


def current_schema(event_type: str) -> int:
    """The schema events of this type are written with."""
    return EVENT_UPCASTERS.schema(event_type)


def upcast_event(doc: Mapping[str, Any]) -> Doc:
    """A stored event in its current shape (see :meth:`EventUpcasters.upcast`)."""
    return EVENT_UPCASTERS.upcast(doc)


@EVENT_UPCASTERS.register("saga_started", 1)
def _saga_started_v1(doc: Doc) -> Doc:
    data = dict(doc["data"])
    data.setdefault("saga_version", 1)
    data["counted"] = False
    return {**doc, "data": data}


@EVENT_UPCASTERS.register("saga_parked", 1)
def _saga_parked_v1(doc: Doc) -> Doc:
    data = dict(doc["data"])
    data.setdefault("phase", "compensation")
    return {**doc, "data": data}
