"""The return pack's benchmark workload: returns of completed orders, which all complete.

A return needs an order saga that completed, whose stock was shipped and whose payment
was captured, and an order can be returned once. So :meth:`ReturnWorkload.prepare`
places ``templates`` orders through the real order saga (its contracts only, none of
the order pack's code) and waits until each is shipped and captured; then before each
measured level :meth:`~ReturnWorkload.reserve` clones them until enough orders wait to
be returned: every document the system wrote for them, under fresh saga ids, as ``saga
bench --history`` does (:mod:`orchestrator.dev.bench.history`), and the clones' units
moved from available to shipped on the SKUs' stock documents (which clones share).

Options (``saga bench --saga order_return --workload-option KEY=VALUE``): ``skus`` (50)
and ``lines`` (1), the SKUs the orders draw from and the lines per order (template ``i``
orders SKUs ``i, i+1, ...``, one unit each; a return takes all of it back and refunds
``refund_cents``, 500, of the 1,999 paid); ``templates`` (50), the real orders placed;
``rate`` (300), the most returns per second a level is prepared for (after the first
level, at most twice what the previous one did, scaled by the concurrency). A level that starts
more returns than were prepared returns orders again, which the returns service refuses;
the report says so.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from contracts import OrderLine, PlaceOrder, RequestReturn
from orchestrator.dev.bench.history import capture_templates, run_templates, seed_history
from orchestrator.dev.bench.workloads import parse_options

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from orchestrator.dev.bench.history import Template
    from orchestrator.dev.bench.workloads import BenchContext, Workload

__all__ = ["ReturnWorkload", "workload"]

Doc = dict[str, Any]
DEFAULTS: Mapping[str, Any] = {"skus": 50, "lines": 1, "templates": 50, "rate": 300.0}
ORDER_SAGA = "order_fulfilment"
STOCK = "inventory_stock"
PAID_CENTS = 1_999
REFUND_CENTS = 500
MIN_SAGA_SECONDS = 0.01
"""No return completes faster than this: a level of N in flight starts at most N / this
per second (so one in flight needs far fewer orders than the rate)."""


@dataclass(frozen=True, kw_only=True)
class Returnable:
    """An order waiting to be returned."""

    saga_id: str
    lines: tuple[OrderLine, ...]


class ReturnWorkload:
    """Returns of the orders it prepared, one per order."""

    saga = "order_return"
    seeds_with = (ORDER_SAGA,)

    def __init__(
        self, *, skus: int = 50, lines: int = 1, templates: int = 50, rate: float = 300.0
    ) -> None:
        if skus < 1 or not 1 <= lines <= skus or templates < 1 or rate <= 0:
            raise ValueError(
                "need skus >= 1, 1 <= lines <= skus, templates >= 1 and rate > 0 "
                f"(skus={skus}, lines={lines}, templates={templates}, rate={rate})"
            )
        self.skus, self.lines, self.templates, self.rate = skus, lines, templates, rate
        self._database: AsyncDatabase[Doc] | None = None
        self._templates: list[Template] = []
        self._template_lines: list[tuple[OrderLine, ...]] = []
        self._orders: list[Returnable] = []
        self._clones = 0
        self._next = 0
        self._level: tuple[int, float, int] | None = None
        """The last level prepared: its concurrency, seconds, and returns started before."""

    def options(self) -> dict[str, Any]:
        """The options in effect."""
        return {"skus": self.skus, "lines": self.lines, "templates": self.templates,
                "rate": self.rate}  # fmt: skip

    def sku_names(self) -> list[str]:
        """Every SKU the orders draw from."""
        return [f"bench-return-{i:04d}" for i in range(self.skus)]

    def order(self, index: int, saga_id: str) -> PlaceOrder:
        """Template order ``index``: ``lines`` consecutive SKUs, one unit each."""
        names = self.sku_names()
        return PlaceOrder(
            order_id=f"bench-{saga_id[:16]}",
            customer_id="bench-customer",
            lines=tuple(
                OrderLine(sku=names[(index + k) % self.skus], quantity=1) for k in range(self.lines)
            ),
            amount_cents=PAID_CENTS,
            ship_to="1 Main Street, Springfield",
        )

    async def seed(self, database: AsyncDatabase[Doc]) -> None:
        """Stock every SKU with more than any run can ship (the inventory's documents, as
        the inventory writes them)."""
        for sku in self.sku_names():
            await database[STOCK].update_one(
                {"_id": sku},
                {"$set": {"available": 10**9, "reserved": 0, "shipped": 0, "holds": {}}},
                upsert=True,
            )

    async def prepare(self, bench: BenchContext) -> None:
        """Place the template orders and wait until each is shipped and captured."""
        self._database = bench.database
        starts: dict[str, PlaceOrder] = {}

        def start(saga_id: str) -> PlaceOrder:
            starts[saga_id] = self.order(len(starts), saga_id)
            return starts[saga_id]

        ids = await run_templates(
            bench.settings, start, count=self.templates, read_side=bench.read_side
        )
        await _until_settled(bench.database, ids)
        self._templates = await capture_templates(bench.database, ids)
        by_id = {t.saga_id: i for i, t in enumerate(self._templates)}
        if len(by_id) != len(ids):
            raise RuntimeError("some template orders left no documents to clone")
        self._template_lines = [starts[t.saga_id].lines for t in self._templates]
        self._orders = [Returnable(saga_id=s, lines=starts[s].lines) for s in by_id]

    async def reserve(self, concurrency: int, seconds: float) -> None:
        """Clone orders until the level (``concurrency`` in flight for ``seconds``) can
        start a return of a fresh order each time (see :meth:`most_per_second`)."""
        need = math.ceil(self.most_per_second(concurrency) * seconds) + concurrency
        self._level = (concurrency, seconds, self._next)
        need -= len(self._orders) - self._next
        if need <= 0:
            return
        assert self._database is not None, "prepare() first"
        seeded = await seed_history(self._database, self._templates, need, first=self._clones)
        self._clones += need
        shipped: dict[str, int] = {}
        for i, saga_id in enumerate(seeded.saga_ids):
            lines = self._template_lines[i % len(self._templates)]
            self._orders.append(Returnable(saga_id=saga_id, lines=lines))
            for line in lines:
                shipped[line.sku] = shipped.get(line.sku, 0) + line.quantity
        for sku, units in shipped.items():  # as if those orders had shipped for real
            await self._database[STOCK].update_one(
                {"_id": sku}, {"$inc": {"available": -units, "shipped": units}}
            )

    def most_per_second(self, concurrency: int) -> float:
        """The most returns per second a level of ``concurrency`` in flight can start:
        at most ``rate``, at most ``concurrency / MIN_SAGA_SECONDS``, and, after a level
        ran, at most twice its rate scaled by the concurrencies (a saga's latency rarely
        falls when more run at once: Little's law; twice, as group commit may shorten it
        a little)."""
        most = min(self.rate, concurrency / MIN_SAGA_SECONDS)
        if self._level is not None:
            before, seconds, first = self._level
            observed = (self._next - first) / seconds if seconds > 0 else math.inf
            most = min(most, 2 * observed * concurrency / before)
        return most

    def start(self, saga_id: str) -> RequestReturn:
        """A return of the next order waiting (once they ran out: of one returned before,
        which the returns service refuses)."""
        if not self._orders:
            raise RuntimeError("prepare() the return workload first")
        order = self._orders[self._next % len(self._orders)]
        self._next += 1
        return RequestReturn(
            return_id=f"bench-{saga_id[:16]}",
            order_saga_id=order.saga_id,
            lines=order.lines,
            refund_cents=REFUND_CENTS,
            reason="bench",
        )

    def notes(self) -> list[str]:
        """Whether it ran out of orders."""
        again = self._next - len(self._orders)
        if again <= 0:
            placed = f"{len(self._templates)} placed for real, the rest clones"
            return [f"order_return: {self._next} returns of {len(self._orders)} orders ({placed})"]
        return [
            f"order_return: ran out of orders: {again} of {self._next} returns were of orders "
            "returned before and were refused; raise --workload-option rate= (now "
            f"{self.rate:g}/s)"
        ]


async def _until_settled(
    database: AsyncDatabase[Doc], saga_ids: list[str], *, timeout: float = 60.0
) -> None:
    """Wait until every order's stock is shipped and its payment captured."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        shipped = await _count(database, "inventory_reservations", saga_ids, "shipped")
        captured = await _count(database, "payment_authorizations", saga_ids, "captured")
        if shipped == captured == len(saga_ids):
            return
        if loop.time() > deadline:
            raise TimeoutError(
                f"of {len(saga_ids)} template orders, {shipped} shipped and {captured} "
                f"captured after {timeout:g} s"
            )
        await asyncio.sleep(0.1)


async def _count(database: AsyncDatabase[Doc], name: str, ids: list[str], status: str) -> int:
    return await database[name].count_documents({"_id": {"$in": ids}, "status": status})


def workload(saga: str = "order_return", options: Mapping[str, str] | None = None) -> Workload:
    """The workload ``saga bench --saga order_return`` drives."""
    if saga != "order_return":
        raise ValueError(f"the return pack's workload runs order_return, not {saga!r}")
    return ReturnWorkload(**parse_options(options or {}, DEFAULTS))
