"""Whether a completed order saga already did, in its own steps, what the payment and
inventory services would otherwise do on its outcome event.

Order fulfilment v1 (and the parallel variant) completed at the shipment: capturing the
payment and shipping the stock were left to the payment and inventory services, as
reactions to ``<saga>.completed``. From v2 they are retriable steps of the saga itself
(``capture_payment``, ``ship_stock``), done before it completes. The event reaction
stays for the sagas that finish without those steps, and is skipped for the others: not
because it would double anything (capture and ship are idempotent per saga id, a repeat
finds them done) but because it would cost store round trips for nothing, and a store
outage could then dead-letter an event whose work was already done. The event lists the
steps the saga did, so the rule does not depend on version numbers.
"""

from __future__ import annotations

from contracts import SagaCompleted

__all__ = ["done_by_step"]


def done_by_step(event: SagaCompleted, step: str) -> bool:
    """Whether the saga that completed did ``step`` itself (an event without its steps
    came from a release whose order sagas had no such step)."""
    return step in event.steps
