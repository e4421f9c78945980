"""Errors raised while reading messages off the wire."""

from __future__ import annotations

from typing import Literal

__all__ = ["ContractError", "MalformedMessage", "MalformedReason"]

MalformedReason = Literal[
    "undecodable",
    "unknown_type",
    "schema_violation",
    "missing_correlation_id",
    "too_large",
    "unknown_saga",
    "unknown_version",
    "conflicting_start",
]


class ContractError(Exception):
    """Root of the contracts package's errors."""


class MalformedMessage(ContractError):
    """A message that can never be processed: it goes to the dead-letter queue unretried.

    ``reason`` is a short machine-readable code, stored in the ``x-error-reason`` header;
    ``detail`` says what exactly was wrong.
    """

    def __init__(self, reason: MalformedReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: MalformedReason = reason
        self.detail = detail
