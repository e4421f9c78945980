"""OpenTelemetry traces across the services, carried by the messages and the outbox.

W3C trace context (``traceparent``, ``tracestate``) travels in the AMQP headers of every
command, reply and event (:func:`inject`, called by ``build_message``), and is stored
with every outbox entry (:func:`carrier`), so that a message the relay publishes after a
crash continues the trace of the message or request that caused it. Retry tiers and
dead-letter replays copy the headers, and with them the trace.

Spans: the API request (FastAPI instrumentation), each consumed message
(:func:`consuming`), each saga step from its command's publish to the store of the
commit for its reply (:func:`publishing` and :func:`step_replied`), each participant
handler (:func:`handling`), the outbox relay (:func:`relaying`), the saga's commit
(:func:`storing`), a passed deadline (:func:`deadline`, in the trace stored with the
commit that armed it) and the store's commands (pymongo instrumentation).

Off unless ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp`` over HTTP/protobuf,
``console``; several comma-separated). Unset or ``none``, no SDK provider is installed
and every hook here returns after one check of a module attribute. The exporter, the
sampler, the batch processor and the service name follow the standard ``OTEL_*``
variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``,
``OTEL_BSP_*``...). Unlike the SDK's own default, an unset ``OTEL_TRACES_EXPORTER`` means
off, so that no service tries to reach a collector nobody runs.

A step's span is kept open in the instance that sent the command, and ended by the same
instance when the reply's commit is stored; a reply taken by another instance (or after
a restart) ends no span there, and the open one is ended when the limit of open step
spans pushes it out (attribute ``saga.step.unfinished``). The trace itself still runs
on through the headers either way.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Mapping, MutableMapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from orchestrator.saga.decide import parse_command_id
from orchestrator.settings import ConfigError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from fastapi import FastAPI
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.trace import Span, Tracer

    from orchestrator.messaging.envelope import Envelope
    from orchestrator.saga.commits import Commit, DueDeadline, OutboxEntry

__all__ = [
    "TRACE_HEADERS",
    "active",
    "carrier",
    "configure",
    "consuming",
    "deadline",
    "handling",
    "inject",
    "install",
    "instrument_app",
    "publishing",
    "relaying",
    "step_replied",
    "storing",
    "uninstall",
]

TRACE_HEADERS = ("traceparent", "tracestate")
"""The W3C trace context headers, on AMQP messages and in stored outbox entries."""
EXPORTERS = ("otlp", "console")
OPEN_STEPS = 10_000
"""Step spans kept open at most (each waits for its reply)."""
NO_TRACE_URLS = "/health,/ready,/metrics,/ui/static"
"""API paths not traced: probes, scrapes and static files."""

_PROPAGATOR = TraceContextTextMapPropagator()
_NULL: AbstractContextManager[None] = contextlib.nullcontext()
_EMPTY: Mapping[str, str] = MappingProxyType({})


class _Tracing:
    """What is installed: nothing (off), or a provider and its tracer."""

    def __init__(self) -> None:
        self.tracer: Tracer | None = None
        self.provider: TracerProvider | None = None
        self.steps: OrderedDict[str, Span] = OrderedDict()


_on = _Tracing()


def active() -> bool:
    """Whether traces are recorded (a provider is installed)."""
    return _on.tracer is not None


def configure(service: str, env: Mapping[str, str] | None = None) -> bool:
    """Install an SDK provider with the exporters ``OTEL_TRACES_EXPORTER`` names, for a
    service process (``service`` is the default ``service.name``). False if tracing is
    off; raises :class:`ConfigError` for an exporter or protocol that cannot be used.
    ``env`` (default ``os.environ``) decides whether and which; the SDK's exporters and
    processors read their own variables from ``os.environ``."""
    env = os.environ if env is None else env
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n and n != "none"]
    if not names or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if active():
        return True
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415 - only when on
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    exporters = [_exporter(name, env) for name in names]
    provider = TracerProvider(resource=_resource(service, env), sampler=_sampler(env))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    install(provider)
    return True


def _exporter(name: str, env: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # noqa: PLC0415

        return ConsoleSpanExporter()
    if name != "otlp":
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={name!r}: use one of {', '.join(EXPORTERS)} or none"
        )
    for var in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(var, "").strip()
        if protocol:
            if protocol != "http/protobuf":
                raise ConfigError(f"{var}={protocol!r}: only http/protobuf is installed")
            break
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    return OTLPSpanExporter()


def _resource(service: str, env: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415

    named = env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    return Resource.create({} if named else {"service.name": f"saga-{service}"})


def _sampler(env: Mapping[str, str]) -> Sampler | None:
    """``OTEL_TRACES_SAMPLER`` if set (the SDK reads it), else every trace but those a
    lone store query would start (the pollers' and the bookkeeper's)."""
    if env.get("OTEL_TRACES_SAMPLER"):
        return None
    from opentelemetry.sdk.trace.sampling import ParentBased  # noqa: PLC0415

    return ParentBased(root=_lone_queries_dropped())


def _lone_queries_dropped() -> Sampler:
    from opentelemetry.sdk.trace.sampling import (  # noqa: PLC0415
        Decision,
        Sampler,
        SamplingResult,
    )

    class LoneQueriesDropped(Sampler):
        """Drops root client spans (store queries outside any traced work)."""

        def should_sample(  # noqa: PLR0917 - the SDK's signature
            self,
            parent_context: Context | None,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Any = None,
            links: Sequence[Any] | None = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            if kind is SpanKind.CLIENT:
                return SamplingResult(Decision.DROP)
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

        def get_description(self) -> str:
            return "LoneQueriesDropped"

    return LoneQueriesDropped()


def install(provider: TracerProvider, *, store: bool = True) -> None:
    """Record spans with ``provider`` (what :func:`configure` does; tests pass one with an
    in-memory exporter). ``store`` instruments pymongo: clients made from now on."""
    _on.provider = provider
    _on.tracer = provider.get_tracer("saga-orchestrator")
    if store:
        from opentelemetry.instrumentation.pymongo import PymongoInstrumentor  # noqa: PLC0415

        PymongoInstrumentor().instrument(tracer_provider=provider)


def uninstall() -> None:
    """Stop recording (tests): the hooks are no-ops again."""
    if _on.provider is not None:
        from opentelemetry.instrumentation.pymongo import PymongoInstrumentor  # noqa: PLC0415

        instrumentor = PymongoInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
    _on.tracer = _on.provider = None
    _on.steps.clear()


def instrument_app(app: FastAPI) -> None:
    """Trace the API's requests (not probes, scrapes or static files), if tracing is on."""
    if _on.provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor  # noqa: PLC0415

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=_on.provider,
        excluded_urls=NO_TRACE_URLS,
        exclude_spans=["receive", "send"],  # one span per request, not per ASGI message
    )


def inject(headers: MutableMapping[str, Any]) -> None:
    """Write the current span's context into AMQP headers (nothing when off)."""
    if _on.tracer is not None:
        _PROPAGATOR.inject(headers)


def carrier() -> Mapping[str, str]:
    """The current span's context as plain strings, to store with an outbox entry
    (empty when off or outside any span)."""
    if _on.tracer is None:
        return _EMPTY
    out: dict[str, str] = {}
    _PROPAGATOR.inject(out)
    return out


def _parent(headers: Mapping[str, Any] | None) -> Context | None:
    """The remote context the headers carry, or None."""
    if not headers or TRACE_HEADERS[0] not in headers:
        return None
    found = {}
    for key in TRACE_HEADERS:
        value = headers.get(key)
        if value is not None:
            found[key] = value.decode() if isinstance(value, bytes) else str(value)
    return _PROPAGATOR.extract(found)


def _saga(saga_id: str, message_id: str) -> dict[str, Any]:
    return {"saga.id": saga_id, "messaging.system": "rabbitmq", "messaging.message.id": message_id}


def _step_of(message_id: str) -> tuple[str, bool] | None:
    """(step, undo) of a command id (``<saga>:<step>:do|undo``, ``:r<n>`` for a resumed
    round), or None."""
    parts = parse_command_id(message_id)
    return (parts[1], parts[2] == "undo") if parts else None


def consuming(queue: str, envelope: Envelope) -> AbstractContextManager[Any]:
    """A consumer span for one delivery, child of the context in its headers."""
    tracer = _on.tracer
    if tracer is None:
        return _NULL
    attributes = _saga(envelope.correlation_id, envelope.message_id)
    attributes.update(
        {
            "messaging.destination.name": queue,
            "messaging.operation": "process",
            "messaging.message.type": envelope.message.TYPE,
            "messaging.rabbitmq.attempt": envelope.attempt,
        }
    )
    return tracer.start_as_current_span(
        f"process {queue}",
        context=_parent(envelope.headers),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    )


def handling(service: str, envelope: Envelope) -> AbstractContextManager[Any]:
    """A participant handler's span, child of the current (consumer) span."""
    tracer = _on.tracer
    if tracer is None:
        return _NULL
    attributes = _saga(envelope.correlation_id, envelope.message_id)
    attributes.update(
        {
            "participant": service,
            "saga.attempt": envelope.attempt,
            "message.type": envelope.message.TYPE,
        }
    )
    step = _step_of(envelope.message_id)
    if step is not None:
        attributes.update({"saga.step": step[0], "saga.compensation": step[1]})
    # A consumer span may be missing (a faststream participant): then the headers' parent.
    parent = None if trace.get_current_span().get_span_context().is_valid else envelope.headers
    return tracer.start_as_current_span(
        f"{service} handle {envelope.message.TYPE}", context=_parent(parent), attributes=attributes
    )


def storing(commit: Commit) -> AbstractContextManager[Any]:
    """The span of one commit's append (its wait for a group-commit batch included)."""
    tracer = _on.tracer
    if tracer is None:
        return _NULL
    return tracer.start_as_current_span(
        "saga commit",
        attributes={
            "saga.id": commit.saga_id,
            "saga.name": commit.saga_name,
            "saga.version": commit.version,
            "saga.events": [e.type.value for e in commit.events],
        },
    )


def deadline(due: DueDeadline) -> AbstractContextManager[Any]:
    """The span of a passed deadline's handling, in the trace of the commit that armed it."""
    tracer = _on.tracer
    if tracer is None:
        return _NULL
    return tracer.start_as_current_span(
        "saga deadline",
        context=_parent(due.trace),
        attributes={
            "saga.id": due.saga_id,
            "saga.name": due.saga_name,
            "saga.version": due.version,
        },
    )


def relaying(commit: Commit) -> AbstractContextManager[Any]:
    """The relay's span for republishing a commit's outbox, in the trace stored with it."""
    tracer = _on.tracer
    if tracer is None:
        return _NULL
    stored = commit.outbox[0].trace if commit.outbox else None
    return tracer.start_as_current_span(
        "outbox relay",
        context=_parent(stored),
        attributes={
            "saga.id": commit.saga_id,
            "saga.name": commit.saga_name,
            "saga.version": commit.version,
            "outbox.messages": len(commit.outbox),
        },
    )


@contextlib.contextmanager
def _published(tracer: Tracer, commit: Commit, entry: OutboxEntry) -> Any:
    step = _step_of(entry.message_id) if entry.kind == "command" else None
    opened = None
    context = None
    if step is not None:
        opened = _open_step(tracer, commit, entry, *step)
        context = trace.set_span_in_context(opened)
    attributes = _saga(commit.saga_id, entry.message_id)
    attributes.update({"messaging.operation": "publish", "messaging.message.type": entry.type})
    try:
        with tracer.start_as_current_span(
            f"publish {entry.type}", context=context, kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            yield span
    except BaseException as e:
        if opened is not None:  # not sent: the step's span ends here (a resend opens another)
            _on.steps.pop(entry.message_id, None)
            opened.set_status(Status(StatusCode.ERROR, f"command not published: {e!r}"))
            opened.end()
        raise


def publishing(commit: Commit, entry: OutboxEntry) -> AbstractContextManager[Any]:
    """The publish span of an outbox entry; a command also opens its saga step's span
    (its parent), which :func:`step_replied` ends."""
    tracer = _on.tracer
    if tracer is None:
        return _NULL
    return _published(tracer, commit, entry)


def _open_step(tracer: Tracer, commit: Commit, entry: OutboxEntry, step: str, undo: bool) -> Span:
    attempt = next(
        (e.attempt for e in reversed(commit.events) if e.step == step),
        1,
    )
    span = tracer.start_span(
        f"saga step {step}" + (" (compensation)" if undo else ""),
        attributes={
            "saga.id": commit.saga_id,
            "saga.name": commit.saga_name,
            "saga.step": step,
            "saga.attempt": attempt,
            "saga.compensation": undo,
            "messaging.message.id": entry.message_id,
        },
    )
    previous = _on.steps.pop(entry.message_id, None)
    if previous is not None:  # sent again (a resend, the relay): the earlier send ends
        previous.set_attribute("saga.step.resent", True)
        previous.end()
    _on.steps[entry.message_id] = span
    while len(_on.steps) > OPEN_STEPS:
        _, oldest = _on.steps.popitem(last=False)
        oldest.set_attribute("saga.step.unfinished", True)
        oldest.end()
    return span


def step_replied(command_id: str | None, commit: Commit) -> None:
    """The commit for a reply to ``command_id`` is stored, or (``command_id`` None) a
    deadline's commit: end the span of the step replied to and of every step the commit
    times out."""
    if _on.tracer is None:
        return
    events = [e.type.value for e in commit.events]
    ended = [] if command_id is None else [(command_id, "refused")]
    for event in commit.events:
        if event.type.value == "step_timed_out" and event.step:
            for kind in ("do", "undo"):
                ended.append((f"{commit.saga_id}:{event.step}:{kind}", "timed out"))
    for key, failure in ended:
        span = _on.steps.pop(key, None)
        if span is None:
            continue
        span.set_attribute("saga.outcome", events)
        if failure == "timed out" or "step_failed" in events:
            span.set_status(Status(StatusCode.ERROR, failure))
        span.end()
