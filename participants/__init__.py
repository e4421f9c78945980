"""The participant services of the order saga: inventory, payment, shipping."""

from participants.kit import ParticipantError, ParticipantService

__all__ = ["ParticipantError", "ParticipantService"]
