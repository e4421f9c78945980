"""The pure saga core: definitions, state as a fold over events, and decisions.

Nothing here performs I/O or imports a driver (aio_pika, pymongo, faststream, structlog);
a ruff banned-API rule keeps it so. The runtime shell feeds messages and the clock in and
stores and publishes what comes out.
"""

from orchestrator.saga.decide import (
    Decision,
    Incoming,
    Outgoing,
    command_id,
    decide,
    decide_resume,
    decide_timeout,
)
from orchestrator.saga.definition import Retry, SagaDefinition, Step, parallel, routing_key
from orchestrator.saga.state import (
    Awaiting,
    EventType,
    SagaEvent,
    SagaState,
    Status,
    evolve,
    replay,
)

__all__ = [
    "Awaiting",
    "Decision",
    "EventType",
    "Incoming",
    "Outgoing",
    "Retry",
    "SagaDefinition",
    "SagaEvent",
    "SagaState",
    "Status",
    "Step",
    "command_id",
    "decide",
    "decide_resume",
    "decide_timeout",
    "evolve",
    "parallel",
    "replay",
    "routing_key",
]
