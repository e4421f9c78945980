"""Operator tools shared by the CLI and the HTTP API: dead-letter queues."""

from orchestrator.ops.dlq import (
    DISCARDS,
    REPLAY_COUNT,
    REPLAYED_AT,
    Progress,
    ReplayTarget,
    discard,
    list_dead_letters,
    peek,
    replay,
    replay_message,
)
from orchestrator.ops.letters import (
    EVERYTHING,
    DeadLetter,
    DeadLetterQueue,
    DlqError,
    DlqReport,
    Outcome,
    Selector,
    UnknownQueue,
    read_dead_letter,
    resolve_queue,
)

__all__ = [
    "DISCARDS",
    "EVERYTHING",
    "REPLAYED_AT",
    "REPLAY_COUNT",
    "DeadLetter",
    "DeadLetterQueue",
    "DlqError",
    "DlqReport",
    "Outcome",
    "Progress",
    "ReplayTarget",
    "Selector",
    "UnknownQueue",
    "discard",
    "list_dead_letters",
    "peek",
    "read_dead_letter",
    "replay",
    "replay_message",
    "resolve_queue",
]
