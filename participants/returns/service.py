"""The returns service: accepts returns of completed orders, one per order, within the
return window (``RETURNS_WINDOW_DAYS``, default 30), and cancels them on compensation.

Written only with the participant kit: a handler per command, a refusal for the one
that can be refused (so an injected ``decline`` fault replies like a real refusal).
"""

from __future__ import annotations

from datetime import timedelta

from contracts import AcceptReturn, CancelReturn, ReturnAccepted, ReturnCancelled, ReturnRefused
from contracts.base import Message
from orchestrator.runtime.host import run_service
from orchestrator.settings import env_int
from participants.kit.retention import record_retention
from participants.kit.service import ParticipantService
from participants.returns.policy import ReturnPolicy
from participants.returns.store import MongoReturns

__all__ = ["WINDOW_DAYS", "ReturnsService", "main"]

WINDOW_DAYS = 30
"""Default of ``RETURNS_WINDOW_DAYS``: days after an order completes it may be returned."""
ORDER_SAGA = "order_fulfilment"
"""Default of ``RETURNS_ORDER_SAGA``: the saga whose completed instances can be returned."""


class ReturnsService(ParticipantService):
    """Consumes ``<ns>.returns.commands``."""

    service = "returns"
    _returns: MongoReturns | None = None

    @property
    def returns(self) -> MongoReturns:
        """The returns store (after start)."""
        assert self._returns is not None, "start() the service first"
        return self._returns

    async def setup(self) -> None:
        """Register handlers and the consumer."""
        env = self.settings.env()
        policy = ReturnPolicy(
            order_saga=env.get("RETURNS_ORDER_SAGA") or ORDER_SAGA,
            window=timedelta(days=env_int(env, "RETURNS_WINDOW_DAYS", WINDOW_DAYS)),
        )
        self._returns = MongoReturns(
            database=self.db, policy=policy, retention_seconds=record_retention(env)
        )
        await self._returns.ensure_indexes()
        self.on_command(
            AcceptReturn,
            self.accept,
            refusal=lambda c, reason: ReturnRefused(return_id=c.return_id, reason=reason),
        )
        self.on_command(CancelReturn, self.cancel)
        self.consume("returns.commands", self.handle_command)

    async def accept(self, saga_id: str, cmd: AcceptReturn) -> Message:
        """Accept, or refuse with the reason."""
        decision = await self.returns.accept(saga_id, cmd)
        if decision.accepted:
            return ReturnAccepted(return_id=cmd.return_id)
        return ReturnRefused(return_id=cmd.return_id, reason=decision.reason)

    async def cancel(self, saga_id: str, cmd: CancelReturn) -> Message:
        """Compensation."""
        await self.returns.cancel(saga_id, cmd.order_saga_id)
        return ReturnCancelled(return_id=cmd.return_id)


def main() -> None:
    """Entry point ``saga-returns``."""
    run_service(ReturnsService)
