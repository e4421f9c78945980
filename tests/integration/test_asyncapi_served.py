"""The AsyncAPI document as operators get it: ``GET /asyncapi.json`` from a running API,
and ``saga asyncapi --out FILE``; both are the document generated for the deployment."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import uvicorn

from orchestrator.api import create_app
from orchestrator.dev.embedded import free_port
from orchestrator.messaging.asyncapi import deployment_asyncapi
from orchestrator.settings import Settings
from tests.helpers import eventually, run_cli

pytestmark = pytest.mark.integration


async def test_the_api_serves_the_generated_document(settings: Settings) -> None:
    """Open to read (no operator token), the deployment's own queue names, the same
    document the generator makes."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings.with_(operator_token="t0ken")),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: asyncio.sleep(0, server.started), what="API started")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            response = await http.get("/asyncapi.json")
    finally:
        server.should_exit = True
        await serving

    assert response.status_code == 200
    doc = response.json()
    assert doc == json.loads(json.dumps(deployment_asyncapi(settings)))
    addresses = {c["address"] for c in doc["channels"].values()}
    assert f"{settings.namespace}.shipping.commands" in addresses


async def test_saga_asyncapi_writes_the_document_to_a_file(
    settings: Settings, data_dir: Path
) -> None:
    """``saga asyncapi --out FILE`` writes the JSON; without ``--out`` it goes to stdout."""
    out = data_dir / "docs" / "asyncapi.json"
    code, _, err = await run_cli(settings, "asyncapi", "--out", str(out))
    assert (code, f"wrote {out}" in err) == (0, True)
    written = json.loads(out.read_text())
    assert written["asyncapi"] == "3.0.0"
    here = json.loads(json.dumps(deployment_asyncapi(settings)))
    # This process may have imported more contracts (other tests' sagas) than the CLI's.
    assert (written["channels"], written["operations"]) == (here["channels"], here["operations"])
    messages = written["components"]["messages"]
    assert messages == {k: here["components"]["messages"][k] for k in messages}
    code, stdout, _ = await run_cli(settings, "asyncapi")
    assert (code, json.loads(stdout)) == (0, written)
