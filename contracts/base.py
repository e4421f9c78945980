"""The message base class, the type registry and the wire codec.

Every command, reply and event is a frozen pydantic model registered under a versioned
type name such as ``inventory.reserve_stock.v1``. The type name travels in the AMQP
``type`` property; routing and tracing ids travel in properties and headers, never in
the body, so the body is only the business payload.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError

from contracts.errors import MalformedMessage

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "SAFE_INTEGER",
    "WHOLE",
    "Int64",
    "Message",
    "NonNegativeInt",
    "PositiveInt",
    "StrictBool",
    "Text",
    "Upcaster",
    "decode",
    "encode",
    "message",
    "registered_types",
    "resolve",
    "upcast",
    "upcaster",
    "validate",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
SAFE_INTEGER = 2**53 - 1
"""The largest whole number every JSON reader holds exactly (JavaScript, and JSON Schema
validators that compare in floating point); far inside MongoDB's int64."""


def _whole_number(value: Any) -> Any:
    """``5.0`` is the whole number 5 in JSON (and in JSON Schema); ``5.5`` is not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WHOLE = BeforeValidator(_whole_number)
"""Put last in an ``Annotated`` whole-number type, after its bounds (so that the bounds
show in the JSON schema as ``minimum``/``maximum``)."""
Int64 = Annotated[int, Strict(), Field(ge=-SAFE_INTEGER, le=SAFE_INTEGER), WHOLE]
"""A whole number that MongoDB stores as int64 and every JSON client reads exactly
(within +/- 2**53 - 1). Strict: ``true`` or ``"5"`` is refused, not turned into 1 or 5
(pydantic's lax mode would); ``5.0`` is 5, as JSON Schema counts it, ``5.5`` is refused.
Narrower bounds: spell the type out with them (``Field`` before ``WHOLE``), as
:data:`NonNegativeInt` does."""
NonNegativeInt = Annotated[int, Strict(), Field(ge=0, le=SAFE_INTEGER), WHOLE]
"""An :data:`Int64` of at least 0."""
PositiveInt = Annotated[int, Strict(), Field(ge=1, le=SAFE_INTEGER), WHOLE]
"""An :data:`Int64` of at least 1."""
StrictBool = Annotated[bool, Strict()]
"""``true`` or ``false`` only (lax mode would take ``1``, ``"yes"``, ``"on"``)."""
Text = Annotated[str, Field(min_length=1, max_length=128, pattern=r"\S")]
"""An id or a reference: 1 to 128 characters, not only whitespace."""

_REGISTRY: dict[str, type[Message]] = {}
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the body of an older version of a message into the body of the next version."""
_UPCASTERS: dict[str, tuple[str, Upcaster]] = {}

M = TypeVar("M", bound="type[Message]")


class Message(BaseModel):
    """Base of every contract. Subclasses are registered with :func:`message`.

    Numbers and booleans are strict (:data:`Int64`, :data:`StrictBool`): JSON's own
    types only, no coercion from strings or between bool and int. Strings are stripped
    of surrounding whitespace. Dates are ISO 8601 strings, as JSON has no date type.
    """

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


def upcaster(old_type: str, new_type: str) -> Callable[[Upcaster], Upcaster]:
    """Register how a body of ``old_type`` becomes a body of ``new_type`` (the next
    version). Chains are followed, so v1 -> v2 -> v3 needs two small upcasters. Upcasters
    are pure functions of the body dict and run wherever a stored or received body is
    read: on the wire (:func:`decode`) and from the store (outboxes, saga events)."""

    def register(fn: Upcaster) -> Upcaster:
        if old_type in _UPCASTERS:
            raise ValueError(f"{old_type!r} already has an upcaster")
        if old_type in _REGISTRY:
            raise ValueError(f"{old_type!r} is a current contract; it cannot be upcast")
        _UPCASTERS[old_type] = (new_type, fn)
        return fn

    return register


def upcast(type_name: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The newest type name and body for a body stored or sent as ``type_name``
    (unchanged if it has no upcaster)."""
    seen = 0
    while type_name in _UPCASTERS:
        type_name, fn = _UPCASTERS[type_name]
        body = fn(dict(body))
        seen += 1
        if seen > 100:  # pragma: no cover - a registration mistake, not a runtime case
            raise RuntimeError(f"upcaster chain of {type_name!r} does not end")
    return type_name, body


def registered_types() -> dict[str, type[Message]]:
    """All registered contracts by type name (a copy)."""
    return dict(_REGISTRY)


def resolve(type_name: str | None) -> type[Message]:
    """The contract class for a wire type name, or ``MalformedMessage('unknown_type')``."""
    if not type_name:
        raise MalformedMessage("unknown_type", "message has no 'type' property")
    while type_name in _UPCASTERS:
        type_name = _UPCASTERS[type_name][0]
    try:
        return _REGISTRY[type_name]
    except KeyError:
        raise MalformedMessage("unknown_type", f"unknown message type {type_name!r}") from None


def encode(msg: Message) -> bytes:
    """The JSON body of a message."""
    return msg.model_dump_json().encode()


def decode(type_name: str | None, body: bytes) -> Message:
    """Decode and validate a body (upcast first if it is an older version); every failure
    is a :class:`MalformedMessage`."""
    resolve(type_name)  # an unknown type is refused before the body is even parsed
    try:
        raw: Any = json.loads(body)
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, absurd nesting or numbers
        raise MalformedMessage("undecodable", f"body is not JSON: {str(e)[:200]}") from e
    return validate(type_name or "", raw)


def validate(type_name: str, raw: Any) -> Message:
    """Validate a decoded body of ``type_name`` (upcast first if it is an older
    version); every failure is a :class:`MalformedMessage`."""
    cls = resolve(type_name)
    if isinstance(raw, dict) and type_name != cls.TYPE:
        try:
            _, raw = upcast(type_name, raw)
        except (KeyError, TypeError, ValueError) as e:
            raise MalformedMessage("schema_violation", f"cannot upcast {type_name}: {e}") from e
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
