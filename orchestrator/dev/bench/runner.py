"""``run_bench``: the system and the raw-broker baseline, level by level, for one saga.

1. The saga under test (``--saga``, default the first registered pack with a workload)
   and its pack's workload; a fresh namespace and database (``bench-<hex>``), seeded by
   the workload; the orchestrator and the saga's participants started as processes
   (and the read side with ``--read-side``); the workload prepares (e.g. places the
   orders a return saga returns), then the services only that needed stop.
2. The baseline derived from the saga's definition (:mod:`orchestrator.dev.bench.plan`):
   an orchestrator role and a role per participant on ``bench-<hex>-raw``.
3. Per concurrency level, the system then the baseline: a closed loop each, warm-up,
   measured window, drain. CPU, memory (``/proc``) and store commands (the probes) are
   sampled at the window's edges. Alternating keeps each ratio's two rates minutes apart
   at most; the system's processes are stopped (SIGSTOP) while the baseline runs.
4. While every connection is still open, the broker's publish counts per namespace
   (management API), less what was published before measuring; then the processes stop
   and everything is deleted.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aio_pika
from pymongo.errors import PyMongoError

from orchestrator.dev.bench.accounting import (
    BeforeMeasuring,
    before_measuring,
    count_messages,
    notes,
    outbox_estimate,
    saga_path_estimate,
)
from orchestrator.dev.bench.baseline import RawTopology
from orchestrator.dev.bench.children import start_all, stop_all
from orchestrator.dev.bench.history import (
    HistorySeed,
    capture_templates,
    run_templates,
    seed_history,
)
from orchestrator.dev.bench.machine import describe_machine
from orchestrator.dev.bench.management import Management, ManagementUnavailable
from orchestrator.dev.bench.plan import baseline_plan
from orchestrator.dev.bench.profilers import Profilers, available_profiler
from orchestrator.dev.bench.results import BenchReport, LevelResult
from orchestrator.dev.bench.system import BenchSystem
from orchestrator.dev.bench.targets import baseline_roles, baseline_target, system_target
from orchestrator.dev.bench.workloads import resolve

if TYPE_CHECKING:
    from contracts import Message
    from orchestrator.dev.bench.children import BenchProcess
    from orchestrator.dev.bench.targets import Target
    from orchestrator.dev.bench.workloads import SagaUnderTest
    from orchestrator.settings import Settings

__all__ = ["BenchConfig", "Display", "NullDisplay", "run_bench"]


class Display(Protocol):
    """Where progress goes while the benchmark runs."""

    def phase(self, title: str) -> None:
        """A new phase begins."""

    def update(self, fraction: float, text: str) -> None:
        """Progress within the phase (0..1) and a status line."""


class NullDisplay:
    """Shows nothing."""

    def phase(self, title: str) -> None:
        """Nothing."""

    def update(self, fraction: float, text: str) -> None:
        """Nothing."""


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """What to run. ``duration`` is the measured window of each level."""

    saga: str | None = None
    """The saga to run; default the first saga of the first registered pack with a
    benchmark workload."""
    workload_options: Mapping[str, str] = field(default_factory=dict)
    """Options of the saga's workload (``--workload-option KEY=VALUE``)."""
    concurrency: tuple[int, ...] = (50,)
    duration: float = 20.0
    warmup: float = 3.0
    baseline: bool = True
    publish_progress: bool = True
    read_side: bool = False
    """Also run the read-side service, which consumes the progress events."""
    profile_dir: Path | None = None
    profiler: str = "auto"
    """``py-spy``, ``pyinstrument``, or ``auto`` (py-spy if installed)."""
    log_dir: Path | None = None
    saga_timeout: float = 60.0
    management_url: str | None = None
    history: int = 0
    """Finished sagas seeded before measuring (``--history``), cloned from real ones."""

    def as_dict(self) -> dict[str, Any]:
        """For the JSON report."""
        d = asdict(self)
        d["workload_options"] = dict(self.workload_options)
        d["profile_dir"] = str(self.profile_dir) if self.profile_dir else None
        d["log_dir"] = str(self.log_dir) if self.log_dir else None
        return d


@dataclass(kw_only=True)
class _Baseline:
    """The baseline's topology and processes, once the saga's plan is known."""

    namespace: str
    settings: Settings
    log_dir: Path
    raw: RawTopology | None = None
    roles: list[BenchProcess] = field(default_factory=list)
    start: Message | None = None
    """The start command the driver publishes for every baseline saga."""

    async def start_roles(self, saga: SagaUnderTest, queue_type: str, display: Display) -> None:
        """Derive the plan from the saga's definition and a start of its workload, and
        start the role processes."""
        self.start = saga.workload.start(uuid.uuid4().hex)
        self.raw = RawTopology(
            namespace=self.namespace,
            plan=baseline_plan(saga.definition, self.start),
            queue_type=queue_type,
        )
        self.roles = baseline_roles(self.raw, self.settings, self.log_dir)
        display.phase(f"starting the raw-broker baseline ({len(self.roles)} processes)")
        await start_all(self.roles)


async def run_bench(
    settings: Settings, config: BenchConfig, display: Display | None = None
) -> BenchReport:
    """Run the benchmark; the namespaces and the database are removed whatever happens.
    A saga that cannot be benchmarked raises
    :class:`~orchestrator.dev.bench.workloads.WorkloadError` before anything starts."""
    shown = display or NullDisplay()
    tag = uuid.uuid4().hex[:8]
    system_settings = settings.with_(
        namespace=f"bench-{tag}",
        database=f"bench_{tag}",
        publish_progress=config.publish_progress,
        log_format="json",
    )
    saga = resolve(
        system_settings, config.saga, config.workload_options, read_side=config.read_side
    )
    with tempfile.TemporaryDirectory(prefix="saga-bench-") as tmp:
        logs = (config.log_dir or Path(tmp)) / f"bench-{tag}"
        system = BenchSystem(
            system_settings,
            work_dir=Path(tmp),
            log_dir=logs,
            services=saga.services,
            seeding=saga.seeding_services,
            profilers=_profilers(config),
        )
        raw_namespace = f"bench-{tag}-raw"
        baseline = _Baseline(
            namespace=raw_namespace,
            settings=system_settings.with_(namespace=raw_namespace),
            log_dir=logs / "baseline",
        )
        try:
            return await _run(system, baseline, saga, config, shown)
        finally:
            shown.phase("cleaning up")
            await stop_all(baseline.roles)
            await _cleanup(system, baseline.raw)


async def _run(
    system: BenchSystem,
    baseline: _Baseline,
    saga: SagaUnderTest,
    config: BenchConfig,
    display: Display,
) -> BenchReport:
    management = Management(amqp_url=system.settings.amqp_url, url=config.management_url)
    workload = saga.workload
    services = len(saga.services) + len(saga.seeding_services)
    display.phase(f"starting the system (store, {services} services)")
    await system.start(workload)
    display.phase(f"preparing the {saga.name} workload")
    await system.prepare(workload)
    if config.baseline:
        await baseline.start_roles(saga, system.settings.queue_type, display)
    empty: dict[str, list[LevelResult]] = {}
    history = None
    if config.history:
        display.phase("measuring before the history is seeded")
        async with _targets(system, baseline, saga) as targets:
            empty = await _levels(system, targets, saga, config, display)
        history = await _seed_history(system, saga, config, display)
    report = await _new_report(system, baseline, saga, config, management)
    report.empty_store = empty
    if history is not None:
        report.history = history.as_dict()
        report.notes.append(
            f"history: {history.sagas} finished sagas seeded before measuring "
            f"({history.documents} documents from {history.templates} real sagas) "
            f"in {history.seconds:.1f} s"
        )
    ran = await system.db["saga_commits"].find_one({}, {"_id": 1}) is not None
    if ran:
        display.phase("waiting for the broker's statistics of the preparation")
    before = await before_measuring(
        system, management, asked=ran, baseline=baseline.raw if empty.get("baseline") else None
    )
    report.memory = {"started": system.rss()}
    report.messages = await _measure(
        system, baseline, saga, config=config, display=display, report=report, before=before
    )
    report.memory = {**report.memory, "end": system.rss()}
    await _finish(system, baseline=baseline, saga=saga, config=config, report=report, before=before)
    return report


async def _new_report(
    system: BenchSystem,
    baseline: _Baseline,
    saga: SagaUnderTest,
    config: BenchConfig,
    management: Management,
) -> BenchReport:
    return BenchReport(
        config=config.as_dict(),
        machine=await _machine(system, management),
        namespaces={
            "system": system.settings.namespace,
            "database": system.settings.database,
            "baseline": baseline.namespace,
        },
        saga=saga.as_dict(),
    )


async def _finish(
    system: BenchSystem,
    *,
    baseline: _Baseline,
    saga: SagaUnderTest,
    config: BenchConfig,
    report: BenchReport,
    before: BeforeMeasuring,
) -> None:
    """Stop everything; the whole run's store commands, the store's count of messages."""
    await stop_all(baseline.roles)
    await system.stop_services()
    report.store_total = system.store_ops().minus(before.store)
    counted = report.messages["system"]
    try:
        stored = await system.outbox_messages(since=before.at)
    except PyMongoError as e:  # a cross-check: the figures measured stand without it
        report.notes.append(f"the store-side count of messages could not be read: {e}")
    else:
        counted["stored"] = stored
        counted["outbox_estimate"] = outbox_estimate(report.sagas_started(), stored)
        counted["saga_path_estimate"] = saga_path_estimate(report.sagas_started(), stored)
    if system.profilers is not None:
        report.profiles = system.profilers.summaries()
    pyinstrument = system.profilers is not None and system.profilers.kind == "pyinstrument"
    report.notes.extend(notes(report, saga_timeout=config.saga_timeout, profiled=pyinstrument))
    report.notes.extend(saga.workload.notes())


async def _seed_history(
    system: BenchSystem, saga: SagaUnderTest, config: BenchConfig, display: Display
) -> HistorySeed:
    """Run template sagas, then clone them ``config.history`` times into the store."""
    display.phase("running the template sagas of the history")
    count = 3
    await saga.workload.reserve(count, 0.0)
    ids = await run_templates(
        system.settings, saga.workload.start, count=count, read_side=config.read_side
    )
    templates = await capture_templates(system.db, ids)
    display.phase(f"seeding {config.history} finished sagas")
    return await seed_history(
        system.db,
        templates,
        config.history,
        progress=lambda done, total: display.update(done / total, f"{done}/{total}"),
    )


async def _measure(
    system: BenchSystem,
    baseline: _Baseline,
    saga: SagaUnderTest,
    *,
    config: BenchConfig,
    display: Display,
    report: BenchReport,
    before: BeforeMeasuring,
) -> dict[str, Any]:
    """Every level of both targets, alternating, each level prepared by the workload;
    then the messages counted while every connection is still open (the broker's
    statistics of a closed channel may lack its last seconds)."""
    async with _targets(system, baseline, saga) as targets:
        levels = await _levels(system, targets, saga, config, display)
        report.system, report.baseline = levels["system"], levels["baseline"]
        display.phase("waiting for the broker's statistics")
        management = Management(amqp_url=system.settings.amqp_url, url=config.management_url)
        return await count_messages(system, baseline.raw, report, management, before)


@asynccontextmanager
async def _targets(
    system: BenchSystem, baseline: _Baseline, saga: SagaUnderTest
) -> AsyncIterator[list[Target]]:
    """The system's target and, if it runs, the baseline's, entered."""
    raw, start = baseline.raw, baseline.start
    async with AsyncExitStack() as stack:
        targets: list[Target] = [system_target(system, saga.workload.start)]
        if raw is not None and start is not None:
            targets.append(baseline_target(raw, baseline.roles, system.settings.amqp_url, start))
        for target in targets:
            await stack.enter_async_context(target)
        yield targets


async def _levels(
    system: BenchSystem,
    targets: list[Target],
    saga: SagaUnderTest,
    config: BenchConfig,
    display: Display,
) -> dict[str, list[LevelResult]]:
    """Every level of the targets, alternating, each prepared by the workload."""
    for concurrency in config.concurrency:
        display.phase(f"preparing {concurrency} in flight")
        await saga.workload.reserve(concurrency, config.warmup + config.duration)
        await targets[0].level(concurrency, config, display)
        if len(targets) > 1:
            await _paused(system, targets[1].level(concurrency, config, display))
    return {"system": targets[0].levels, "baseline": targets[1].levels if len(targets) > 1 else []}


async def _paused(system: BenchSystem, work: Awaitable[LevelResult]) -> LevelResult:
    """Run ``work`` (a baseline level) with the system's processes stopped: idle, they
    still poll the store (deadlines, outbox) and would compete with the baseline.

    A second's grace first: the last sagas' progress events may still wait for their
    confirms, and a confirm that arrived after a long stop would find its publish timed
    out (the clock ran on), so the relay would publish those messages again."""
    await asyncio.sleep(1.0)
    system.pause()
    try:
        return await work
    finally:
        system.resume()


def _profilers(config: BenchConfig) -> Profilers | None:
    if config.profile_dir is None:
        return None
    kind = available_profiler() if config.profiler == "auto" else config.profiler
    return Profilers(config.profile_dir, kind=kind)


async def _machine(system: BenchSystem, management: Management) -> dict[str, Any]:
    try:
        rabbitmq = f"RabbitMQ {await asyncio.to_thread(management.version)}"
    except ManagementUnavailable:
        rabbitmq = "RabbitMQ (version unknown: management API unavailable)"
    return describe_machine(rabbitmq=rabbitmq, mongodb=await system.describe_store())


async def _cleanup(system: BenchSystem, raw: RawTopology | None) -> None:
    """Remove what the run created; a failure here is reported, not raised, so that it
    does not hide why the run itself failed."""
    try:
        await system.cleanup()
    except Exception as e:  # report it and go on cleaning
        print(f"bench: clean-up of {system.settings.namespace} failed: {e!r}", file=sys.stderr)
    if raw is None:
        return
    try:
        connection = await aio_pika.connect(
            system.settings.amqp_url,
            client_properties={"connection_name": f"{raw.namespace}.bench-cleanup"},
        )
        async with connection:
            await raw.delete(await connection.channel())
    except Exception as e:  # likewise
        print(f"bench: clean-up of {raw.namespace} failed: {e!r}", file=sys.stderr)
