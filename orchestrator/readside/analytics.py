"""The analytics consumer: outcomes, step durations and compensations, for Prometheus.

When a progress event says a saga ended, one record for the saga is written (its id is
the saga id, so a redelivery writes nothing): outcome, total duration, each step's
duration and the number of compensations, computed from the saga's events in the event
store. The record's first insert also adds it to the totals of its saga
(``readside_metrics``, one document per saga name), through a guarded movement
(:mod:`orchestrator.readside.counters`): a scrape reads those few documents, not every
record, and the totals are exact under redelivery and crashes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector
from pymongo.errors import DuplicateKeyError, PyMongoError

from orchestrator.errors import StoreUnavailable
from orchestrator.readside.counters import Counters, Movement, field_name
from orchestrator.runtime.locks import KeyedLocks
from orchestrator.saga.state import EventType
from orchestrator.store.mongo import MongoSagaStore
from orchestrator.store.writes import DocumentWrites

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from contracts import SagaProgressed
    from orchestrator.saga.commits import Commit

__all__ = [
    "SagaAnalytics",
    "Snapshot",
    "families_of",
    "in_flight_family",
    "metrics_movement",
    "saga_record",
]

Doc = dict[str, Any]
ENDINGS = {
    "saga_completed": "completed",
    "saga_failed": "failed",
    "saga_compensated": "compensated",
}
STEP_ENDS = (EventType.STEP_SUCCEEDED, EventType.STEP_FAILED, EventType.STEP_TIMED_OUT)


def saga_record(saga_id: str, outcome: str, history: list[Commit]) -> Doc:
    """The analytics record of an ended saga (pure)."""
    started: dict[str, datetime] = {}
    steps: list[Doc] = []
    compensations = 0
    first = last = None
    for commit in history:
        for e in commit.events:
            first = first or e.at
            last = e.at
            if e.type is EventType.STEP_STARTED and e.step:
                started[e.step] = e.at
            elif e.type in STEP_ENDS and e.step in started:
                seconds = (e.at - started.pop(e.step)).total_seconds()
                steps.append({"step": e.step, "seconds": seconds, "outcome": e.type.value})
            elif e.type is EventType.STEP_COMPENSATED:
                compensations += 1
    name = next(
        (
            str(e.data.get("saga_name"))
            for c in history
            for e in c.events
            if e.type is EventType.SAGA_STARTED
        ),
        "",
    )
    duration = (last - first).total_seconds() if first and last else 0.0
    return {
        "_id": saga_id,
        "saga_name": name,
        "outcome": outcome,
        "duration": duration,
        "steps": steps,
        "compensations": compensations,
        "ended_at": last,
    }


def metrics_movement(record: Doc) -> Movement:
    """What an ended saga's record adds to the totals of its saga name."""
    outcome = field_name(record["outcome"])
    fields: dict[str, float] = defaultdict(float)
    fields[f"outcomes.{outcome}"] = 1
    fields[f"duration.{outcome}.sum"] = record["duration"]
    fields[f"duration.{outcome}.count"] = 1
    fields["compensations"] = record["compensations"]
    for step in record["steps"]:
        path = f"steps.{field_name(step['step'])}.{field_name(step['outcome'])}"
        fields[f"{path}.sum"] += step["seconds"]
        fields[f"{path}.count"] += 1
    return Movement(
        key=f"analytics:{record['_id']}", increments={record.get("saga_name", ""): dict(fields)}
    )


class SagaAnalytics:
    """``readside_analytics`` (one record per ended saga) and ``readside_metrics`` (the
    totals per saga name that /metrics shows)."""

    def __init__(self, *, database: AsyncDatabase[Doc]) -> None:
        self.records = database["readside_analytics"]
        self.totals = database["readside_metrics"]
        self.counters = Counters(counters=self.totals, guards=self.records)
        self.record_writes = DocumentWrites(self.records)
        """The records (inserts): group-committed."""
        self._locks = KeyedLocks()
        self.events = MongoSagaStore(database=database)

    async def apply(self, saga_id: str, event: SagaProgressed) -> bool:
        """Record the saga if this event ended it; True if a record was written."""
        outcome = next((ENDINGS[e.type] for e in event.events if e.type in ENDINGS), None)
        if outcome is None:
            return False
        async with self._locks(saga_id):
            return await self._record(saga_id, outcome)

    async def _record(self, saga_id: str, outcome: str) -> bool:
        try:
            existing = await self.records.find_one({"_id": saga_id})
            if existing is not None:
                if existing.get("pending"):
                    await self.counters.settle(existing)
                return False
            record = saga_record(saga_id, outcome, await self.events.history(saga_id))
            pending = self.counters.pending(metrics_movement(record))
            try:
                await self.record_writes.insert({**record, "pending": pending})
            except DuplicateKeyError:
                raise
            except BaseException:  # it may be stored all the same: give the lease up
                await self.counters.give_up(saga_id, pending)
                raise
        except DuplicateKeyError:
            return False  # recorded meanwhile by another handler, which counts it
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot store analytics: {e}") from e
        await self.counters.finish(saga_id, pending)
        return True

    async def metrics(self) -> str:
        """Prometheus text of the totals (one document per saga name)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Snapshot(await self.families()))
        return generate_latest(registry).decode()

    async def families(self) -> list[Metric]:
        """The totals as Prometheus metric families, named ``saga_analytics_*`` (exact,
        from the store, across restarts; the services' own ``saga_outcomes_total`` and
        histograms count what each process saw since it started)."""
        try:
            totals = await self.totals.find({}, {"marks": 0}).sort("_id", 1).to_list(None)
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot read metrics: {e}") from e
        return families_of(totals)


def families_of(totals: list[Doc]) -> list[Metric]:
    """The ``saga_analytics_*`` families of the totals documents (pure)."""
    outcomes = CounterMetricFamily(
        "saga_analytics_outcomes", "Sagas ended, by outcome.", labels=["saga", "outcome"]
    )
    durations = SummaryMetricFamily(
        "saga_analytics_duration_seconds",
        "Start to end of ended sagas.",
        labels=["saga", "outcome"],
    )
    steps = SummaryMetricFamily(
        "saga_analytics_step_duration_seconds",
        "Command sent to reply stored, of the steps of ended sagas.",
        labels=["saga", "step", "outcome"],
    )
    compensations = CounterMetricFamily(
        "saga_analytics_compensations", "Steps undone by compensation.", labels=["saga"]
    )
    for doc in totals:
        name = str(doc["_id"])
        for outcome, count in sorted((doc.get("outcomes") or {}).items()):
            outcomes.add_metric([name, outcome], int(count))
        for outcome, d in sorted((doc.get("duration") or {}).items()):
            durations.add_metric([name, outcome], d.get("count", 0), d.get("sum", 0.0))
        for step, by_outcome in sorted((doc.get("steps") or {}).items()):
            for outcome, d in sorted(by_outcome.items()):
                steps.add_metric([name, step, outcome], d.get("count", 0), d.get("sum", 0.0))
        compensations.add_metric([name], int(doc.get("compensations", 0)))
    return [outcomes, durations, steps, compensations]


def in_flight_family(counts: dict[str, int]) -> Metric:
    """``saga_in_flight{status}``: sagas not yet ended (the summaries' counter document)."""
    family = GaugeMetricFamily(
        "saga_in_flight", "Sagas not yet ended, by status.", labels=["status"]
    )
    for status, n in sorted(counts.items()):
        family.add_metric([status], n)
    return family


class Snapshot(Collector):
    """Metric families read once, served by one exposition."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        """The families as read."""
        return self._families
