"""The analytics consumer: outcomes, step durations and compensations, as Prometheus text.

When a progress event says a saga ended, one record for the saga is written (its id is
the saga id, so a redelivery writes nothing): outcome, total duration, each step's
duration and the number of compensations, computed from the saga's events in the event
store. The metrics are summed from these records when scraped.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError, PyMongoError

from orchestrator.errors import StoreUnavailable
from orchestrator.mongo_store import MongoSagaStore
from orchestrator.state import EventType

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from contracts import SagaProgressed
    from orchestrator.store import Commit

__all__ = ["SagaAnalytics", "saga_record"]

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


class SagaAnalytics:
    """``readside_analytics``: one record per ended saga."""

    def __init__(self, *, database: AsyncDatabase[Doc]) -> None:
        self.records = database["readside_analytics"]
        self.events = MongoSagaStore(database=database)

    async def apply(self, saga_id: str, event: SagaProgressed) -> bool:
        """Record the saga if this event ended it; True if a record was written."""
        outcome = next((ENDINGS[e.type] for e in event.events if e.type in ENDINGS), None)
        if outcome is None:
            return False
        if await self.records.find_one({"_id": saga_id}, {"_id": 1}) is not None:
            return False
        record = saga_record(saga_id, outcome, await self.events.history(saga_id))
        try:
            await self.records.insert_one(record)
        except DuplicateKeyError:
            return False
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot store analytics: {e}") from e
        return True

    async def metrics(self) -> str:
        """Prometheus text exposition of everything recorded."""
        outcomes: dict[tuple[str, str], int] = defaultdict(int)
        durations: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
        steps: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0])
        compensations: dict[str, int] = defaultdict(int)
        async for r in self.records.find({}, {"_id": 0}):
            name = r.get("saga_name", "")
            outcomes[(name, r["outcome"])] += 1
            durations[(name, r["outcome"])][0] += r["duration"]
            durations[(name, r["outcome"])][1] += 1
            compensations[name] += r["compensations"]
            for s in r["steps"]:
                key = (name, s["step"], s["outcome"])
                steps[key][0] += s["seconds"]
                steps[key][1] += 1
        return "".join(
            [
                _help("saga_outcomes_total", "counter", "Sagas ended, by outcome."),
                *(
                    f'saga_outcomes_total{{saga="{n}",outcome="{o}"}} {c}\n'
                    for (n, o), c in sorted(outcomes.items())
                ),
                _help("saga_duration_seconds", "summary", "Start to end of ended sagas."),
                *_summary("saga_duration_seconds", ("saga", "outcome"), durations),
                _help("saga_step_duration_seconds", "summary", "Command sent to reply stored."),
                *_summary("saga_step_duration_seconds", ("saga", "step", "outcome"), steps),
                _help("saga_compensations_total", "counter", "Steps undone by compensation."),
                *(
                    f'saga_compensations_total{{saga="{n}"}} {c}\n'
                    for n, c in sorted(compensations.items())
                ),
            ]
        )


def _help(name: str, kind: str, text: str) -> str:
    return f"# HELP {name} {text}\n# TYPE {name} {kind}\n"


def _summary(name: str, labels: tuple[str, ...], values: dict[Any, list[float]]) -> list[str]:
    lines = []
    for key, (total, count) in sorted(values.items()):
        tags = ",".join(f'{label}="{value}"' for label, value in zip(labels, key, strict=True))
        lines.append(f"{name}_sum{{{tags}}} {total:.6f}\n")
        lines.append(f"{name}_count{{{tags}}} {int(count)}\n")
    return lines
