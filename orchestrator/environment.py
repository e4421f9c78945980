"""Environment variables: the parsers behind :class:`orchestrator.settings.Settings` and
the ``env_*`` readers that participants and packs use for their own variables, the
pydantic-settings source that feeds ``Settings`` from an environment mapping, and the
translation of a ValidationError into one clear ConfigError.

A parser takes the raw text (or a value already of its type, when settings are made in
code) and returns the value, or raises ValueError with the reason alone; the caller puts
the variable and the raw text in front, so that every message reads alike:
``SAGA_PREFETCH='x' is not a whole number``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, get_args

from pydantic import AliasChoices, SecretStr
from pydantic_settings import PydanticBaseSettingsSource

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from pydantic import BaseModel, ValidationError
    from pydantic.fields import FieldInfo
    from pydantic_core import ErrorDetails
    from pydantic_settings import BaseSettings

__all__ = [
    "ConfigError",
    "EnvironmentSource",
    "env_bool",
    "env_float",
    "env_int",
    "env_list",
    "explain",
]

T = TypeVar("T")

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})
HIGHEST_PORT = 65535
# The parsers raise ValueError even for a value of the wrong type: pydantic turns a
# ValueError into a validation error, a TypeError it lets through.


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def whole_number(value: object) -> int:
    """An int >= 0, from text like ``20`` or from an int."""
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ValueError("is not a whole number") from None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("is not a whole number")  # noqa: TRY004 - pydantic reports ValueError
    if value < 0:
        raise ValueError("must not be negative")
    return value


def port(value: object) -> int:
    """A TCP port, 0 to 65535 (0 turns the listener off)."""
    number = whole_number(value)
    if number > HIGHEST_PORT:
        raise ValueError("is not a TCP port (0 to 65535; 0 turns it off)")
    return number


def positive(value: object) -> float:
    """A number > 0 (seconds, mostly), from text like ``0.5`` or from a number."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError("is not a number") from None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError("is not a number")  # noqa: TRY004 - pydantic reports ValueError
    if not value > 0:
        raise ValueError("must be positive")
    return float(value)


def flag(value: object) -> bool:
    """true/false, 1/0, yes/no or on/off (any case), or a bool."""
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else None
    if word in TRUE:
        return True
    if word in FALSE:
        return False
    raise ValueError("must be true or false")


def delays(value: object) -> tuple[float, ...]:
    """Comma-separated seconds (``1,5,30``), or a sequence of numbers; every one > 0."""
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, tuple | list):
        raise ValueError("must be comma-separated seconds, e.g. 1,5,30")  # noqa: TRY004 - pydantic reports ValueError
    try:
        seconds = tuple(float(part) for part in parts)
    except (TypeError, ValueError):
        raise ValueError("must be comma-separated seconds, e.g. 1,5,30") from None
    if not seconds or not all(s > 0 for s in seconds):
        raise ValueError("must be comma-separated seconds, every delay positive")
    return seconds


def names(value: object) -> tuple[str, ...]:
    """Comma-separated values (blanks dropped), or a sequence of strings."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, tuple | list) and all(isinstance(part, str) for part in value):
        return tuple(value)
    raise ValueError("must be comma-separated names")


def write_concern(value: object) -> str | int:
    """MongoDB's ``w``: ``majority``, a number of members >= 0, or a tag set name."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = value.strip() if isinstance(value, str) else ""
    if text.isdigit():
        return int(text)
    if not text or text.lstrip("-").isdigit():
        raise ValueError("must be majority, a number of members >= 0, or a tag set name")
    return text


def identifier(value: object) -> str:
    """A name that reads well in the RabbitMQ management UI and in database names:
    letters, digits, '-', '_' and '.'."""
    if (
        not isinstance(value, str)
        or not value.replace("-", "").replace("_", "").replace(".", "").isalnum()
    ):
        raise ValueError("may hold only letters, digits, '-', '_' and '.'")
    return value


def one_of(*allowed: str) -> Callable[[object], str]:
    """A parser that accepts exactly one of ``allowed``."""

    def choice(value: object) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return choice


def read(e: Mapping[str, str], name: str, default: T, parse: Callable[[object], T]) -> T:
    """``parse(e[name])``, or ``default`` if the variable is unset or blank; a ConfigError
    naming the variable and its value if it does not parse."""
    raw = e.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return parse(raw)
    except ValueError as reason:
        raise ConfigError(f"{name}={raw!r} {reason}") from None


def env_int(e: Mapping[str, str], name: str, default: int) -> int:
    """A whole number >= 0 from ``e[name]``, ``default`` if unset; ConfigError otherwise."""
    return read(e, name, default, whole_number)


def env_float(e: Mapping[str, str], name: str, default: float) -> float:
    """A positive number from ``e[name]``, ``default`` if unset; ConfigError otherwise."""
    return read(e, name, default, positive)


def env_bool(e: Mapping[str, str], name: str, default: bool) -> bool:
    """true/false (1/0, yes/no, on/off) from ``e[name]``, ``default`` if unset."""
    return read(e, name, default, flag)


def env_list(e: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated values from ``e[name]`` (blanks dropped), ``default`` if unset."""
    return read(e, name, default, names)


class EnvironmentSource(PydanticBaseSettingsSource):
    """A pydantic-settings source over one environment mapping (the process's, or one a
    test or a runner gives): each field's value is the variable its validation alias names
    (the first, if several); empty counts as unset, as it does for the ``env_*`` readers."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._env = env

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """The raw text of the field's variable (None if unset or empty), and the
        variable's name as the key to validate it under."""
        variable = variable_of(field)
        if variable is None:  # a field that is not read from the environment
            return None, field_name, False
        return self._env.get(variable) or None, variable, False

    def __call__(self) -> dict[str, Any]:
        found = (self.get_field_value(f, n) for n, f in self.settings_cls.model_fields.items())
        return {key: raw for raw, key, _ in found if raw is not None}


def variable_of(field: FieldInfo) -> str | None:
    """The environment variable of a field: its validation alias (the first, if several)."""
    names = _keys_of(field)
    return names[0] if names else None


def _keys_of(field: FieldInfo) -> list[str]:
    """The names a field is validated under, other than its own: its validation aliases."""
    alias = field.validation_alias
    choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
    return [choice for choice in choices if isinstance(choice, str)]


def explain(error: ValidationError, settings_cls: type[BaseModel]) -> str:
    """A ValidationError of ``settings_cls`` as one line naming each bad variable, its
    value (never that of a SecretStr field) and what is expected."""
    variables: dict[str, str] = {}  # every name a value can be given under -> its variable
    secret: set[str] = set()
    for name, field in settings_cls.model_fields.items():
        variable = variable_of(field)
        if variable is not None:
            variables |= dict.fromkeys((name, *_keys_of(field)), variable)
            if SecretStr in (field.annotation, *get_args(field.annotation)):
                secret.add(variable)
    return "; ".join(_problem(detail, variables, secret) for detail in error.errors())


def _problem(detail: ErrorDetails, variables: Mapping[str, str], secret: set[str]) -> str:
    cause = detail.get("ctx", {}).get("error")
    reason = str(cause) if isinstance(cause, ValueError) else f"is not valid: {detail['msg']}"
    if not detail["loc"]:  # a check of the whole model: its message names the variables
        return reason
    given = str(detail["loc"][0])
    if detail["type"] == "extra_forbidden":
        return f"{given} is not a setting"
    name = variables.get(given, given)
    if name in secret:
        return f"{name} {reason}"
    return f"{name}={detail['input']!r} {reason}"
