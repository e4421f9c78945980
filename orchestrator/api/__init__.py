"""The HTTP API (FastAPI): ``saga-api`` serves it; OpenAPI docs at /docs."""

from __future__ import annotations

import sys

from orchestrator.api.app import create_app
from orchestrator.observability import tracing
from orchestrator.runtime.logs import configure_logging
from orchestrator.settings import ConfigError, Settings

__all__ = ["create_app", "main"]


def main() -> None:
    """Entry point ``saga-api``: serve on SAGA_API_HOST:SAGA_API_PORT (127.0.0.1:8000)."""
    import uvicorn  # noqa: PLC0415 - only the server process needs it

    try:
        settings = Settings.from_env()
        settings.require_mongodb_url()
        tracing.configure("api")  # tracing: before the app, which is then instrumented
        app = create_app(settings)
    except ConfigError as e:
        sys.exit(f"configuration error: {e}")
    configure_logging("api", fmt=settings.log_format)
    # log_config=None: uvicorn's loggers keep the JSON handler configure_logging set up.
    uvicorn.run(
        app, host=settings.api_host, port=settings.api_port, log_level="info", log_config=None
    )
