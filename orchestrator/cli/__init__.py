"""saga: the operator's command line.

Connection settings come from the environment (AMQP_URL, MONGODB_URL, SAGA_NAMESPACE,
SAGA_DATABASE). When MONGODB_URL is unset, the URL the development runner wrote to
``.data/dev.env`` is used, so the CLI finds the embedded store ``saga-dev`` started.
"""

# Each command group lives in its own module with a ``register(subparsers)`` function;
# a command sets ``run``, an ``async (settings, args) -> exit code`` function.

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from orchestrator.cli import (
    asyncapi,
    bench,
    dlq,
    harness,
    history,
    outbox,
    projections,
    sagas,
    topology,
)
from orchestrator.errors import OrchestratorError
from orchestrator.settings import ConfigError, Settings

__all__ = ["Command", "build_parser", "load_settings", "main"]

DEV_ENV = Path(".data/dev.env")
Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]
GROUPS = (sagas, projections, dlq, outbox, history, harness, bench, asyncapi, topology)


def load_settings() -> Settings:
    """Settings from the environment, with the dev runner's MongoDB URL as a fallback."""
    env = dict(os.environ)
    if not env.get("MONGODB_URL") and DEV_ENV.exists():
        for line in DEV_ENV.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "MONGODB_URL":
                env["MONGODB_URL"] = value.strip()
    return Settings.from_env(env)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command group."""
    parser = argparse.ArgumentParser(
        prog="saga", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    try:
        packs = load_settings().packs()
    except ConfigError:
        packs = ()  # reported when a command runs; the generic commands still show
    for pack in packs:
        register = pack.part("cli")
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point ``saga``."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as e:
        sys.exit(f"configuration error: {e}")
    run: Command = args.run
    try:
        sys.exit(asyncio.run(run(settings, args)))
    except ConfigError as e:
        sys.exit(f"configuration error: {e}")
    except OrchestratorError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit(130)
