"""Settings that would be unsafe are refused, and no token has a default anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from orchestrator.api.deps import Access
from orchestrator.settings import ConfigError, Settings

ROOT = Path(__file__).parents[2]


def test_a_prefetch_of_zero_is_refused_with_a_message() -> None:
    """SAGA_PREFETCH=0 would mean unlimited unacknowledged messages per consumer."""
    with pytest.raises(ConfigError, match=r"SAGA_PREFETCH=0.*at least 1"):
        Settings.from_env({"SAGA_PREFETCH": "0"})
    assert Settings.from_env({"SAGA_PREFETCH": "1"}).prefetch == 1


def test_no_role_has_a_default_token() -> None:
    """Without the variables, no token is configured and reads are closed."""
    access = Access.of(Settings.from_env({}).with_(extra={}))
    assert (access.operator, access.client, access.reader, access.reads_open) == (
        None,
        None,
        None,
        False,
    )
    opened = Access.of(Settings(extra={"SAGA_READS_OPEN": "true", "SAGA_CLIENT_TOKEN": "c"}))
    assert (opened.client, opened.reads_open) == (SecretStr("c"), True)


def test_compose_requires_the_operator_token_to_be_set() -> None:
    """The compose file has no fallback token: ``${SAGA_OPERATOR_TOKEN:?...}``."""
    compose = (ROOT / "deploy" / "compose.yaml").read_text()
    assert "change-me" not in compose
    assert "${SAGA_OPERATOR_TOKEN:?" in compose


def test_saga_dev_gives_every_role_a_token_unless_one_is_set() -> None:
    """The development runner fills in tokens (it prints them); set ones are kept."""
    from orchestrator.dev.devrun import with_dev_tokens  # noqa: PLC0415 - dev-only module

    filled = Access.of(with_dev_tokens(Settings(extra={"SAGA_CLIENT_TOKEN": "mine"})))
    assert (filled.operator, filled.client, filled.reader) == (
        SecretStr("dev-operator-token"),
        SecretStr("mine"),
        SecretStr("dev-read-token"),
    )
    assert Access.of(with_dev_tokens(Settings(operator_token="op"))).operator == SecretStr("op")
