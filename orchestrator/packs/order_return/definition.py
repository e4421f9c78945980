"""The order-return saga: accept the return, take the goods back, refund the payment.

Version 2, the newest, makes the take-back the *pivot* (the goods are back on sale: the
return only moves forward from there) and the refund *retriable*: resent with backoff
until payment refunds, never compensated. A refund that payment refuses, or that keeps
failing past its budget, parks the saga as ``completing_stuck`` with the reason: the
goods stay taken back, no money has moved, and an operator resumes the saga once the
cause is fixed. Version 1 (every step compensated: a refused refund undoes the take-back,
then the acceptance) stays registered so that sagas started on v1 finish on v1.
"""

from __future__ import annotations

from contracts import (
    AcceptReturn,
    CancelRefund,
    CancelReturn,
    PaymentRefunded,
    RefundCancelled,
    RefundPayment,
    RefundRefused,
    RequestReturn,
    ReturnAccepted,
    ReturnCancelled,
    ReturnRefused,
    StockTakenBack,
    TakeBackRefused,
    TakeBackStock,
    TakeBackUndone,
    UndoTakeBack,
)
from orchestrator.saga.definition import Retry, SagaDefinition, Step

__all__ = ["ORDER_RETURN", "ORDER_RETURN_V2", "REFUND_RETRY", "order_return", "order_return_v2"]

REFUND_RETRY = Retry(max_sends=10, backoff=2.0, max_interval=300.0)
"""Budget of the retriable refund: with the default 30 s step deadline the waits are 30,
60, 120, 240, then 300 s; ten sends cover about 32 minutes of the payment service (or
its store) being down before the return is parked as ``completing_stuck``."""


def order_return(*, timeout: float | None = None, max_sends: int | None = None) -> SagaDefinition:
    """The return saga, version 1, with one step deadline and resend budget for every
    step (unset: the deployment's ``SAGA_STEP_TIMEOUT`` and ``SAGA_STEP_MAX_SENDS``).

    The refund is last, so money leaves only once the return is accepted and the goods
    are back. What would make payment refuse it (more than the order's amount, another
    currency) is checked at acceptance, before the goods go back on sale: a refund
    refused after they sold could not be compensated. It has a compensation all the
    same: when its reply never comes, the saga cannot know whether it happened, and
    undoes it too (``CancelRefund`` reverses a recorded refund and refuses a late one).
    """
    accept, take_back = _accept_and_take_back(timeout=timeout, max_sends=max_sends)
    refund = Step(
        name="refund_payment",
        participant="payment",
        command=_refund_command,
        command_type=RefundPayment,
        success=PaymentRefunded,
        failure=RefundRefused,
        compensate=lambda r: CancelRefund(return_id=r.return_id, order_saga_id=r.order_saga_id),
        compensation_type=CancelRefund,
        compensated=RefundCancelled,
        timeout=timeout,
        max_sends=max_sends,
    )
    return SagaDefinition(
        name="order_return",
        start=RequestReturn,
        steps=(accept, take_back, refund),
        reference=lambda r: r.return_id,
        description="accept the return, take the goods back into stock, refund the payment",
    )


def order_return_v2(
    *, timeout: float | None = None, max_sends: int | None = None, retry: Retry = REFUND_RETRY
) -> SagaDefinition:
    """The return saga, version 2: v1's acceptance and take-back (compensated when a
    step fails before the goods are back), the take-back the pivot, then the refund,
    retriable (``retry`` its budget) and never compensated. Completed only when the
    money is refunded.

    A refusal of the refund is not undone: what payment can foresee (more than the
    order's amount, another currency) is refused at acceptance, so a refusal here is an
    exception (the order's refundable amount lowered meanwhile) for an operator, who
    resumes the saga once its cause is fixed. A refund whose reply is lost is resent
    with its message id, and payment repeats the reply of the refund it recorded."""
    accept, take_back = _accept_and_take_back(timeout=timeout, max_sends=max_sends)
    refund = Step(
        name="refund_payment",
        participant="payment",
        command=_refund_command,
        command_type=RefundPayment,
        success=PaymentRefunded,
        failure=RefundRefused,
        timeout=timeout,
        retry=retry,
    )
    return SagaDefinition(
        name="order_return",
        version=2,
        start=RequestReturn,
        steps=(accept, take_back, refund),
        reference=lambda r: r.return_id,
        description="accept the return, take the goods back into stock (the pivot), "
        "then refund the payment",
    )


def _accept_and_take_back(*, timeout: float | None, max_sends: int | None) -> tuple[Step, Step]:
    """Accept the return, take the goods back: each with its compensation."""
    accept = Step(
        name="accept_return",
        participant="returns",
        command=lambda r: AcceptReturn(
            return_id=r.return_id,
            order_saga_id=r.order_saga_id,
            lines=r.lines,
            refund_cents=r.refund_cents,
            currency=r.currency,
        ),
        command_type=AcceptReturn,
        success=ReturnAccepted,
        failure=ReturnRefused,
        compensate=lambda r: CancelReturn(return_id=r.return_id, order_saga_id=r.order_saga_id),
        compensation_type=CancelReturn,
        compensated=ReturnCancelled,
        timeout=timeout,
        max_sends=max_sends,
    )
    take_back = Step(
        name="take_back_stock",
        participant="inventory",
        command=lambda r: TakeBackStock(
            return_id=r.return_id, lines=r.lines, order_saga_id=r.order_saga_id
        ),
        command_type=TakeBackStock,
        success=StockTakenBack,
        failure=TakeBackRefused,
        compensate=lambda r: UndoTakeBack(return_id=r.return_id),
        compensation_type=UndoTakeBack,
        compensated=TakeBackUndone,
        timeout=timeout,
        max_sends=max_sends,
    )
    return accept, take_back


def _refund_command(r: RequestReturn) -> RefundPayment:
    return RefundPayment(
        return_id=r.return_id,
        order_saga_id=r.order_saga_id,
        amount_cents=r.refund_cents,
        currency=r.currency,
    )


ORDER_RETURN = order_return()
ORDER_RETURN_V2 = order_return_v2()
