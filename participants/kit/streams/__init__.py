"""The participant kit's faststream flavour: a participant's command handlers written as
faststream handlers (one contract model parameter, the reply returned), served with the
same topology, idempotency, retry tiers, dead-letter queue, reply routing and fault
injection as the aio-pika ``ParticipantService``."""

from participants.kit.streams.participant import (
    Attempt,
    CommandSpec,
    SagaId,
    StreamParticipant,
    current_envelope,
    uses,
)
from participants.kit.streams.service import StreamService, faststream_app, run_participant

__all__ = [
    "Attempt",
    "CommandSpec",
    "SagaId",
    "StreamParticipant",
    "StreamService",
    "current_envelope",
    "faststream_app",
    "run_participant",
    "uses",
]
