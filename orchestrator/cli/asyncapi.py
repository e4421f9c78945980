"""``saga asyncapi [--out FILE]``: the AsyncAPI 3.0 document of this deployment."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from orchestrator.messaging.asyncapi import deployment_asyncapi
from orchestrator.settings import Settings

__all__ = ["register"]


async def cmd_asyncapi(settings: Settings, args: argparse.Namespace) -> int:
    """Write the document (generated from the topology and the registered sagas)."""
    text = json.dumps(deployment_asyncapi(settings), indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
        return 0
    _write(Path(args.out), text)
    print(f"wrote {args.out} ({len(text)} bytes)", file=sys.stderr)
    return 0


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``saga asyncapi``."""
    doc = sub.add_parser(
        "asyncapi", help="the AsyncAPI 3.0 document of every contract and channel (JSON)"
    )
    doc.add_argument("--out", metavar="FILE", help="write it to FILE instead of stdout")
    doc.set_defaults(run=cmd_asyncapi)
