"""The order-return saga pack: accept the return, take the goods back, refund.

One saga, ``order_return``, in two versions: v2, the newest, takes the goods back as
its pivot and then drives the refund forward (retriable: never compensated; refused or
out of budget, the return is parked as ``completing_stuck`` for an operator); v1, every
step compensated, stays registered so that returns started on v1 finish on v1.

A second saga on the same engine, needing nothing of the order pack's code: its start
command (``order_returns.request_return.v1``) names a completed order-fulfilment saga by
its id. Its participants are ``participants.returns`` (accepts a return of a completed
order, once, within ``RETURNS_WINDOW_DAYS``), ``participants.inventory`` (units go from
shipped back to available) and ``participants.payment`` (refunds at most what was
captured). Its events reach two queues other packs declare (their bindings add up):
``inventory.events`` (a completed return's take-back is final: the inventory settles it)
and the stock projection's ``projections.stock`` and ``notifications.events`` (units
taken back are available again; an undone take-back ships them back). The pack adds
its invariants and scenarios to the harness, its workload
(returns of orders it prepares) to the benchmark and a sample return to ``saga-dev``.
"""

from orchestrator.messaging.topology import QueueSpec
from orchestrator.packs import SagaPack
from orchestrator.packs.order_return.definition import (
    ORDER_RETURN,
    ORDER_RETURN_V2,
    order_return,
    order_return_v2,
)

__all__ = ["ORDER_RETURN", "ORDER_RETURN_V2", "PACK", "order_return", "order_return_v2"]

_HERE = "orchestrator.packs.order_return"
_NAMES = tuple(dict.fromkeys(d.name for d in (ORDER_RETURN, ORDER_RETURN_V2)))
_COMPLETED = tuple(f"{saga}.completed" for saga in _NAMES)
_PROGRESS = tuple(f"{saga}.progressed" for saga in _NAMES)

PACK = SagaPack(
    name="order_return",
    # v1 stays beside v2 so that returns started on v1 finish on v1 (new ones take v2).
    definitions=(ORDER_RETURN, ORDER_RETURN_V2),
    description="accept the return, take the goods back into stock (the pivot), "
    "then refund the payment",
    services={
        "returns": "participants.returns",
        "inventory": "participants.inventory",
        "payment": "participants.payment",
    },
    queues=(
        QueueSpec(
            suffix="inventory.events",
            bindings=_COMPLETED,
            purpose="completed returns whose take-back the inventory settles",
        ),
        QueueSpec(
            suffix="projections.stock",
            bindings=_PROGRESS,
            purpose="units taken back (or their take-back undone) for the stock projection",
        ),
        QueueSpec(
            suffix="notifications.events",
            bindings=_PROGRESS,
            purpose="units taken back, checked for low-stock notifications",
        ),
    ),
    invariants=f"{_HERE}.invariants:check",
    workload=f"{_HERE}.workload:workload",
    scenarios=f"{_HERE}.scenarios:SCENARIOS",
    seed=f"{_HERE}.seed:seed",
)
