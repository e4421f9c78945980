"""``saga start | status | resume | publish``: any registered saga from a terminal."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from contracts import MalformedMessage, decode
from orchestrator.client import SagaClient
from orchestrator.ops.timeline import timeline_lines
from orchestrator.saga.state import EventType
from orchestrator.settings import Settings

__all__ = ["register"]


async def cmd_start(settings: Settings, args: argparse.Namespace) -> int:
    """Start a saga by name from a JSON file holding its start command's body."""
    registry = settings.registry()
    if args.name not in registry:
        print(
            f"no saga {args.name!r} is registered; registered: {', '.join(registry.names)}",
            file=sys.stderr,
        )
        return 2
    definition = (
        registry.get(args.name, args.version) if args.version else registry.latest(args.name)
    )
    try:
        raw = await asyncio.to_thread(Path(args.file).read_bytes)
    except OSError as e:
        print(f"cannot read {args.file}: {e}", file=sys.stderr)
        return 2
    try:
        command = decode(definition.start.TYPE, raw)
    except MalformedMessage as e:
        print(f"{args.file} is not a valid {definition.start.TYPE}: {e.detail}", file=sys.stderr)
        return 2
    async with SagaClient(settings, name="cli") as client:
        saga_id = await client.start(command, saga_id=args.saga_id, version=args.version)
        print(f"saga {saga_id} started ({definition.key})")
        if args.no_wait:
            return 0
        state = await client.follow(saga_id, print, timeout=args.timeout)
        return 0 if state.status is not None and state.status.settled else 1


async def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """Print a saga's state and timeline."""
    async with SagaClient(settings, name="cli") as client:
        history = await client.history(args.saga_id)
        if not history:
            if await client.pruned(args.saga_id):
                print(f"saga {args.saga_id} finished and its history was pruned", file=sys.stderr)
                return 1
            print(f"no saga {args.saga_id}", file=sys.stderr)
            return 1
        state = await client.state(args.saga_id)
    status = state.status.value if state.status else "?"
    print(f"saga {state.saga_id} ({state.saga_name}): {status}")
    if state.step:
        print(f"  current step: {state.step} (attempt {state.attempt})")
    if state.deadline:
        print(f"  deadline: {state.deadline.isoformat()}")
    if state.reason:
        print(f"  failure: {state.failed_step}: {state.reason}")
    if state.parked_reason:
        print(f"  parked: {state.parked_reason}  (resume with: saga resume {state.saga_id})")
    for line in timeline_lines(history):
        print("  " + line)
    return 0


async def cmd_resume(settings: Settings, args: argparse.Namespace) -> int:
    """Resume a parked saga's compensation."""
    async with SagaClient(settings, name="cli") as client:
        commit = await client.resume(args.saga_id)
        if commit is None:
            state = await client.state(args.saga_id)
            print(
                f"saga {args.saga_id} is {state.status or 'unknown'}, not parked "
                "(compensation_failed or completing_stuck): nothing to resume",
                file=sys.stderr,
            )
            return 1
        resumed = [e for e in commit.events if e.type is not EventType.SAGA_RESUMED]
        doing = (
            "retrying" if resumed and resumed[0].type is EventType.STEP_STARTED else "compensating"
        )
        steps = ", ".join(e.step or "" for e in resumed)
        print(f"saga {args.saga_id} resumed: {doing} {steps}")
        if not args.no_wait:
            await client.follow(args.saga_id, print, timeout=args.timeout)
    return 0


async def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    """Publish a raw command from a JSON file: {"type": ..., "body": {...}, "correlation_id"}."""
    try:
        raw: Any = json.loads(await asyncio.to_thread(Path(args.file).read_text))
    except (OSError, json.JSONDecodeError) as e:
        print(f"cannot read {args.file}: {e}", file=sys.stderr)
        return 2
    if not isinstance(raw, dict) or "type" not in raw or not isinstance(raw.get("body"), dict):
        print(
            'the file must hold {"type": "<type name>", "body": {...}, '
            '"correlation_id": "<saga id>" (optional)}',
            file=sys.stderr,
        )
        return 2
    correlation_id = str(raw.get("correlation_id") or uuid.uuid4().hex)
    async with SagaClient(settings, name="cli") as client:
        try:
            message_id = await client.publish_raw(
                raw["type"],
                raw["body"],
                correlation_id=correlation_id,
                message_id=raw.get("message_id"),
            )
        except MalformedMessage as e:
            print(f"not published: {e}", file=sys.stderr)
            return 2
    print(f"published {raw['type']} message {message_id} (correlation id {correlation_id})")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the generic saga commands."""
    start = sub.add_parser("start", help="start any registered saga from a JSON file")
    start.add_argument("name", help="the saga's name, e.g. order_fulfilment")
    start.add_argument("file", help="JSON body of the saga's start command")
    start.add_argument("--version", type=int, default=None, help="definition version")
    start.add_argument("--saga-id", default=None, help="choose the saga id (default: random)")
    start.add_argument("--no-wait", action="store_true", help="do not follow the saga")
    start.add_argument("--timeout", type=float, default=60.0)
    start.set_defaults(run=cmd_start)

    status = sub.add_parser("status", help="show a saga and its timeline")
    status.add_argument("saga_id")
    status.set_defaults(run=cmd_status)

    resume = sub.add_parser(
        "resume", help="resume a parked saga (compensation_failed or completing_stuck)"
    )
    resume.add_argument("saga_id")
    resume.add_argument("--no-wait", action="store_true")
    resume.add_argument("--timeout", type=float, default=60.0)
    resume.set_defaults(run=cmd_resume)

    publish = sub.add_parser("publish", help="publish a raw command from a JSON file")
    publish.add_argument("file", help='JSON: {"type": ..., "body": {...}, "correlation_id": ...}')
    publish.set_defaults(run=cmd_publish)
