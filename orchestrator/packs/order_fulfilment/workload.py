"""The order pack's benchmark workload: orders that always complete.

Options (``saga bench --workload-option KEY=VALUE``; ``--skus`` and ``--lines`` are
shortcuts): ``skus`` (100), the SKUs the orders draw from, each stocked with more than
any run can use; ``lines`` (1), the order lines (SKUs) per order, one unit each.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from contracts import OrderLine, PlaceOrder
from orchestrator.dev.bench.workloads import parse_options
from orchestrator.packs.order_fulfilment.definition import ORDER_SAGAS, PlaceOrderInParallel
from orchestrator.packs.order_fulfilment.inventory_view import set_stock

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from orchestrator.dev.bench.workloads import BenchContext, Workload

__all__ = ["OrderWorkload", "workload"]

DEFAULTS: Mapping[str, Any] = {"skus": 100, "lines": 1}


@dataclass(frozen=True, kw_only=True)
class OrderWorkload:
    """The orders the benchmark places: ``lines`` SKUs of ``skus``, one unit each, an
    amount payment accepts and an address shipping delivers to, so every saga completes.
    ``saga`` picks the order saga they start (``order_fulfilment_parallel``: stock and
    payment in parallel)."""

    skus: int = 100
    lines: int = 1
    stock: int = 1_000_000_000
    saga: str = "order_fulfilment"
    seeds_with: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.saga not in ORDER_SAGAS:
            raise ValueError(f"no order saga {self.saga!r}; one of {', '.join(ORDER_SAGAS)}")
        if self.skus < 1 or not 1 <= self.lines <= self.skus:
            raise ValueError(f"need skus >= 1 and 1 <= lines <= skus (skus={self.skus}, "
                             f"lines={self.lines})")  # fmt: skip

    def options(self) -> dict[str, Any]:
        """The options in effect."""
        return {"skus": self.skus, "lines": self.lines}

    def sku_names(self) -> list[str]:
        """Every SKU the orders draw from."""
        return [f"bench-{i:04d}" for i in range(self.skus)]

    def start(self, saga_id: str) -> PlaceOrder:
        """The order of one saga."""
        skus = random.sample(self.sku_names(), self.lines)
        start = PlaceOrderInParallel if self.saga == "order_fulfilment_parallel" else PlaceOrder
        return start(
            order_id=f"bench-{saga_id[:16]}",
            customer_id="bench-customer",
            lines=tuple(OrderLine(sku=s, quantity=1) for s in skus),
            amount_cents=1_999,
            ship_to="1 Main Street, Springfield",
        )

    async def seed(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        """Stock every SKU with more than any run can use."""
        for sku in self.sku_names():
            await set_stock(database, sku, self.stock)

    async def prepare(self, bench: BenchContext) -> None:
        """Nothing: the stock is all an order needs."""

    async def reserve(self, concurrency: int, seconds: float) -> None:
        """Nothing: the stock lasts for any run."""

    def notes(self) -> list[str]:
        """None."""
        return []


def workload(saga: str = "order_fulfilment", options: Mapping[str, str] | None = None) -> Workload:
    """The workload ``saga bench --saga order_fulfilment|order_fulfilment_parallel`` drives."""
    return OrderWorkload(saga=saga, **parse_options(options or {}, DEFAULTS))
