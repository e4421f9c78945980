"""``saga``: start orders and look at sagas and stock from a terminal.

Connection settings come from the environment (AMQP_URL, MONGODB_URL, SAGA_NAMESPACE,
SAGA_DATABASE). When MONGODB_URL is unset, the URL the development runner wrote to
``.data/dev.env`` is used, so the CLI finds the embedded store ``saga-dev`` started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import ValidationError

from contracts import OrderLine, PlaceOrder
from orchestrator.client import SagaClient
from orchestrator.errors import OrchestratorError
from orchestrator.settings import ConfigError, Settings
from orchestrator.timeline import timeline_lines

__all__ = ["main"]

DEV_ENV = Path(".data/dev.env")


def load_settings() -> Settings:
    """Settings from the environment, with the dev runner's MongoDB URL as a fallback."""
    env = dict(os.environ)
    if not env.get("MONGODB_URL") and DEV_ENV.exists():
        for line in DEV_ENV.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "MONGODB_URL":
                env["MONGODB_URL"] = value.strip()
    return Settings.from_env(env)


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


async def cmd_order(client: SagaClient, args: argparse.Namespace) -> int:
    """Place an order and (unless --no-wait) print its saga as it runs."""
    from orchestrator.devrun import follow  # noqa: PLC0415 - shares the live printer

    try:
        order = PlaceOrder(
            order_id=args.order_id or f"cli-{os.getpid()}-{id(args) % 10000}",
            customer_id=args.customer,
            lines=tuple(args.lines),
            amount_cents=args.amount,
            ship_to=args.ship_to,
        )
    except ValidationError as e:
        print(f"invalid order: {e}", file=sys.stderr)
        return 2
    saga_id = await client.start(order, saga_id=args.saga_id)
    print(f"saga {saga_id} started for order {order.order_id}")
    if not args.no_wait:
        await follow(client, saga_id, timeout=args.timeout)
    return 0


async def cmd_status(client: SagaClient, args: argparse.Namespace) -> int:
    """Print a saga's state and timeline."""
    history = await client.history(args.saga_id)
    if not history:
        print(f"no saga {args.saga_id}", file=sys.stderr)
        return 1
    state = await client.state(args.saga_id)
    print(
        f"saga {state.saga_id} ({state.saga_name}): {state.status.value if state.status else '?'}"
        + (f", step {state.step}" if state.step else "")
        + (f", reason: {state.reason}" if state.reason else "")
    )
    for line in timeline_lines(history):
        print("  " + line)
    return 0


async def cmd_stock(client: SagaClient, args: argparse.Namespace) -> int:
    """Print stock levels."""
    from participants.inventory.store import MongoInventory  # noqa: PLC0415

    inventory = MongoInventory(database=client.store.commits.database)
    print(f"{'sku':<12} {'available':>9} {'reserved':>9} {'shipped':>9}")
    for sku in args.skus:
        if args.add:
            await inventory.restock(sku, args.add)
        lv = await inventory.levels(sku)
        print(f"{sku:<12} {lv.available:>9} {lv.reserved:>9} {lv.shipped:>9}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    parser = argparse.ArgumentParser(
        prog="saga", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
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
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point ``saga``."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        settings.require_mongodb_url()
    except ConfigError as e:
        sys.exit(f"configuration error: {e}")
    run: Callable[[SagaClient, argparse.Namespace], Awaitable[int]] = args.run

    async def go() -> int:
        async with SagaClient(settings, name="cli") as client:
            return await run(client, args)

    try:
        sys.exit(asyncio.run(go()))
    except OrchestratorError as e:
        sys.exit(f"error: {e}")
