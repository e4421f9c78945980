"""Saga orchestration over RabbitMQ with an event-sourced MongoDB store.

The domain (``definition``, ``state``, ``decide``, ``order_saga``) is pure; ``runtime``,
``outbox``, ``mongo_store`` and ``messaging`` are the I/O around it; ``service`` is the
orchestrator process and ``host`` the shell every service runs in.
"""

from orchestrator.decide import Decision, Incoming, Outgoing, decide, decide_timeout
from orchestrator.definition import SagaDefinition, Step
from orchestrator.order_saga import ORDER_FULFILMENT, order_fulfilment
from orchestrator.settings import Settings
from orchestrator.state import SagaEvent, SagaState, Status

__all__ = [
    "ORDER_FULFILMENT",
    "Decision",
    "Incoming",
    "Outgoing",
    "SagaDefinition",
    "SagaEvent",
    "SagaState",
    "Settings",
    "Status",
    "Step",
    "decide",
    "decide_timeout",
    "order_fulfilment",
]
