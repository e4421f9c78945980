"""How many sagas run on each definition version: what an orchestrator checks at start-up
before it serves a configuration that leaves a version out.

The commit that starts a saga carries ``starts: 1`` and the one that ends it ``ends: 1``
(sparse indexes with the saga's name and version), so sagas in flight on a version are
started minus ended: two indexed counts per version.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pymongo.errors import PyMongoError

from orchestrator.errors import StoreUnavailable
from orchestrator.saga.state import SagaEvent
from orchestrator.store.shape import Doc

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

__all__ = ["MongoVersions"]

TERMINAL = ("completed", "failed", "compensated")
UNMARKED_SETTLED = "unmarked_sagas_settled"


class MongoVersions:
    """Counts of sagas in flight per ``(name, version)``; mixed into the Mongo store."""

    commits: AsyncCollection[Doc]
    meta: AsyncCollection[Doc]

    async def in_flight(self, names: Collection[str]) -> dict[tuple[str, int], int]:
        """How many sagas of each ``(name, version)`` among ``names`` are in flight (not
        completed, failed or compensated; parked ones count): sagas started minus sagas
        ended, two indexed counts per version found. Sagas started before commits carried
        these markers are counted by one scan, until a scan finds none in flight."""
        counts: dict[tuple[str, int], int] = {}
        try:
            versions = sorted(
                {v for v in await self.commits.distinct("saga_version") if isinstance(v, int)}
            )
            for name in names:
                for version in versions:
                    which = {"saga_name": name, "saga_version": version}
                    started = await self.commits.count_documents({"starts": 1, **which})
                    ended = await self.commits.count_documents({"ends": 1, **which})
                    if started > ended:
                        counts[(name, version)] = started - ended
            for key, n in (await self._unmarked_in_flight(set(names))).items():
                counts[key] = counts.get(key, 0) + n
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot count the sagas in flight: {e}") from e
        return counts

    async def _unmarked_in_flight(self, names: set[str]) -> dict[tuple[str, int], int]:
        """Sagas whose start commit has no marker (written by an earlier release) that
        have no terminal commit yet. Once none is left, a note says so and this scan is
        never run again: such sagas are never started any more."""
        if await self.meta.find_one({"_id": UNMARKED_SETTLED}):
            return {}
        started: dict[str, tuple[str, int]] = {}
        query = {"version": 1, "starts": {"$exists": False}}
        async for doc in self.commits.find(query, {"saga_id": 1, "events": 1}):
            for event in doc.get("events") or ():
                if event.get("type") == "saga_started":
                    data = SagaEvent.from_doc(event).data
                    started[doc["saga_id"]] = (str(data["saga_name"]), int(data["saga_version"]))
        if started:
            ended = self.commits.find(
                {"saga_id": {"$in": sorted(started)}, "status": {"$in": list(TERMINAL)}},
                {"saga_id": 1},
            )
            async for doc in ended:
                started.pop(doc["saga_id"], None)
        if not started:
            await self.meta.insert_one({"_id": UNMARKED_SETTLED, "at": datetime.now(UTC)})
            return {}
        counts: dict[tuple[str, int], int] = {}
        for key in started.values():
            if key[0] in names:
                counts[key] = counts.get(key, 0) + 1
        return counts
