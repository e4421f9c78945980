"""Counters that reads get in one round trip, exact under redelivery, reordering and
crashes, without multi-document transactions.

A projection keeps one *guard* document per origin (a saga, a restock) that decides,
with a conditional write, which event is the newest; only that write's winner changes
the counters. The change is a *movement*: named increments of counter documents. It is
applied in three idempotent steps:

1. the guard's winning write also stores the movement as ``pending``, with a lease
   (the writer's token and an expiry);
2. each counter document gets the increments in one update that also sets a mark named
   after the movement; a counter that has the mark already is left alone, so this step
   can be repeated (a crash, a takeover) without counting twice;
3. the guard's ``pending`` is cleared, then the marks are removed (counters stay small).

A failure leaves ``pending`` in the guard, and whoever handles that guard next (the
redelivered message, or the saga's next event) finishes it first: at once if the holder
gave the lease up (a failed write does) or the lease ran out (a process that died), else
the message is retried later (the holder may still be at work). Within one process,
the projections serialise the handling of each guard, so duplicates delivered together
do not even meet a held lease.

The one case this cannot make exact is a writer that stalls for longer than the lease
in the middle of step 2 while another takes over and finishes: like any lease without a
fence at the resource. ``saga projections rebuild`` recomputes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError, PyMongoError

from orchestrator.errors import StoreUnavailable, TransientError
from orchestrator.store.writes import DocumentWrites

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

__all__ = ["LEASE_SECONDS", "Counters", "Movement", "field_name"]

Doc = dict[str, Any]
LEASE_SECONDS = 10.0
"""How long a writer may take to finish a movement before another takes it over; with
the default retry tiers (1, 5, 30 s) a message redelivered after a crash takes over on
its last retry."""
_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


def field_name(text: str) -> str:
    """``text`` as one segment of a MongoDB field path (no dots, no ``$``)."""
    return text if _SAFE.match(text) else "_" + hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Movement:
    """Increments of counter documents that happen once: ``{counter id: {field: n}}``
    (fields may be dotted paths)."""

    key: str
    increments: Mapping[str, Mapping[str, float]]

    @property
    def mark(self) -> str:
        """The field that records, in each counter, that this movement was applied."""
        return "marks." + hashlib.sha1(self.key.encode()).hexdigest()[:20]

    def to_doc(self, *, lease: float) -> Doc:
        """The ``pending`` field of a guard: the movement and a fresh lease."""
        return {
            "key": self.key,
            "increments": [
                {"id": counter, "inc": [[f, n] for f, n in fields.items()]}
                for counter, fields in self.increments.items()
            ],
            "owner": uuid.uuid4().hex,
            "until": time.time() + lease,
        }

    @classmethod
    def from_doc(cls, doc: Doc) -> Movement:
        """The movement stored in a guard's ``pending``."""
        return cls(
            key=doc["key"],
            increments={i["id"]: dict(i["inc"]) for i in doc["increments"]},
        )

    @property
    def empty(self) -> bool:
        """Nothing to count."""
        return not any(n for fields in self.increments.values() for n in fields.values())


class Counters:
    """Counter documents in ``counters``, guarded by documents of ``guards``."""

    def __init__(
        self,
        *,
        counters: AsyncCollection[Doc],
        guards: AsyncCollection[Doc],
        lease: float = LEASE_SECONDS,
    ) -> None:
        self.counters = counters
        self.guards = guards
        self.lease = lease
        self.writes = DocumentWrites(counters)
        """Increments and the marks' removal, group-committed."""

    def pending(self, movement: Movement) -> Doc:
        """What a guard's winning write stores as ``pending``."""
        return movement.to_doc(lease=self.lease)

    async def settle(self, guard: Doc) -> None:
        """Finish the guard's pending movement once its lease has run out (its holder
        died, or gave up); while the lease holds, a TransientError: retry later."""
        pending: Doc = guard["pending"]
        if pending["until"] > time.time():
            raise TransientError(
                f"{guard['_id']}: movement {pending['key']} is being applied; retry later"
            )
        taken = {**pending, "owner": uuid.uuid4().hex, "until": time.time() + self.lease}
        try:
            result = await self.guards.update_one(
                {"_id": guard["_id"], "pending.owner": pending["owner"]},
                {"$set": {"pending": taken}},
            )
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot take over a pending movement: {e}") from e
        if result.matched_count == 0:
            raise TransientError(f"{guard['_id']}: pending movement taken over; retry")
        await self.finish(guard["_id"], taken)

    async def finish(self, guard_id: str, pending: Doc) -> None:
        """Steps 2 and 3 for the movement the guard holds as ``pending``. If a step
        fails, the lease is given up, so that the message's next delivery finishes it
        at once instead of waiting for the lease to run out."""
        movement = Movement.from_doc(pending)
        try:
            for counter, fields in movement.increments.items():
                await self._increment(counter, fields, movement.mark)
            cleared = await self.guards.update_one(
                {"_id": guard_id, "pending.owner": pending["owner"]}, {"$unset": {"pending": ""}}
            )
        except PyMongoError as e:
            await self.give_up(guard_id, pending)
            raise StoreUnavailable(f"cannot apply movement {movement.key}: {e}") from e
        except BaseException:
            await self.give_up(guard_id, pending)
            raise
        if cleared.matched_count:  # taken over meanwhile: the new holder removes the marks
            await self.unmark(movement)

    async def give_up(self, guard_id: str, pending: Doc) -> None:
        """Release the lease of ``pending`` (if it is still this writer's), so that the
        next handler of the guard finishes the movement at once: after a failed write
        of the guard, which may have been stored all the same."""
        with contextlib.suppress(Exception):  # the store may be down: then the lease runs out
            await self.guards.update_one(
                {"_id": guard_id, "pending.owner": pending["owner"]},
                {"$set": {"pending.until": 0.0}},
            )

    async def _increment(self, counter: str, fields: Mapping[str, float], mark: str) -> None:
        """Add ``fields`` to the counter unless it has the mark. No match means either
        no counter yet (create it, then once more) or the mark is there (applied
        before). The counter is created empty rather than by an upsert: some servers
        store an upsert's dotted increments as flat field names."""
        unmarked = {"_id": counter, mark: {"$exists": False}}
        change = {"$inc": dict(fields), "$set": {mark: 1}}
        # Group-committed; if some update of the batch matched nothing, ours may have
        # been applied or not: the update below is a no-op if it was (the mark is set).
        if await self.writes.update_matched(unmarked, change):
            return
        if (await self.counters.update_one(unmarked, change)).matched_count:
            return
        with contextlib.suppress(DuplicateKeyError):  # created meanwhile, or long ago
            await self.counters.insert_one({"_id": counter})
        await self.counters.update_one(unmarked, change)

    async def unmark(self, movement: Movement) -> None:
        """Remove the movement's marks (once its guard no longer holds it pending). The
        removals of concurrent handlers share round trips (``writes``). A failed one
        leaves a mark behind, which counts nothing by itself; it would only make a later
        movement of the same key skip that counter, and a key comes back only after its
        guard is deleted, by a rebuild, which deletes the marks too."""
        removals = [
            self.writes.update(
                {"_id": counter, movement.mark: {"$exists": True}},
                {"$unset": {movement.mark: ""}},
            )
            for counter in movement.increments
        ]
        for outcome in await asyncio.gather(*removals, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise StoreUnavailable(f"cannot clean up movement {movement.key}: {outcome}")

    async def read(self, ids: list[str]) -> dict[str, Doc]:
        """Counter documents by id (without their marks); missing ones are absent."""
        try:
            cursor = self.counters.find({"_id": {"$in": ids}}, {"marks": 0})
            return {doc["_id"]: doc async for doc in cursor}
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot read counters: {e}") from e
