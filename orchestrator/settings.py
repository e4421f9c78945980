"""Configuration from the environment, read once at start-up, with clear errors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.messaging.topology import Topology

__all__ = ["ConfigError", "Settings"]

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting of every service. Environment variable names are in ``from_env``."""

    amqp_url: str = DEFAULT_AMQP_URL
    mongodb_url: str | None = None
    database: str = "saga"
    namespace: str = "saga"
    queue_type: str = "quorum"
    retry_delays: tuple[float, ...] = (1.0, 5.0, 30.0)
    delivery_limit: int = 20
    prefetch: int = 64
    max_body_bytes: int = 256 * 1024
    step_timeout: float = 30.0
    step_max_sends: int = 3
    relay_grace: float = 5.0
    relay_interval: float = 1.0
    deadline_poll: float = 0.5
    max_attempts: int | None = None
    instance: str = ""
    payment_decline_above_cents: int = 500_000
    shipping_undeliverable: tuple[str, ...] = ("Atlantis",)
    log_format: str = "json"
    publish_progress: bool = True
    operator_token: str | None = None
    low_stock_threshold: int = 5
    webhook_url: str | None = None
    faults_enabled: bool = False
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ``AMQP_URL``, ``MONGODB_URL``, ``SAGA_*``, ``PAYMENT_*``, ``SHIPPING_*``."""
        e = os.environ if env is None else env
        d = cls()
        return cls(
            amqp_url=e.get("AMQP_URL") or d.amqp_url,
            mongodb_url=e.get("MONGODB_URL") or None,
            database=e.get("SAGA_DATABASE", d.database),
            namespace=_name(e, "SAGA_NAMESPACE", d.namespace),
            queue_type=_choice(e, "SAGA_QUEUE_TYPE", d.queue_type, ("quorum", "classic")),
            retry_delays=_floats(e, "SAGA_RETRY_DELAYS", d.retry_delays),
            delivery_limit=_int(e, "SAGA_DELIVERY_LIMIT", d.delivery_limit),
            prefetch=_int(e, "SAGA_PREFETCH", d.prefetch),
            max_body_bytes=_int(e, "SAGA_MAX_BODY_BYTES", d.max_body_bytes),
            step_timeout=_float(e, "SAGA_STEP_TIMEOUT", d.step_timeout),
            step_max_sends=_int(e, "SAGA_STEP_MAX_SENDS", d.step_max_sends),
            relay_grace=_float(e, "SAGA_RELAY_GRACE", d.relay_grace),
            relay_interval=_float(e, "SAGA_RELAY_INTERVAL", d.relay_interval),
            deadline_poll=_float(e, "SAGA_DEADLINE_POLL", d.deadline_poll),
            max_attempts=_int(e, "SAGA_MAX_ATTEMPTS", 0) or None,
            instance=e.get("SAGA_INSTANCE", ""),
            payment_decline_above_cents=_int(
                e, "PAYMENT_DECLINE_ABOVE_CENTS", d.payment_decline_above_cents
            ),
            shipping_undeliverable=tuple(
                s.strip()
                for s in e.get("SHIPPING_UNDELIVERABLE", ",".join(d.shipping_undeliverable)).split(
                    ","
                )
                if s.strip()
            ),
            log_format=_choice(e, "LOG_FORMAT", d.log_format, ("json", "console")),
            publish_progress=_bool(e, "SAGA_PUBLISH_PROGRESS", d.publish_progress),
            operator_token=e.get("SAGA_OPERATOR_TOKEN") or None,
            low_stock_threshold=_int(e, "LOW_STOCK_THRESHOLD", d.low_stock_threshold),
            webhook_url=e.get("LOW_STOCK_WEBHOOK_URL") or None,
            faults_enabled=_bool(e, "SAGA_FAULTS_ENABLED", d.faults_enabled),
            api_host=e.get("SAGA_API_HOST") or d.api_host,
            api_port=_int(e, "SAGA_API_PORT", d.api_port),
        )

    def to_env(self) -> dict[str, str]:
        """The environment variables that make ``from_env`` return these settings
        (for starting service processes)."""
        env = {
            "AMQP_URL": self.amqp_url,
            "SAGA_DATABASE": self.database,
            "SAGA_NAMESPACE": self.namespace,
            "SAGA_QUEUE_TYPE": self.queue_type,
            "SAGA_RETRY_DELAYS": ",".join(f"{d:g}" for d in self.retry_delays),
            "SAGA_DELIVERY_LIMIT": str(self.delivery_limit),
            "SAGA_PREFETCH": str(self.prefetch),
            "SAGA_MAX_BODY_BYTES": str(self.max_body_bytes),
            "SAGA_STEP_TIMEOUT": f"{self.step_timeout:g}",
            "SAGA_STEP_MAX_SENDS": str(self.step_max_sends),
            "SAGA_RELAY_GRACE": f"{self.relay_grace:g}",
            "SAGA_RELAY_INTERVAL": f"{self.relay_interval:g}",
            "SAGA_DEADLINE_POLL": f"{self.deadline_poll:g}",
            "SAGA_MAX_ATTEMPTS": str(self.max_attempts or ""),
            "SAGA_INSTANCE": self.instance,
            "PAYMENT_DECLINE_ABOVE_CENTS": str(self.payment_decline_above_cents),
            "SHIPPING_UNDELIVERABLE": ",".join(self.shipping_undeliverable),
            "LOG_FORMAT": self.log_format,
            "SAGA_PUBLISH_PROGRESS": "true" if self.publish_progress else "false",
            "LOW_STOCK_THRESHOLD": str(self.low_stock_threshold),
            "SAGA_FAULTS_ENABLED": "true" if self.faults_enabled else "false",
            "SAGA_API_HOST": self.api_host,
            "SAGA_API_PORT": str(self.api_port),
        }
        optional = {
            "MONGODB_URL": self.mongodb_url,
            "SAGA_OPERATOR_TOKEN": self.operator_token,
            "LOW_STOCK_WEBHOOK_URL": self.webhook_url,
        }
        env.update({k: v for k, v in optional.items() if v})
        return env

    def require_mongodb_url(self) -> str:
        """The MongoDB URL, or a clear error saying how to set it."""
        if not self.mongodb_url:
            raise ConfigError(
                "MONGODB_URL is not set (e.g. mongodb://127.0.0.1:27017/); "
                "the development runner 'saga-dev' starts an embedded server"
            )
        return self.mongodb_url

    def topology(self) -> Topology:
        """The RabbitMQ names and queue settings of this deployment."""
        return Topology(
            namespace=self.namespace,
            retry_delays=self.retry_delays,
            max_attempts=self.max_attempts,
            queue_type=self.queue_type,  # type: ignore[arg-type]
            delivery_limit=self.delivery_limit,
        )

    def with_(self, **changes: Any) -> Settings:
        """A copy with some settings changed."""
        return replace(self, **changes)


def _int(e: Mapping[str, str], name: str, default: int) -> int:
    raw = e.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative")
    return value


def _bool(e: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (e.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} must be true or false")


def _float(e: Mapping[str, str], name: str, default: float) -> float:
    raw = e.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive")
    return value


def _floats(e: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = e.get(name)
    if raw is None or raw == "":
        return default
    try:
        values = tuple(float(x) for x in raw.split(","))
    except ValueError:
        raise ConfigError(f"{name}={raw!r} must be comma-separated seconds, e.g. 1,5,30") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{name}={raw!r}: every delay must be positive")
    return values


def _choice(e: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = e.get(name) or default
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(allowed)}")
    return value


def _name(e: Mapping[str, str], name: str, default: str) -> str:
    value = e.get(name) or default
    if not value.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError(f"{name}={value!r} may hold only letters, digits, '-', '_' and '.'")
    return value
