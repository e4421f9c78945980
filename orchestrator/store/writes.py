"""Group commit for documents: the writes of concurrent handlers share round trips.

A participant's command settles in one or two writes of its own documents, and a
read-side projection's event in a few. Under load many messages are in flight in one
process, and each of those writes used to be a round trip of its own.
:class:`DocumentWrites` puts a :class:`~orchestrator.runtime.batcher.GroupWriter` in
front of one collection for the two kinds of write that can share one:

- ``insert``: the documents queued meanwhile go in one ``insert_many(ordered=False)``.
  Each caller gets its own outcome: stored, or ``DuplicateKeyError`` if its ``_id`` was
  taken (the idempotency records rely on that), exactly as ``insert_one`` would;
- ``update``: updates whose caller needs no count (a move addressed by its own
  condition, which is a no-op if it does not match) go in one ``bulk_write(ordered=
  False)``. Each caller only learns that its update was applied or did not match;
  ``update_matched`` also says whether the whole batch matched (then its own update
  did), for an update that is a no-op on repeat: when not, the caller looks again.

Writes whose result decides what happens next (a conditional hold, a
``find_one_and_update``) stay single round trips. Every caller resumes only after its
own write is confirmed, so a handler acks its command only after its effect is stored;
if the round trip fails, every caller of the batch gets ``StoreUnavailable`` and none
of their commands is acked. A crash with a batch half filled loses nothing: its
commands are unacked and come back, and every write here is idempotent on repeat.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from bson.errors import InvalidDocument
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from orchestrator.errors import StoreUnavailable
from orchestrator.runtime.batcher import GroupWriter

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

__all__ = ["DUPLICATE_KEY", "MAX_BATCH", "DocumentWrites"]

Doc = dict[str, Any]
W = TypeVar("W")
DUPLICATE_KEY = 11000
MAX_BATCH = 100
"""Documents per round trip at most."""


class DocumentWrites:
    """Batched inserts and updates of one collection (see the module docstring)."""

    def __init__(
        self, collection: AsyncCollection[Doc], *, window: float = 0.0, max_batch: int = MAX_BATCH
    ) -> None:
        self.collection = collection
        self.inserts = _Inserts(collection, window=window, max_batch=max_batch)
        self.updates = _Updates(collection, window=window, max_batch=max_batch)

    async def insert(self, doc: Doc) -> None:
        """Insert one document; ``DuplicateKeyError`` if its ``_id`` is taken."""
        await self.inserts.submit(doc)

    async def update(self, query: Mapping[str, Any], update: Mapping[str, Any]) -> None:
        """Apply one ``update_one`` (a no-op if ``query`` matches nothing)."""
        await self.updates.submit(Update(UpdateOne(dict(query), dict(update))))

    async def update_matched(self, query: Mapping[str, Any], update: Mapping[str, Any]) -> bool:
        """Apply one ``update_one``; True if it matched for sure: every update of its
        round trip matched (a bulk write counts its matches, not which ones). False
        means unknown: this one, or another of the batch, matched nothing, and the
        caller must look (as after an ``update_one`` that matched nothing, where an
        update that is a no-op on repeat is simply repeated)."""
        item = Update(UpdateOne(dict(query), dict(update)))
        await self.updates.submit(item)
        return item.all_matched


class _Inserts(GroupWriter[Doc]):
    failure_event = "insert_batch_failed"

    def __init__(self, collection: AsyncCollection[Doc], *, window: float, max_batch: int) -> None:
        super().__init__(window=window, max_batch=max_batch)
        self.collection = collection

    async def write_batch(self, items: Sequence[Doc]) -> Sequence[Exception | None]:
        return await _one_by_one_if_unencodable(self._insert, items)

    async def _insert(self, docs: Sequence[Doc]) -> list[Exception | None]:
        outcomes: list[Exception | None] = [None] * len(docs)
        try:
            await self.collection.insert_many(list(docs), ordered=False)
        except BulkWriteError as e:
            _refused(e, outcomes, what=f"insert into {self.collection.name}")
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot insert {len(docs)} documents: {e}") from e
        return outcomes


@dataclass
class Update:
    """One update of a batch, and whether every update of its round trip matched."""

    op: UpdateOne
    all_matched: bool = False


class _Updates(GroupWriter[Update]):
    failure_event = "update_batch_failed"

    def __init__(self, collection: AsyncCollection[Doc], *, window: float, max_batch: int) -> None:
        super().__init__(window=window, max_batch=max_batch)
        self.collection = collection

    async def write_batch(self, items: Sequence[Update]) -> Sequence[Exception | None]:
        return await _one_by_one_if_unencodable(self._update, items)

    async def _update(self, items: Sequence[Update]) -> list[Exception | None]:
        outcomes: list[Exception | None] = [None] * len(items)
        try:
            result = await self.collection.bulk_write([x.op for x in items], ordered=False)
            matched = result.matched_count == len(items)
            for item in items:
                item.all_matched = matched
        except BulkWriteError as e:
            _refused(e, outcomes, what=f"update of {self.collection.name}")
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot apply {len(items)} updates: {e}") from e
        return outcomes


UNENCODABLE = (InvalidDocument, OverflowError, ValueError)
"""Raised while encoding a batch (a number beyond 64 bits, a lone surrogate), before
anything is sent."""


async def _one_by_one_if_unencodable(
    write: Callable[[Sequence[W]], Awaitable[list[Exception | None]]], items: Sequence[W]
) -> Sequence[Exception | None]:
    """``write(items)``; if BSON cannot encode one of them, each on its own, so that only
    the culprit fails (with its encoding error, as it would have alone)."""
    try:
        return await write(items)
    except UNENCODABLE:
        pass
    outcomes: list[Exception | None] = []
    for item in items:
        try:
            outcomes.extend(await write([item]))
        except UNENCODABLE as e:
            outcomes.append(e)
    return outcomes


def _refused(error: BulkWriteError, outcomes: list[Exception | None], *, what: str) -> None:
    """Each failed write's own error. A write concern error leaves every write of the
    batch unconfirmed: they all fail (and are retried; each is idempotent)."""
    details = error.details
    if details.get("writeConcernErrors"):
        raise StoreUnavailable(f"{what} not confirmed: {details['writeConcernErrors']}")
    for write_error in details.get("writeErrors", []):
        i = int(write_error["index"])
        message = str(write_error.get("errmsg", ""))
        if write_error.get("code") == DUPLICATE_KEY:
            outcomes[i] = DuplicateKeyError(message, DUPLICATE_KEY, write_error)
        else:
            outcomes[i] = StoreUnavailable(f"{what} failed: {message}")
