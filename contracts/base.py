"""The message base class, the type registry and the wire codec.

Every command, reply and event is a frozen pydantic model registered under a versioned
type name such as ``inventory.reserve_stock.v1``. The type name travels in the AMQP
``type`` property; routing and tracing ids travel in properties and headers, never in
the body, so the body is only the business payload.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from contracts.errors import MalformedMessage

__all__ = ["Message", "decode", "encode", "message", "registered_types", "resolve"]

_REGISTRY: dict[str, type[Message]] = {}

M = TypeVar("M", bound="type[Message]")


class Message(BaseModel):
    """Base of every contract. Subclasses are registered with :func:`message`."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    TYPE: ClassVar[str] = ""


def message(type_name: str) -> Callable[[M], M]:
    """Register a contract class under its versioned wire type name."""

    def register(cls: M) -> M:
        parts = type_name.split(".")
        if len(parts) < 3 or not parts[-1].startswith("v") or not parts[-1][1:].isdigit():
            raise ValueError(f"type name {type_name!r} must look like 'area.name.v1'")
        if type_name in _REGISTRY and _REGISTRY[type_name] is not cls:
            raise ValueError(f"type name {type_name!r} is registered twice")
        cls.TYPE = type_name
        _REGISTRY[type_name] = cls
        return cls

    return register


def registered_types() -> dict[str, type[Message]]:
    """All registered contracts by type name (a copy)."""
    return dict(_REGISTRY)


def resolve(type_name: str | None) -> type[Message]:
    """The contract class for a wire type name, or ``MalformedMessage('unknown_type')``."""
    if not type_name:
        raise MalformedMessage("unknown_type", "message has no 'type' property")
    try:
        return _REGISTRY[type_name]
    except KeyError:
        raise MalformedMessage("unknown_type", f"unknown message type {type_name!r}") from None


def encode(msg: Message) -> bytes:
    """The JSON body of a message."""
    return msg.model_dump_json().encode()


def decode(type_name: str | None, body: bytes) -> Message:
    """Decode and validate a body; every failure is a :class:`MalformedMessage`."""
    cls = resolve(type_name)
    try:
        raw: Any = json.loads(body)
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, absurd nesting or numbers
        raise MalformedMessage("undecodable", f"body is not JSON: {str(e)[:200]}") from e
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        raise MalformedMessage("schema_violation", _summarise(e)) from e


def _summarise(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "<body>"
        parts.append(f"{where}: {item['msg']}")
    return f"{error.title}: " + "; ".join(parts)
