"""Every line a service writes is JSON: structlog's events and the standard library's
records (aio-pika, pymongo, uvicorn, asyncio) alike."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import logging
    import structlog
    from orchestrator.runtime.logs import configure_logging

    configure_logging("inventory")
    structlog.get_logger("host").info("service_started", queues=["a"])
    logging.getLogger("aio_pika.robust_connection").warning("Connection attempt %s failed", 3)
    logging.getLogger("pymongo.serverSelection").info("dropped: below the library's floor")
    logging.getLogger("uvicorn.error").info("Uvicorn running on %s", "http://127.0.0.1:8000")
    with structlog.contextvars.bound_contextvars(saga_id="saga-7"):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("asyncio").exception("Task exception was never retrieved")
    """
)


def test_stdlib_loggers_are_rendered_as_json_lines_with_the_service_context() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]

    assert [line["event"] for line in lines] == [
        "service_started",
        "Connection attempt 3 failed",
        "Uvicorn running on http://127.0.0.1:8000",
        "Task exception was never retrieved",
    ]
    assert all(line["service"] == "inventory" for line in lines)
    pika, uvicorn, failed = lines[1], lines[2], lines[3]
    assert (pika["logger"], pika["level"]) == ("aio_pika.robust_connection", "warning")
    assert (uvicorn["logger"], uvicorn["level"]) == ("uvicorn.error", "info")
    assert failed["saga_id"] == "saga-7"
    assert failed["level"] == "error"
    assert "RuntimeError: boom" in failed["exception"]
    assert "timestamp" in failed
