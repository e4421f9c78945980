"""The orchestrator's own tuning knobs, read from ``Settings.env()``.

=============================  =======  ===============================================
variable                       default  meaning
=============================  =======  ===============================================
SAGA_COMMIT_WINDOW_MS          0        group commit: wait this long for more commits
                                        (0: only those ready in the same loop turn)
SAGA_COMMIT_BATCH              100      group commit: at most this many per insert
SAGA_PROGRESS_BATCH            100      progress events of concurrent commits sent as
                                        one message, at most this many (1: one each)
SAGA_POLL_IDLE                 30       seconds between relay/watcher passes when idle
SAGA_RELAY_BATCH               200      outboxes per relay pass
SAGA_DEADLINE_BATCH            500      deadlines per watcher pass
SAGA_WORK_BACKOFF              1        first retry delay (s) of a failing outbox/deadline
SAGA_OUTBOX_MAX_ATTEMPTS       8        publish attempts before an outbox is parked
SAGA_DEADLINE_MAX_ATTEMPTS     5        attempts before a deadline is parked
SAGA_RETENTION_DAYS            off      remove finished sagas older than this (days)
SAGA_RETENTION_INTERVAL        3600     seconds between retention runs
=============================  =======  ===============================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from orchestrator.runtime.pacing import Backoff
from orchestrator.settings import ConfigError, Settings, env_float, env_int

__all__ = ["RuntimeOptions"]


def _non_negative(e: Mapping[str, str], name: str, default: float) -> float:
    raw = (e.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative")
    return value


def _positive_int(e: Mapping[str, str], name: str, default: int) -> int:
    value = env_int(e, name, default)
    if value < 1:
        raise ConfigError(f"{name}={value} must be at least 1")
    return value


def _bounded_int(e: Mapping[str, str], name: str, default: int, *, most: int) -> int:
    value = _positive_int(e, name, default)
    if value > most:
        raise ConfigError(f"{name}={value} must be at most {most}")
    return value


@dataclass(frozen=True, kw_only=True)
class RuntimeOptions:
    """Group commit, poller pacing, parking of failing work, retention."""

    commit_window: float = 0.0
    commit_batch: int = 100
    progress_batch: int = 100
    poll_idle: float = 30.0
    relay_batch: int = 200
    deadline_batch: int = 500
    outbox_backoff: Backoff = field(default_factory=lambda: Backoff(max_attempts=8))
    deadline_backoff: Backoff = field(default_factory=lambda: Backoff(max_attempts=5))
    retention: timedelta | None = None
    retention_interval: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RuntimeOptions:
        """Read the variables of the table above; ConfigError names a bad one."""
        e = settings.env()
        base = env_float(e, "SAGA_WORK_BACKOFF", 1.0)
        days = _non_negative(e, "SAGA_RETENTION_DAYS", 0.0)
        return cls(
            commit_window=_non_negative(e, "SAGA_COMMIT_WINDOW_MS", 0.0) / 1000,
            commit_batch=_positive_int(e, "SAGA_COMMIT_BATCH", 100),
            progress_batch=_bounded_int(e, "SAGA_PROGRESS_BATCH", 100, most=1000),
            poll_idle=env_float(e, "SAGA_POLL_IDLE", 30.0),
            relay_batch=_positive_int(e, "SAGA_RELAY_BATCH", 200),
            deadline_batch=_positive_int(e, "SAGA_DEADLINE_BATCH", 500),
            outbox_backoff=Backoff(
                base=base, max_attempts=_positive_int(e, "SAGA_OUTBOX_MAX_ATTEMPTS", 8)
            ),
            deadline_backoff=Backoff(
                base=base, max_attempts=_positive_int(e, "SAGA_DEADLINE_MAX_ATTEMPTS", 5)
            ),
            retention=timedelta(days=days) if days > 0 else None,
            retention_interval=env_float(e, "SAGA_RETENTION_INTERVAL", 3600.0),
        )
