"""The harness's environment for the scenario tests: the session's broker and store."""

from __future__ import annotations

import pytest

from orchestrator.dev.harness import HarnessEnv


@pytest.fixture(scope="session")
def harness(
    amqp_url: str, mongodb_url: str, tmp_path_factory: pytest.TempPathFactory
) -> HarnessEnv:
    """Where scenarios run: each makes its own namespace and database here."""
    return HarnessEnv(
        amqp_url=amqp_url, mongodb_url=mongodb_url, workdir=tmp_path_factory.mktemp("harness")
    )
