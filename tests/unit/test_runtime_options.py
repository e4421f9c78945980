"""The orchestrator's tuning variables: defaults, values, clear errors."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator.runtime.options import RuntimeOptions
from orchestrator.settings import ConfigError, Settings


def options(**extra: str) -> RuntimeOptions:
    return RuntimeOptions.from_settings(Settings(extra=extra))


def test_defaults_keep_retention_off_and_commit_without_waiting() -> None:
    o = options()
    assert o.retention is None
    assert o.commit_window == 0.0
    assert (o.commit_batch, o.relay_batch, o.deadline_batch) == (100, 200, 500)
    assert (o.outbox_backoff.max_attempts, o.deadline_backoff.max_attempts) == (8, 5)


def test_values_are_read() -> None:
    o = options(
        SAGA_RETENTION_DAYS="30",
        SAGA_COMMIT_WINDOW_MS="2.5",
        SAGA_COMMIT_BATCH="50",
        SAGA_POLL_IDLE="5",
        SAGA_WORK_BACKOFF="0.5",
        SAGA_OUTBOX_MAX_ATTEMPTS="3",
    )
    assert o.retention == timedelta(days=30)
    assert o.commit_window == 0.0025
    assert o.commit_batch == 50
    assert o.poll_idle == 5.0
    assert o.outbox_backoff.base == 0.5
    assert o.outbox_backoff.max_attempts == 3
    assert options(SAGA_RETENTION_DAYS="0").retention is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SAGA_COMMIT_BATCH", "0"),
        ("SAGA_COMMIT_WINDOW_MS", "-1"),
        ("SAGA_RETENTION_DAYS", "soon"),
        ("SAGA_POLL_IDLE", "0"),
        ("SAGA_OUTBOX_MAX_ATTEMPTS", "x"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        options(**{name: value})
