"""The participant kit: write a participant service as one handler per command;
idempotency of delivery, retry tiers, dead-lettering and reply routing come with it,
and the retention of the records a participant settled (``participants.kit.retention``)."""

from participants.kit.retention import SETTLE, SETTLED_AT, ensure_ttl_index, record_retention
from participants.kit.service import (
    CommandHandler,
    EventHandler,
    ParticipantError,
    ParticipantService,
    current_envelope,
)

__all__ = [
    "SETTLE",
    "SETTLED_AT",
    "CommandHandler",
    "EventHandler",
    "ParticipantError",
    "ParticipantService",
    "current_envelope",
    "ensure_ttl_index",
    "record_retention",
]
