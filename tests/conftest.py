"""Real services for the integration tests, picked once per session.

RabbitMQ: AMQP_URL, else amqp://guest:guest@127.0.0.1:5672/; on a local broker the
management plugin is enabled as ``saga-dev`` enables it (the least-privilege tests and
the bench's broker figures use its API).
MongoDB, in this order: MONGODB_URL; a testcontainers MongoDB when a Docker engine
answers; else the embedded wire-protocol server (nx-27017) on a free port.
Every test gets its own namespace (exchanges and queues) and database, removed after it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from orchestrator.dev.devrun import ensure_rabbitmq, management_ui
from orchestrator.dev.embedded import EmbeddedMongo
from orchestrator.settings import DEFAULT_AMQP_URL, Settings
from tests.helpers import delete_topology


def _docker_works() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The broker every test uses (a stopped local server is started)."""
    url = os.environ.get("AMQP_URL") or DEFAULT_AMQP_URL
    if not ensure_rabbitmq(url):
        pytest.exit(f"RabbitMQ does not answer at {url}; start it or set AMQP_URL", returncode=3)
    management_ui(url)  # a new machine's local server has the plugin off
    return url


@pytest.fixture(scope="session")
def mongodb_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The MongoDB-protocol server every test uses."""
    if url := os.environ.get("MONGODB_URL"):
        yield url
        return
    if _docker_works():
        from testcontainers.mongodb import MongoDbContainer  # noqa: PLC0415 - only with Docker

        with MongoDbContainer("mongo:7") as container:
            yield container.get_connection_url()
        return
    server = EmbeddedMongo(tmp_path_factory.mktemp("nx-27017"))
    yield server.start()
    server.stop()


def _test_name(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-").lower()
    return f"t-{name[:40]}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
async def settings(
    request: pytest.FixtureRequest, amqp_url: str, mongodb_url: str
) -> AsyncIterator[Settings]:
    """Settings for one test: its own namespace and database, short delays; torn down after."""
    name = _test_name(request)
    s = Settings(
        amqp_url=amqp_url,
        mongodb_url=mongodb_url,
        namespace=name,
        database=name.replace("-", "_"),
        retry_delays=(0.2, 0.5, 1.0),
        relay_grace=0.5,
        relay_interval=0.2,
        step_timeout=30.0,
        log_format="console",
    )
    yield s
    await delete_topology(s)
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_url)
    await client.drop_database(s.database)
    await client.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A scratch folder."""
    return tmp_path
