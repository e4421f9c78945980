"""The HTTP API keeps its OpenAPI contract: schemathesis, the property-based fuzzer,
runs against a live ``saga-api`` over real HTTP (uvicorn, the whole system behind it)
with every check, a fixed seed and bounded examples, the stateful phase following the
OpenAPI links (a started saga's id into ``GET /sagas/{saga_id}``), and finds nothing."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from orchestrator.readside import ReadSideService
from tests.integration.apiserver import serving_api
from tests.integration.conftest import SystemFactory
from tests.integration.test_dlq_ops import NO_LINES, bad, dlq_depth_is, publish_raw

pytestmark = [pytest.mark.integration, pytest.mark.api_contract]

ROOT = Path(__file__).parents[2]
TOKEN = "schemathesis-operator-token"
SEED = 20261201
BUDGET = 110.0
"""Seconds the schemathesis run may take (well under two minutes; about 20 s here)."""


def schemathesis_command(url: str, report: Path) -> list[str]:
    """The CLI run a developer would type, as the test runs it."""
    return [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--seed",
        str(SEED),
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--no-color",
        "--report",
        "junit,har",
        "--report-har-path",
        str(report.with_suffix(".har")),
        "--report-junit-path",
        str(report),
    ]


@pytest.mark.timeout(240)
async def test_schemathesis_finds_no_failure_against_the_live_api(
    make_system: SystemFactory, tmp_path: Path
) -> None:
    system = await make_system(operator_token=TOKEN, max_body_bytes=65_536)
    await system.start_extra(ReadSideService(system.settings))
    await system.inventory.inventory.set_stock("apple", 1000)
    dlq = system.settings.topology().queue("inventory.commands").dlq
    await publish_raw(system.settings, [bad(f"parked-{i}", NO_LINES) for i in range(3)])
    await dlq_depth_is(system, dlq, 3)

    async with serving_api(system.settings) as url:
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.integration.schemathesis_hooks",
            "PYTHONPATH": str(ROOT),
        }
        process = await asyncio.create_subprocess_exec(
            *schemathesis_command(url, tmp_path / "junit.xml"),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), timeout=BUDGET)
    text = out.decode(errors="replace")
    print(text)  # the run report, shown with -s or on failure
    assert process.returncode == 0, text[-20_000:]
    followed = links_followed(tmp_path / "junit.har")
    assert followed, "the stateful phase never read a saga it had started (OpenAPI links)"


def links_followed(har: Path) -> int:
    """How often a saga started by a start route was then read with GET /sagas/{id}
    (200): the stateful phase following the OpenAPI links (the CLI's own link count is
    not filled in when it does not write to a terminal)."""
    started: set[str] = set()
    followed = 0
    for entry in json.loads(har.read_text())["log"]["entries"]:
        method, url = entry["request"]["method"], entry["request"]["url"].split("?")[0]
        status = entry["response"]["status"]
        if method == "POST" and status in (200, 202) and url.endswith(("/orders", "/sagas")):
            started.add(json.loads(entry["response"]["content"].get("text") or "{}")["saga_id"])
        elif method == "GET" and status == 200 and url.rsplit("/", 1)[-1] in started:
            followed += 1
    return followed
