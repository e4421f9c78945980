"""Group commit in the participants: how long a batched write waits for more.

The participants' stores put :class:`orchestrator.store.writes.DocumentWrites` in front
of the collections their commands insert into and move stock in; this is its setting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.settings import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["MAX_WINDOW_MS", "WINDOW_ENV", "write_window"]

WINDOW_ENV = "PARTICIPANT_WRITE_WINDOW_MS"
MAX_WINDOW_MS = 1000.0
"""The longest window accepted: every command of a batch waits for it."""


def write_window(env: Mapping[str, str]) -> float:
    """Seconds a batched write waits for more, from ``PARTICIPANT_WRITE_WINDOW_MS``
    (default 0: the writes ready in the same turn of the event loop share a round trip,
    and those queued while one is in flight share the next)."""
    raw = (env.get(WINDOW_ENV) or "").strip()
    try:
        ms = float(raw) if raw else 0.0
    except ValueError:
        raise ConfigError(f"{WINDOW_ENV}={raw!r} is not a number") from None
    if not 0 <= ms <= MAX_WINDOW_MS:  # also refuses nan and inf
        raise ConfigError(
            f"{WINDOW_ENV}={raw!r} must be between 0 and {MAX_WINDOW_MS:g} ms (a batched "
            "write waits that long before its command can be answered)"
        )
    return ms / 1000
