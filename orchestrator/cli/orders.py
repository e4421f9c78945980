"""``saga order | status | stock | resume | publish``: sagas and stock from a terminal."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contracts import MalformedMessage, OrderLine, PlaceOrder
from orchestrator.client import SagaClient
from orchestrator.settings import Settings
from orchestrator.timeline import timeline_lines

__all__ = ["parse_line", "register"]


def parse_line(text: str) -> OrderLine:
    """``apple:2`` -> OrderLine(sku='apple', quantity=2)."""
    sku, sep, qty = text.partition(":")
    if not sep:
        qty = "1"
    try:
        return OrderLine(sku=sku, quantity=int(qty))
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, x['loc']))} {x['msg']}" for x in e.errors())
        raise argparse.ArgumentTypeError(f"{text!r}: {problems}") from None
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not SKU:QUANTITY (e.g. apple:2)") from None


async def cmd_order(settings: Settings, args: argparse.Namespace) -> int:
    """Place an order and (unless --no-wait) print its saga as it runs."""
    try:
        order = PlaceOrder(
            order_id=args.order_id or f"cli-{uuid.uuid4().hex[:10]}",
            customer_id=args.customer,
            lines=tuple(args.lines),
            amount_cents=args.amount,
            ship_to=args.ship_to,
        )
    except ValidationError as e:
        print(f"invalid order: {e}", file=sys.stderr)
        return 2
    async with SagaClient(settings, name="cli") as client:
        saga_id = await client.start(order, saga_id=args.saga_id)
        print(f"saga {saga_id} started for order {order.order_id}")
        if args.no_wait:
            return 0
        state = await client.follow(saga_id, print, timeout=args.timeout)
        return 0 if state.status is not None and state.status.settled else 1


async def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """Print a saga's state and timeline."""
    async with SagaClient(settings, name="cli") as client:
        history = await client.history(args.saga_id)
        if not history:
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


async def cmd_stock(settings: Settings, args: argparse.Namespace) -> int:
    """Print stock levels as the inventory holds them; --add restocks through inventory."""
    from participants.inventory.store import MongoInventory  # noqa: PLC0415

    async with SagaClient(settings, name="cli") as client:
        inventory = MongoInventory(database=client.store.commits.database)
        if args.add:
            for sku in args.skus:
                restock_id = await client.restock(sku, args.add, reason="saga stock --add")
                print(f"restock {restock_id}: +{args.add} {sku} sent to inventory")
        print(f"{'sku':<12} {'available':>9} {'reserved':>9} {'shipped':>9}")
        for sku in args.skus:
            lv = await inventory.levels(sku)
            print(f"{sku:<12} {lv.available:>9} {lv.reserved:>9} {lv.shipped:>9}")
    return 0


async def cmd_resume(settings: Settings, args: argparse.Namespace) -> int:
    """Resume a parked saga's compensation."""
    async with SagaClient(settings, name="cli") as client:
        commit = await client.resume(args.saga_id)
        if commit is None:
            state = await client.state(args.saga_id)
            print(
                f"saga {args.saga_id} is {state.status or 'unknown'}, not parked: "
                "nothing to resume",
                file=sys.stderr,
            )
            return 1
        print(f"saga {args.saga_id} resumed: compensating {commit.events[-1].step}")
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
    """Add the saga and stock commands."""
    order = sub.add_parser("order", help="place an order (starts an order saga)")
    order.add_argument("lines", nargs="+", type=parse_line, metavar="SKU:QTY")
    order.add_argument("--amount", type=int, default=1_000, help="total in cents (default 1000)")
    order.add_argument("--customer", default="customer-cli")
    order.add_argument("--ship-to", default="1 Main Street, Springfield")
    order.add_argument("--order-id", default=None)
    order.add_argument("--saga-id", default=None, help="choose the saga id (default: random)")
    order.add_argument("--no-wait", action="store_true", help="do not follow the saga")
    order.add_argument("--timeout", type=float, default=60.0)
    order.set_defaults(run=cmd_order)

    status = sub.add_parser("status", help="show a saga and its timeline")
    status.add_argument("saga_id")
    status.set_defaults(run=cmd_status)

    stock = sub.add_parser("stock", help="show stock levels (and --add units)")
    stock.add_argument("skus", nargs="+")
    stock.add_argument("--add", type=int, default=0, help="restock each SKU by this many")
    stock.set_defaults(run=cmd_stock)

    resume = sub.add_parser("resume", help="resume a parked (compensation_failed) saga")
    resume.add_argument("saga_id")
    resume.add_argument("--no-wait", action="store_true")
    resume.add_argument("--timeout", type=float, default=60.0)
    resume.set_defaults(run=cmd_resume)

    publish = sub.add_parser("publish", help="publish a raw command from a JSON file")
    publish.add_argument("file", help='JSON: {"type": ..., "body": {...}, "correlation_id": ...}')
    publish.set_defaults(run=cmd_publish)
