"""How long a participant remembers the saga commands it settled.

A participant answers a redelivered command with the same reply because the effect's
own document is its dedupe record (a reservation, a payment, a shipment, a decision).
Such a record is *live* while a command the saga can still send needs what it holds (a
reservation still holding stock, an authorization still to capture or void); it never
expires. The write that makes it *final* also sets :data:`SETTLED_AT`, and a TTL index
on that field removes it :data:`RETENTION_ENV` seconds later. A live record has no
``settled_at``, and MongoDB's TTL monitor leaves a document without the field alone.

After the retention a copy of a command is taken for a new one and executed again, so
the retention must be longer than any copy can wait. The longest wait is an operator's:
a dead letter replayed (``saga dlq replay``), a parked saga resumed; retry tiers,
deferrals, deadline resends and the outbox relay only send while the saga is live,
seconds to half an hour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pymongo.errors import OperationFailure, PyMongoError

from orchestrator.errors import StoreUnavailable
from orchestrator.settings import ConfigError, env_float

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pymongo.asynchronous.collection import AsyncCollection

__all__ = [
    "MIN_RECORD_RETENTION_SECONDS",
    "RECORD_RETENTION_SECONDS",
    "RETENTION_ENV",
    "SETTLE",
    "SETTLED_AT",
    "ensure_ttl_index",
    "record_retention",
]

SETTLED_AT = "settled_at"
"""When a record became final; only final records have it (the TTL index's field)."""
SETTLE: dict[str, Any] = {"$currentDate": {SETTLED_AT: True}}
"""The update operator that marks a record final, merged into the update that makes it
so. The date is the server's, the clock its TTL monitor reads; and the embedded
development server stores a date given with ``$set`` as a string, which no TTL index
would ever expire. (An inserted record sets :data:`SETTLED_AT` itself.)"""
RECORD_RETENTION_SECONDS = 30 * 24 * 3600.0
"""Default of :data:`RETENTION_ENV`: 30 days, like the inventory's restock ids."""
RETENTION_ENV = "PARTICIPANT_RECORD_RETENTION_SECONDS"
MIN_RECORD_RETENTION_SECONDS = 3600.0
"""The least :data:`RETENTION_ENV` accepted: an hour, twice the longest automatic wait
(1,800 deferral rounds of the 1 s tier). A shorter one would let a deferred
``ReserveStock`` run again with nothing left to release it."""


def record_retention(env: Mapping[str, str]) -> float:
    """Seconds a settled record is kept, from ``PARTICIPANT_RECORD_RETENTION_SECONDS``;
    :class:`ConfigError` below :data:`MIN_RECORD_RETENTION_SECONDS`."""
    seconds = env_float(env, RETENTION_ENV, RECORD_RETENTION_SECONDS)
    if seconds < MIN_RECORD_RETENTION_SECONDS:
        raise ConfigError(
            f"{RETENTION_ENV}={seconds:g}: must be at least {MIN_RECORD_RETENTION_SECONDS:g} "
            "seconds (a copy of a command can wait half an hour in the retry tiers, and a "
            "record gone by then lets it run again)"
        )
    return seconds


async def ensure_ttl_index(collection: AsyncCollection[Any], field: str, seconds: float) -> None:
    """A TTL index on ``field`` that removes a document ``seconds`` after its date;
    an existing one with another retention is changed in place (``collMod``), so every
    instance may run this at start-up."""
    after = max(1, round(seconds))
    try:
        try:
            await collection.create_index(field, expireAfterSeconds=after)
        except OperationFailure:  # the index exists with another retention: change it
            await collection.database.command(
                "collMod",
                collection.name,
                index={"keyPattern": {field: 1}, "expireAfterSeconds": after},
            )
    except PyMongoError as e:
        raise StoreUnavailable(f"cannot create {collection.name}'s retention index: {e}") from e
