"""Idempotency keys of the API's creating requests (starts, restocks).

Whatever a request creates is named after its ``Idempotency-Key`` (the saga id, the
restock id), so even two requests racing with one key create one thing, and the
consumers' own deduplication makes it happen once. The stored record of a key only
remembers what the request was (a fingerprint of its body), so that reusing a key for a
different request is refused (409) instead of silently returning the first result.

Records expire after ``SAGA_IDEMPOTENCY_RETENTION`` seconds (default 7 days; a TTL index
on ``at``). That outlives every redelivery window of the broker (retry tiers of seconds,
a dead-letter replay by an operator within days) and any sane client retry. After it, a
retry with the same key and body still maps to the same saga or restock (the name is
derived from the key), so nothing runs twice; only the 409 for a changed body is lost:
a changed start for an existing saga is then dead-lettered as ``conflicting_start``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Header, HTTPException, status
from pymongo.errors import DuplicateKeyError, OperationFailure

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection
    from pymongo.asynchronous.database import AsyncDatabase

    from contracts import Message

__all__ = [
    "DEFAULT_RETENTION",
    "KEY_COLLECTIONS",
    "IdempotencyKey",
    "ensure_key_retention",
    "fingerprint",
    "name_for",
    "remember",
]

DEFAULT_RETENTION = 7 * 24 * 3600
"""Seconds a key's record is kept: ``SAGA_IDEMPOTENCY_RETENTION``."""
KEY_COLLECTIONS = ("api_idempotency_keys", "api_restock_keys")
NAMESPACE = uuid.UUID("6f1c1b8e-7d4e-4b8a-9a51-2f7e3b8c0d11")

IdempotencyKey = Annotated[
    str,
    Header(
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$",
        description="Any unique string (printable ASCII); send the same one when retrying "
        "the request, to get the same result instead of a second one",
    ),
]


def name_for(key: str) -> str:
    """The id an idempotency key stands for (a saga id, a restock id)."""
    return uuid.uuid5(NAMESPACE, key).hex


def fingerprint(kind: str, message: Message | dict[str, Any]) -> str:
    """What a request asked for, to tell a retry from a different request."""
    body = message if isinstance(message, dict) else message.model_dump(mode="json")
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{kind}:{canonical}".encode()).hexdigest()


async def remember(
    keys: AsyncCollection[dict[str, Any]], key: str, record: dict[str, Any], *, what: str
) -> bool:
    """Store the key's record; True if new, False if the same request came before. A
    different request under the same key is a 409."""
    try:
        await keys.insert_one({"_id": key, **record, "at": datetime.now(UTC)})
    except DuplicateKeyError:
        seen = await keys.find_one({"_id": key})
        if seen is not None and seen.get("request") != record["request"]:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"this Idempotency-Key was used for a different {what}; use a new key",
            ) from None
        return False
    return True


async def ensure_key_retention(database: AsyncDatabase[dict[str, Any]], seconds: int) -> None:
    """A TTL index on ``at`` of every key collection (replacing an older plain one)."""
    for name in KEY_COLLECTIONS:
        keys = database[name]
        for index, info in (await keys.index_information()).items():
            plain_or_other = info.get("expireAfterSeconds") != seconds
            if list(info.get("key", [])) == [("at", 1)] and plain_or_other:
                await keys.drop_index(index)  # a plain index, or another retention
        try:
            await keys.create_index("at", expireAfterSeconds=seconds)
        except OperationFailure:  # another API instance changed it meanwhile: once more
            await keys.drop_index([("at", 1)])
            await keys.create_index("at", expireAfterSeconds=seconds)
