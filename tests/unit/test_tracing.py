"""Tracing is off unless OTEL_TRACES_EXPORTER names an exporter, and then costs a check;
the trace context an outbox entry stores is plain data that round-trips the store."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from contracts import OrderLine, ReserveStock
from orchestrator.messaging.envelope import Envelope, build_message
from orchestrator.observability import tracing
from orchestrator.saga.commits import Commit, OutboxEntry
from orchestrator.saga.state import EventType, SagaEvent
from orchestrator.settings import ConfigError
from orchestrator.store.shape import outbox_trace

COMMAND = ReserveStock(order_id="o-1", lines=(OrderLine(sku="apple", quantity=1),))
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def envelope(**headers: object) -> Envelope:
    return Envelope(
        message=COMMAND,
        message_id="s1:reserve_stock:do",
        correlation_id="s1",
        headers=headers,
    )


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": " "},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"},
    ],
)
def test_tracing_is_off_unless_an_exporter_is_named(env: dict[str, str]) -> None:
    assert tracing.configure("orchestrator", env) is False
    assert not tracing.active()


def test_when_off_every_hook_is_a_shared_no_op_and_headers_stay_untouched() -> None:
    assert not tracing.active()
    first = tracing.consuming("q", envelope(traceparent=TRACEPARENT))
    assert first is tracing.handling("inventory", envelope())
    assert tracing.carrier() == {}
    headers: dict[str, object] = {}
    tracing.inject(headers)
    assert headers == {}
    message = build_message(COMMAND, message_id="m", correlation_id="s")
    assert "traceparent" not in (message.headers or {})


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_an_exporter_that_cannot_be_used_is_a_clear_error(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        tracing.configure("orchestrator", env)
    assert not tracing.active()


def test_root_store_queries_are_dropped_and_other_roots_kept() -> None:
    """Pollers' lone queries start no trace; a query inside traced work is recorded."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=tracing._sampler({}))  # the default sampler
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    tracer.start_span("db.find", kind=SpanKind.CLIENT).end()
    with tracer.start_as_current_span("process q", kind=SpanKind.CONSUMER):
        tracer.start_span("db.insert", kind=SpanKind.CLIENT).end()
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["db.insert", "process q"]


def test_with_tracing_on_headers_and_outbox_entries_carry_the_current_context() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider, store=False)
    try:
        with tracing.consuming("q", envelope(traceparent=TRACEPARENT)):
            stored = dict(tracing.carrier())
            message = build_message(COMMAND, message_id="m", correlation_id="s")
        (span,) = exporter.get_finished_spans()
    finally:
        tracing.uninstall()
    assert span.context is not None
    assert span.parent is not None
    assert f"{span.context.trace_id:032x}" == TRACEPARENT.split("-")[1], "continues the sender's"
    assert stored["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
    assert (message.headers or {})["traceparent"] == stored["traceparent"]
    assert (span.attributes or {})["saga.id"] == "s1"


def test_an_outbox_entry_stores_its_trace_only_when_it_has_one() -> None:
    entry = OutboxEntry(kind="command", type="t.v1", body={}, message_id="m", routing_key="k")
    assert "trace" not in entry.to_doc()
    with_trace = OutboxEntry(
        kind="command",
        type="t.v1",
        body={},
        message_id="m",
        routing_key="k",
        trace={"traceparent": TRACEPARENT},
    )
    doc = with_trace.to_doc()
    assert doc["trace"] == {"traceparent": TRACEPARENT}
    assert OutboxEntry.from_doc(doc) == with_trace
    assert OutboxEntry.from_doc(entry.to_doc()).trace == {}


def test_a_relayed_commit_continues_the_trace_stored_with_its_outbox() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    entry = OutboxEntry(
        kind="event",
        type="t.v1",
        body={},
        message_id="m",
        routing_key="k",
        trace={"traceparent": TRACEPARENT},
    )
    commit = Commit(
        saga_id="s1",
        version=2,
        causation_id="c",
        events=(),
        outbox=(entry,),
        created_at=datetime(2030, 1, 1, tzinfo=UTC),
    )
    tracing.install(provider, store=False)
    try:
        with tracing.relaying(commit), tracing.publishing(commit, entry):
            pass
    finally:
        tracing.uninstall()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"outbox relay", "publish t.v1"}
    relay = spans["outbox relay"]
    assert relay.parent is not None
    assert f"{relay.parent.span_id:016x}" == TRACEPARENT.split("-")[2]
    assert {f"{s.context.trace_id:032x}" for s in spans.values() if s.context} == {
        TRACEPARENT.split("-")[1]
    }


def test_a_step_span_runs_from_its_command_to_its_reply_or_its_timeout() -> None:
    """The span opened with a command's publish ends when the reply's commit is stored,
    or, failed, when a deadline's commit times the step out."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    at = datetime(2030, 1, 1, tzinfo=UTC)

    def commit(version: int, *events: SagaEvent, outbox: tuple[OutboxEntry, ...] = ()) -> Commit:
        return Commit(
            saga_id="s1",
            saga_name="travel",
            version=version,
            causation_id="c",
            events=events,
            outbox=outbox,
            created_at=at,
        )

    def command(step: str) -> OutboxEntry:
        return OutboxEntry(
            kind="command", type="t.v1", body={}, message_id=f"s1:{step}:do", routing_key="k"
        )

    sent = commit(
        1,
        SagaEvent(type=EventType.STEP_STARTED, at=at, step="hotel", attempt=2),
        outbox=(command("hotel"),),
    )
    tracing.install(provider, store=False)
    try:
        with tracing.publishing(sent, sent.outbox[0]):
            pass
        assert [s.name for s in exporter.get_finished_spans()] == ["publish t.v1"]
        tracing.step_replied(
            "s1:hotel:do", commit(2, SagaEvent(type=EventType.STEP_SUCCEEDED, at=at, step="hotel"))
        )
        flight = commit(3, outbox=(command("flight"),))
        with tracing.publishing(flight, flight.outbox[0]):
            pass
        tracing.step_replied(
            None, commit(4, SagaEvent(type=EventType.STEP_TIMED_OUT, at=at, step="flight"))
        )
    finally:
        tracing.uninstall()
    steps = {s.name: s for s in exporter.get_finished_spans() if s.name.startswith("saga step")}
    assert set(steps) == {"saga step hotel", "saga step flight"}
    hotel, flight_span = steps["saga step hotel"], steps["saga step flight"]
    assert (hotel.attributes or {})["saga.attempt"] == 2
    assert hotel.status.is_ok
    assert (flight_span.attributes or {})["saga.step"] == "flight"
    assert not flight_span.status.is_ok


def test_a_deadline_finds_the_trace_stored_with_the_outbox_of_the_commit_that_armed_it() -> None:
    traced = {"traceparent": TRACEPARENT}
    assert outbox_trace({"outbox": [{"type": "a"}, {"type": "b", "trace": traced}]}) == traced
    assert outbox_trace({"outbox": [{"type": "a"}]}) == {}
    assert outbox_trace({}) == {}
