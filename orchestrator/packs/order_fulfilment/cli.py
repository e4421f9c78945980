"""The order pack's commands: ``saga order`` and ``saga stock``."""

from __future__ import annotations

import argparse
import sys
import uuid

from pydantic import ValidationError

from contracts import OrderLine, PlaceOrder
from orchestrator.client import SagaClient
from orchestrator.packs.order_fulfilment.commands import restock
from orchestrator.packs.order_fulfilment.inventory_view import inventory_levels
from orchestrator.settings import Settings

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


async def cmd_stock(settings: Settings, args: argparse.Namespace) -> int:
    """Print stock levels as the inventory holds them; --add restocks through inventory."""
    async with SagaClient(settings, name="cli") as client:
        database = client.store.commits.database
        if args.add:
            for sku in args.skus:
                restock_id = await restock(client, sku, args.add, reason="saga stock --add")
                print(f"restock {restock_id}: +{args.add} {sku} sent to inventory")
        print(f"{'sku':<12} {'available':>9} {'reserved':>9} {'shipped':>9}")
        for sku in args.skus:
            lv = await inventory_levels(database, sku)
            print(f"{sku:<12} {lv.available:>9} {lv.reserved:>9} {lv.shipped:>9}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``order`` and ``stock``."""
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

    stock = sub.add_parser("stock", help="show stock levels (and --add units)")
    stock.add_argument("skus", nargs="+")
    stock.add_argument("--add", type=int, default=0, help="restock each SKU by this many")
    stock.set_defaults(run=cmd_stock)
