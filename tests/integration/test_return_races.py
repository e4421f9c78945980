"""Returns that race the order they return: its stock is shipped by the inventory's
event consumer after the order saga completed, and other orders reserve stock at the
same time as a take-back moves it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from contracts import OrderLine
from orchestrator.saga.state import Status
from orchestrator.settings import Settings
from participants.inventory import MongoInventory
from participants.inventory.returns import StockReturns, TakeBackOutcome
from tests.helpers import eventually
from tests.integration.conftest import System, SystemFactory

pytestmark = pytest.mark.integration


def gate(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> asyncio.Event:
    """Hold every call of ``owner.name`` until the returned event is set."""
    opened = asyncio.Event()
    real: Callable[..., Any] = getattr(owner, name)

    async def gated(*args: Any, **kwargs: Any) -> Any:
        await opened.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(owner, name, gated)
    return opened


def called(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> asyncio.Event:
    """Set once ``owner.name`` has been called (and returned or raised) once."""
    done = asyncio.Event()
    real: Callable[..., Any] = getattr(owner, name)

    async def watched(*args: Any, **kwargs: Any) -> Any:
        try:
            return await real(*args, **kwargs)
        finally:
            done.set()

    monkeypatch.setattr(owner, name, watched)
    return done


async def test_a_return_right_after_the_order_completed_waits_for_its_stock_to_ship(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scenario (order saga v1, which ships from its outcome event; v2 completes only
    after its own ship_stock step): the order saga completes; the inventory's event
    consumer has not yet shipped its stock (a backlog on ``inventory.events``) when the
    return's
    TakeBackStock arrives on ``inventory.commands``. The take-back must wait for the
    shipment (as the refund waits for the capture), not refuse "not shipped" and cancel
    a return the returns service rightly accepted."""
    await system.inventory.inventory.set_stock("apple", 10)
    shipping = gate(monkeypatch, system.inventory.inventory, "ship")
    tried = called(monkeypatch, system.inventory.returns, "take_back")
    order = await system.order(("apple", 3), amount_cents=3_000, version=1)
    assert (await system.settle(order)).status is Status.COMPLETED

    saga_id = await system.return_order(order, ("apple", 2), refund_cents=2_000)
    await asyncio.wait_for(tried.wait(), timeout=30)
    shipping.set()  # the backlog clears: the order's stock ships
    state = await system.settle(saga_id)

    assert state.status is Status.COMPLETED, state.reason
    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (9, 0, 1)
    await system.invariants({"apple": 10}, [order, saga_id])


@pytest.fixture
async def db(settings: Settings) -> Any:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.require_mongodb_url(), tz_aware=True
    )
    yield client[settings.database]
    await client.close()


async def test_units_of_a_refused_take_back_are_never_available_to_other_orders(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scenario: a take-back of apple x2 and pear x1, where 2 apples but no pear were
    shipped. On main the apples move to available first; an order placed at that moment
    reserves them; then the pear is refused and the apples cannot go back (they are
    reserved): the take-back is retried until it dead-letters, and two apples that
    never came back are sold. All lines or none means none is ever visible."""
    stock = db["inventory_stock"]
    await stock.insert_one({"_id": "apple", "available": 0, "reserved": 0, "shipped": 2})
    await stock.insert_one({"_id": "pear", "available": 5, "reserved": 0, "shipped": 0})
    returns = StockReturns(database=db)
    inventory = MongoInventory(database=db)
    competing: list[bool] = []
    move_back = returns._move_back  # the moment between two lines' moves

    async def then_an_order_comes(return_saga: str, sku: str, units: int) -> bool:
        moved = await move_back(return_saga, sku, units)
        if sku == "apple":
            apples = (OrderLine(sku="apple", quantity=2),)
            competing.append((await inventory.reserve("other-order", apples)).reserved)
        return moved

    monkeypatch.setattr(returns, "_move_back", then_an_order_comes)
    lines = (OrderLine(sku="apple", quantity=2), OrderLine(sku="pear", quantity=1))

    outcome = await returns.take_back("return-1", lines)

    assert outcome == TakeBackOutcome(
        taken_back=False, reason="1 x pear were not shipped", sku="pear"
    )
    assert competing in ([], [False])  # no order got the apples
    apple = await inventory.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (0, 0, 2)
    assert await returns.taken_back("return-1") == {}


async def test_a_completed_return_leaves_nothing_in_the_skus_stock_document(
    system: System,
) -> None:
    """Scenario: an order of 3 apples completes and ships; a return of 2 completes. Once
    no compensation can follow (the return saga completed), the SKU's hot document holds
    nothing of that return: what it took back is recorded per return, elsewhere."""
    await system.inventory.inventory.set_stock("apple", 10)
    order = await system.completed_order(("apple", 3), amount_cents=3_000)
    saga_id = await system.return_order(order, ("apple", 2), refund_cents=2_000)
    assert (await system.settle(saga_id)).status is Status.COMPLETED
    stock = system.inventory.inventory.stock

    async def marks() -> dict[str, Any]:
        doc = await stock.find_one({"_id": "apple"}) or {}
        return dict(doc.get("taken_back") or {})

    await eventually(marks, until=lambda found: saga_id not in found, timeout=10, what="no mark")


async def test_a_refund_above_the_orders_amount_is_refused_before_any_goods_move(
    make_system: SystemFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scenario: an order of 3 apples for 30.00 completes; its return asks 30.01. On main
    the returns service accepts, the inventory puts 2 apples back on sale, another order
    reserves them at once, then payment refuses the refund: UndoTakeBack can never move
    the apples back (they are reserved), and the return saga parks. The refusal is
    knowable at acceptance (the order's amount and currency are in its stored start),
    so the return must fail there, before anything moves."""
    system = await make_system(step_timeout=3.0, step_max_sends=1, retry_delays=(0.1, 0.2))
    await system.inventory.inventory.set_stock("apple", 3)
    order = await system.completed_order(("apple", 3), amount_cents=3_000)
    returns = system.inventory.returns
    take_back = returns.take_back
    competitor: list[bool] = []

    async def then_the_apples_sell(*args: Any, **kwargs: Any) -> TakeBackOutcome:
        outcome = await take_back(*args, **kwargs)
        apples = (OrderLine(sku="apple", quantity=2),)
        competitor.append((await system.inventory.inventory.reserve("other", apples)).reserved)
        return outcome

    monkeypatch.setattr(returns, "take_back", then_the_apples_sell)

    saga_id = await system.return_order(order, ("apple", 2), refund_cents=3_001)
    state = await system.settle(saga_id)

    assert state.status is Status.FAILED, state
    assert state.failed_step == "accept_return"
    assert "3001" in (state.reason or "")
    assert competitor == []
    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (0, 0, 3)
