"""Whether an order may be returned: pure, over the order saga's stored commits.

The returns service reads the original saga from the event store (the saga's commits)
rather than from a read-side summary: the store is the source of truth, a saga is
completed there before its outcome is published, and it needs no read side running.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from orchestrator.saga.state import EventType, Status, replay

if TYPE_CHECKING:
    from contracts import AcceptReturn
    from orchestrator.saga.commits import Commit

__all__ = ["ReturnPolicy"]


@dataclass(frozen=True, kw_only=True)
class ReturnPolicy:
    """What may be returned: lines of a completed ``order_saga`` saga, within ``window``
    of its completion (``RETURNS_WINDOW_DAYS``; 0 closes it at once)."""

    order_saga: str = "order_fulfilment"
    window: timedelta = timedelta(days=30)

    def refusal(self, order: Sequence[Commit], cmd: AcceptReturn, *, now: datetime) -> str:
        """Why this return is refused ('' if it is returnable). Whether another return
        of the order exists is the store's to say, atomically."""
        saga_id = cmd.order_saga_id
        if not order:
            return f"no saga {saga_id} is known"
        state = replay(saga_id, ((c.version, c.causation_id, c.events) for c in order))
        if state.saga_name != self.order_saga:
            return f"saga {saga_id} is a {state.saga_name or 'unnamed'} saga, not an order"
        if state.status is not Status.COMPLETED:
            status = state.status.value if state.status else "not started"
            return f"order saga {saga_id} is {status}, not completed"
        completed = [e.at for c in order for e in c.events if e.type is EventType.SAGA_COMPLETED]
        closes = completed[0] + self.window
        if now > closes:
            return f"the return window closed at {closes:%Y-%m-%d %H:%M:%S} UTC"
        return _lines_refusal(state.data, cmd) or _refund_refusal(state.data, cmd)


def _lines_refusal(order: Mapping[str, object], cmd: AcceptReturn) -> str:
    """Every returned line was on the order, at most in the quantity ordered (an order
    start without ``lines`` allows none)."""
    lines = order.get("lines")
    ordered: dict[str, int] = {}
    for line in lines if isinstance(lines, list) else []:
        if isinstance(line, Mapping) and "sku" in line:
            ordered[str(line["sku"])] = int(line.get("quantity", 0))
    for line in cmd.lines:
        if line.quantity > ordered.get(line.sku, 0):
            return f"{line.quantity} x {line.sku} returned, {ordered.get(line.sku, 0)} on the order"
    return ""


def _refund_refusal(order: Mapping[str, object], cmd: AcceptReturn) -> str:
    """The refund asked is at most the order's amount, in the order's currency: what
    payment would refuse is refused here, before any goods move (an order start without
    ``amount_cents`` leaves it to payment)."""
    amount, currency = order.get("amount_cents"), order.get("currency") or "EUR"
    if cmd.currency is not None and cmd.currency != currency:
        return f"the order was paid in {currency}, a refund in {cmd.currency} was asked"
    if cmd.refund_cents is not None and isinstance(amount, int) and cmd.refund_cents > amount:
        return f"a refund of {cmd.refund_cents} cents was asked, the order was {amount}"
    return ""
