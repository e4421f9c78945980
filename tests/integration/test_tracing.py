"""OpenTelemetry traces over the real broker and store, recorded by the SDK's in-memory
exporter: one trace per saga, from the API request through the orchestrator and every
participant to the outcome event, and still one after a retry, a dead-letter replay and
a crash between store and publish."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from contracts import AuthorizePayment, SagaCompleted
from orchestrator.observability import tracing
from orchestrator.ops import Selector, peek, replay
from orchestrator.saga.state import Status
from tests.faults import Broken, Flaky
from tests.helpers import eventually
from tests.integration.apiserver import serve_api
from tests.integration.conftest import System, SystemFactory
from tests.integration.test_delivery_faults import CrashBeforePublishing

pytestmark = pytest.mark.integration

TOKEN = "tracing-operator-token"
STEPS = (
    "reserve_stock",
    "authorize_payment",
    "schedule_shipment",
    "capture_payment",
    "ship_stock",
)
PARTICIPANTS = ("inventory", "payment", "shipping")

_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))
# One provider for the module: pymongo's instrumentation keeps the first one it is given.


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on (before the system starts, so its store clients are instrumented)."""
    _EXPORTER.clear()
    tracing.install(_PROVIDER)
    try:
        yield _EXPORTER
    finally:
        tracing.uninstall()
        _EXPORTER.clear()


def of_saga(exporter: InMemorySpanExporter, saga_id: str) -> list[ReadableSpan]:
    """The spans that name the saga."""
    return [
        s for s in exporter.get_finished_spans() if (s.attributes or {}).get("saga.id") == saga_id
    ]


def trace_of(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def names(spans: list[ReadableSpan]) -> set[str]:
    return {s.name for s in spans}


async def outcome_published(exporter: InMemorySpanExporter, saga_id: str) -> list[ReadableSpan]:
    """Wait for the span of the saga's outcome event; returns the saga's spans."""
    return await eventually(
        lambda: asyncio.sleep(0, of_saga(exporter, saga_id)),
        until=lambda spans: f"publish {SagaCompleted.TYPE}" in names(spans),
        what="the outcome event's publish span",
    )


def one_trace(spans: list[ReadableSpan]) -> int:
    """The single trace id the spans share (the assertion shows every other one)."""
    traces = {trace_of(s) for s in spans}
    assert len(traces) == 1, sorted((trace_of(s), s.name) for s in spans)
    return traces.pop()


def ancestors(span: ReadableSpan, spans: list[ReadableSpan]) -> list[str]:
    """Names of the span's ancestors among ``spans``, nearest first."""
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span.name)
    return chain


async def test_one_trace_from_post_orders_through_every_participant_to_the_outcome(
    spans: InMemorySpanExporter, make_system: SystemFactory
) -> None:
    """POST /orders starts a trace; the orchestrator's consumers, its commits and store
    writes, each step (command sent to reply stored, with saga attributes), each
    participant's handler and the outcome event's publish are all in it."""
    system: System = await make_system(operator_token=TOKEN)
    await system.inventory.inventory.set_stock("apple", 5)
    body = {
        "order_id": "traced-1",
        "customer_id": "c-1",
        "amount_cents": 1500,
        "lines": [{"sku": "apple", "quantity": 2}],
        "ship_to": "1 Main Street",
    }
    async with serve_api(system.settings, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        response = await http.post("/orders", json=body, headers={"Idempotency-Key": "trace-1"})
        assert response.status_code == 202, response.text
    saga_id = response.json()["saga_id"]
    assert (await system.settle(saga_id)).status is Status.COMPLETED
    saga_spans = await outcome_published(spans, saga_id)

    request = next(
        s
        for s in spans.get_finished_spans()
        if s.name == "POST /orders" and s.kind is SpanKind.SERVER
    )
    trace_id = one_trace([request, *saga_spans])
    in_trace = [s for s in spans.get_finished_spans() if trace_of(s) == trace_id]
    found = names(in_trace)
    for step in STEPS:
        assert f"saga step {step}" in found
    for participant in PARTICIPANTS:
        assert any(n.startswith(f"{participant} handle ") for n in found), (participant, found)
    assert "saga commit" in found
    assert any(s.kind is SpanKind.CLIENT and ".insert" in s.name for s in in_trace), found
    for queue in ("starts", "replies"):
        assert any(n.endswith(f".orchestrator.order_fulfilment.{queue}") for n in found), found

    steps = {s.attributes["saga.step"]: s for s in in_trace if s.name.startswith("saga step")}
    assert set(steps) == set(STEPS)
    for step, span in steps.items():
        assert span.attributes is not None
        assert span.attributes["saga.name"] == "order_fulfilment"
        assert span.attributes["saga.id"] == saga_id
        assert span.attributes["saga.attempt"] == 1
        assert "step_succeeded" in span.attributes["saga.outcome"]
        handler = next(
            s
            for s in in_trace
            if (s.attributes or {}).get("saga.step") == step and " handle " in s.name
        )
        assert f"saga step {step}" in ancestors(handler, in_trace), "the handler is in its step"
        times = (span.start_time, handler.start_time, handler.end_time, span.end_time)
        assert list(times) == sorted(t or 0 for t in times), "within the step's span"


async def test_a_message_retried_once_stays_in_its_sagas_trace(
    spans: InMemorySpanExporter, make_system: SystemFactory
) -> None:
    """Payment fails once: its second delivery (through the retry tier) is processed in
    the same trace, under the same parent as the first."""
    system: System = await make_system(retry_delays=(0.1,))
    await system.inventory.inventory.set_stock("apple", 5)
    flaky = Flaky(system.payment.authorize, failures=1)
    system.payment.on_command(AuthorizePayment, flaky)
    saga_id = await system.order(("apple", 1))
    assert (await system.settle(saga_id)).status is Status.COMPLETED
    saga_spans = await outcome_published(spans, saga_id)

    one_trace(saga_spans)
    deliveries = [
        s
        for s in saga_spans
        if s.kind is SpanKind.CONSUMER
        and s.name.endswith(".payment.commands")
        and (s.attributes or {}).get("messaging.message.type") == AuthorizePayment.TYPE
    ]
    assert sorted(s.attributes["messaging.rabbitmq.attempt"] for s in deliveries) == [1, 2]
    assert len({s.parent.span_id for s in deliveries if s.parent}) == 1, "one publish"
    assert flaky.calls[saga_id] == 2


async def test_a_dead_lettered_message_replayed_by_an_operator_stays_in_its_sagas_trace(
    spans: InMemorySpanExporter, make_system: SystemFactory
) -> None:
    """AuthorizePayment is dead-lettered while payment is broken; an operator's replay
    keeps its traceparent, so the delivery that completes the saga is in its trace."""
    system: System = await make_system(retry_delays=(0.1,), step_timeout=300.0, step_max_sends=1)
    await system.inventory.inventory.set_stock("apple", 5)
    broken = Broken(system.payment.authorize)
    system.payment.on_command(AuthorizePayment, broken)
    saga_id = await system.order(("apple", 1))
    bus = system.client.bus
    parked = await eventually(
        lambda: peek(bus, "payment.commands", selector=Selector(saga_id=saga_id)),
        until=lambda xs: len(xs) == 1,
        what="the command dead-lettered",
    )
    assert "traceparent" in parked[0].headers
    broken.fixed = True
    report = await replay(bus, "payment.commands", selector=Selector(saga_id=saga_id))
    assert report.count("done") == 1
    assert (await system.settle(saga_id)).status is Status.COMPLETED
    saga_spans = await outcome_published(spans, saga_id)

    trace_id = one_trace(saga_spans)
    payments = [s for s in saga_spans if s.name == "payment handle payment.authorize_payment.v1"]
    assert len(payments) == 3, "two attempts, then the replayed one"
    assert {trace_of(s) for s in payments} == {trace_id}
    assert str(parked[0].headers["traceparent"]).split("-")[1] == f"{trace_id:032x}"


async def test_a_command_the_relay_publishes_after_a_crash_continues_the_trace(
    spans: InMemorySpanExporter, make_system: SystemFactory
) -> None:
    """The orchestrator stores a step and dies before publishing its command: the
    restarted instance's relay publishes it from the outbox in the saga's trace (the
    trace context stored with the entry), and the saga finishes in that trace."""
    system: System = await make_system(relay_grace=0.5, relay_interval=0.2)
    await system.inventory.inventory.set_stock("apple", 5)
    dispatcher = system.orchestrator.runtime.dispatcher
    crasher = CrashBeforePublishing(dispatcher.publisher, "payment.authorize_payment")
    dispatcher.publisher = crasher
    saga_id = await system.order(("apple", 1))
    await asyncio.wait_for(crasher.crashed.wait(), timeout=30)
    stored = await system.client.history(saga_id)
    entry = next(o for c in stored for o in c.outbox if o.routing_key == crasher.routing_key)
    assert entry.trace["traceparent"].startswith("00-")

    await system.restart_orchestrator(crash=True)
    assert (await system.settle(saga_id)).status is Status.COMPLETED
    saga_spans = await outcome_published(spans, saga_id)

    trace_id = one_trace(saga_spans)
    assert entry.trace["traceparent"].split("-")[1] == f"{trace_id:032x}"
    relayed = [s for s in saga_spans if s.name == "outbox relay"]
    assert relayed, names(saga_spans)
    payment = next(s for s in saga_spans if s.name.startswith("payment handle "))
    assert "outbox relay" in ancestors(payment, saga_spans)


async def test_a_command_resent_by_its_deadline_stays_in_its_sagas_trace(
    spans: InMemorySpanExporter, make_system: SystemFactory
) -> None:
    """Payment's first delivery fails into a long retry tier, so the step times out and
    the deadline resends the command: the resend (from the trace context stored with the
    commit that armed the deadline) and the rest of the saga are in the saga's trace."""
    system: System = await make_system(retry_delays=(30.0,), step_timeout=1.0, step_max_sends=3)
    await system.inventory.inventory.set_stock("apple", 5)
    flaky = Flaky(system.payment.authorize, failures=1)
    system.payment.on_command(AuthorizePayment, flaky)
    saga_id = await system.order(("apple", 1))
    assert (await system.settle(saga_id)).status is Status.COMPLETED
    saga_spans = await outcome_published(spans, saga_id)

    one_trace(saga_spans)
    assert "saga deadline" in names(saga_spans)
    attempts = sorted(
        (s.attributes or {})["saga.attempt"]
        for s in saga_spans
        if s.name == "saga step authorize_payment"
    )
    assert attempts == [1, 2], "the first send, and the deadline's resend"
    resend = next(
        s
        for s in saga_spans
        if s.name == "saga step authorize_payment" and (s.attributes or {})["saga.attempt"] == 2
    )
    assert "saga deadline" in ancestors(resend, saga_spans)
