"""The participants' record retention refuses a value shorter than a copy can wait."""

from __future__ import annotations

import pytest

from orchestrator.settings import ConfigError
from participants.kit.retention import (
    MIN_RECORD_RETENTION_SECONDS,
    RECORD_RETENTION_SECONDS,
    record_retention,
)


def test_the_default_is_thirty_days() -> None:
    assert record_retention({}) == RECORD_RETENTION_SECONDS == 30 * 24 * 3600


def test_an_hour_or_more_is_taken() -> None:
    assert record_retention({"PARTICIPANT_RECORD_RETENTION_SECONDS": "5400"}) == 5400


def test_less_than_the_longest_automatic_wait_is_refused() -> None:
    with pytest.raises(ConfigError, match="PARTICIPANT_RECORD_RETENTION_SECONDS=600: must be"):
        record_retention({"PARTICIPANT_RECORD_RETENTION_SECONDS": "600"})
    assert MIN_RECORD_RETENTION_SECONDS >= 1800, "longer than 1,800 deferral rounds of 1 s"
