"""The order-fulfilment saga pack: reserve stock, authorize payment, schedule shipment.

Two sagas: ``order_fulfilment`` (the steps one after the other; v2, the newest, adds the
retriable tail: capture the payment, ship the stock; v1 stays for sagas in flight on it)
and its variant ``order_fulfilment_parallel`` (stock and payment in parallel, then the
shipment; one version, without the tail).

Its participants are ``participants.inventory``, ``participants.payment`` and
``participants.shipping``; inventory and payment also settle the sagas that completed
without the tail (order_fulfilment v1, the parallel variant): they ship the reserved
stock and capture the payment from the outcome events. The pack adds the stock
projection and low-stock notifications to the read side, ``/orders`` and ``/stock`` to
the API, ``saga order`` and ``saga stock`` to the CLI, stock and payment invariants to
the harness, and its workload to the benchmark.
"""

from orchestrator.messaging.topology import QueueSpec
from orchestrator.packs import SagaPack
from orchestrator.packs.order_fulfilment.definition import (
    ORDER_FULFILMENT,
    ORDER_FULFILMENT_PARALLEL,
    ORDER_FULFILMENT_V2,
    ORDER_SAGAS,
    PlaceOrderInParallel,
    order_fulfilment,
    order_fulfilment_parallel,
    order_fulfilment_v2,
)

__all__ = [
    "ORDER_FULFILMENT",
    "ORDER_FULFILMENT_PARALLEL",
    "ORDER_FULFILMENT_V2",
    "PACK",
    "PlaceOrderInParallel",
    "order_fulfilment",
    "order_fulfilment_parallel",
    "order_fulfilment_v2",
]

_HERE = "orchestrator.packs.order_fulfilment"
_COMPLETED = tuple(f"{saga}.completed" for saga in ORDER_SAGAS)
_STOCK_EVENTS = (*(f"{saga}.progressed" for saga in ORDER_SAGAS), "inventory.restocked")

PACK = SagaPack(
    name="order_fulfilment",
    # v1 stays beside v2 so that sagas started on v1 finish on v1 (new ones take v2).
    definitions=(ORDER_FULFILMENT, ORDER_FULFILMENT_V2, ORDER_FULFILMENT_PARALLEL),
    description="reserve stock, authorize payment, schedule the shipment",
    services={
        "inventory": "participants.inventory",
        "payment": "participants.payment",
        "shipping": "participants.shipping",
    },
    queues=(
        QueueSpec(
            suffix="inventory.events",
            bindings=_COMPLETED,
            purpose="completed orders whose reserved stock the inventory ships",
        ),
        QueueSpec(
            suffix="payment.events",
            bindings=_COMPLETED,
            purpose="completed orders whose payment is captured",
        ),
        QueueSpec(
            suffix="projections.stock",
            bindings=_STOCK_EVENTS,
            purpose="stock movements for the stock-level projection",
        ),
        QueueSpec(
            suffix="notifications.events",
            bindings=_STOCK_EVENTS,
            purpose="stock movements checked for low-stock notifications",
        ),
    ),
    api=f"{_HERE}.api:router",
    cli=f"{_HERE}.cli:register",
    readside=f"{_HERE}.readside:install",
    invariants=f"{_HERE}.invariants:check",
    workload=f"{_HERE}.workload:workload",
    scenarios=f"{_HERE}.scenarios:SCENARIOS",
    seed=f"{_HERE}.seed:seed",
)
