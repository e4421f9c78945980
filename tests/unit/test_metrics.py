"""The metrics the services record, and the dashboard that queries them."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from contracts import MalformedMessage
from orchestrator.observability import metrics
from orchestrator.readside.analytics import families_of, in_flight_family
from orchestrator.saga.state import EventType, SagaEvent, SagaState, apply_commit
from orchestrator.settings import ConfigError, Settings

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "saga-dashboard.json"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
}


def _exposed_names() -> set[str]:
    """Every sample name a scrape of a service or of saga-api can carry."""
    families = [*REGISTRY.collect(), *families_of([]), in_flight_family({})]
    return {
        f"{family.name}{suffix}"
        for family in families
        if family.name.startswith("saga_")
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def _exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_every_metric_the_dashboard_queries_is_registered() -> None:
    names = {n for expr in _exprs() for n in re.findall(r"\b(saga_[a-z0-9_]+)", expr)}
    assert names, "the dashboard queries nothing"
    assert names <= _exposed_names(), names - _exposed_names()


def test_the_dashboard_covers_what_on_call_needs() -> None:
    """Throughput by outcome, p95 step duration, DLQ rate, outbox backlog and age,
    deadline lag and reconnects each have a panel."""
    joined = "\n".join(_exprs())
    for needed in (
        "saga_outcomes_total",
        "saga_step_duration_seconds_bucket",
        "saga_messages_dead_lettered_total",
        "saga_outbox_backlog",
        "saga_outbox_oldest_age_seconds",
        "saga_deadline_lag_seconds_bucket",
        "saga_consumer_reconnects_total",
    ):
        assert needed in joined, needed
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _event(kind: EventType, at: float, step: str | None = None, **data: object) -> SagaEvent:
    return SagaEvent(type=kind, at=T0 + timedelta(seconds=at), step=step, data=data)


def test_a_commit_that_ends_a_step_and_the_saga_records_their_durations() -> None:
    saga = "metrics_unit_saga"
    started = apply_commit(
        SagaState(saga_id="m-1"),
        1,
        "start",
        [
            _event(EventType.SAGA_STARTED, 0, saga_name=saga, start={}),
            _event(EventType.STEP_STARTED, 0, "reserve"),
        ],
    )
    resent = apply_commit(
        started, 2, "deadline:1", [_event(EventType.COMMAND_RESENT, 4, "reserve")]
    )
    ending = [_event(EventType.STEP_SUCCEEDED, 6, "reserve"), _event(EventType.SAGA_COMPLETED, 6)]
    ended = apply_commit(resent, 3, "reply", ending)
    steps = ("saga_step_duration_seconds_sum", "saga_step_duration_seconds_count")
    labels = {"saga": saga, "step": "reserve", "outcome": "succeeded"}
    before = [_value(n, **labels) for n in steps]
    outcomes = _value("saga_outcomes_total", saga=saga, outcome="completed")

    metrics.observe_commit(resent, ended, ending)

    # From the first send (t=0), not the resend (t=4).
    assert [_value(n, **labels) for n in steps] == [before[0] + 6.0, before[1] + 1]
    assert _value("saga_outcomes_total", saga=saga, outcome="completed") == outcomes + 1
    assert _value("saga_duration_seconds_sum", saga=saga, outcome="completed") >= 6.0
    metrics.observe_commit(ended, ended, ())  # nothing new ended: nothing counted
    assert _value("saga_outcomes_total", saga=saga, outcome="completed") == outcomes + 1


def test_handling_records_the_outcome_the_consumer_noted() -> None:
    queue = "metrics.unit.queue"

    def count(outcome: str) -> float:
        return _value("saga_handler_duration_seconds_count", queue=queue, outcome=outcome)

    with metrics.handling(queue):
        pass
    with metrics.handling(queue):
        metrics.mark_duplicate()
    with metrics.handling(queue):
        metrics.retried(queue, TimeoutError("slow"))
    with metrics.handling(queue):
        metrics.dead_lettered(queue, "retries_exhausted")
    metrics.dead_lettered(queue, MalformedMessage("schema", "bad").reason)  # before a handler
    metrics.mark_duplicate()  # outside handling: nothing to note

    assert [count(o) for o in ("ack", "duplicate", "retry", "dead_letter")] == [1, 1, 1, 1]
    assert _value("saga_messages_retried_total", queue=queue, reason="TimeoutError") == 1
    dead = "saga_messages_dead_lettered_total"
    assert _value(dead, queue=queue, reason="retries_exhausted") == 1
    assert _value(dead, queue=queue, reason="schema") == 1
    malformed = "saga_messages_malformed_total"
    assert _value(malformed, queue=queue, reason="schema") == 1
    assert _value(malformed, queue=queue, reason="retries_exhausted") == 0


def test_outbox_and_deadline_gauges_follow_what_the_pollers_saw() -> None:
    now = T0 + timedelta(minutes=5)
    metrics.outbox_backlog(3)
    metrics.outbox_oldest(now, T0)
    assert _value("saga_outbox_backlog") == 3
    assert _value("saga_outbox_oldest_age_seconds") == 300
    metrics.outbox_oldest(now, None)
    assert _value("saga_outbox_oldest_age_seconds") == 0
    metrics.outbox_oldest(now, (T0 + timedelta(minutes=4)).replace(tzinfo=None))  # naive: UTC
    assert _value("saga_outbox_oldest_age_seconds") == 60
    lags = _value("saga_deadline_lag_seconds_count")
    metrics.observe_deadline(now=now, deadline=now - timedelta(seconds=2))
    assert _value("saga_deadline_lag_seconds_count") == lags + 1


@pytest.mark.parametrize("port", ["65536", "-1", "x"])
def test_a_bad_metrics_port_is_refused_naming_the_variable(port: str) -> None:
    with pytest.raises(ConfigError, match="SAGA_METRICS_PORT"):
        Settings.from_env({"SAGA_METRICS_PORT": port})
    assert Settings.from_env({}).metrics_port == 0
    assert Settings.from_env({"SAGA_METRICS_PORT": "9100"}).metrics_port == 9100
