"""``run_bench``: the system and the raw-broker baseline, level by level.

1. A fresh namespace and database (``bench-<hex>``), stock seeded, the four services
   started as processes, and the baseline's four role processes on ``bench-<hex>-raw``.
2. Per concurrency level, the system then the baseline: a closed loop each, warm-up,
   measured window, drain. CPU (``/proc``) and store commands (the probes) are sampled at
   the window's edges. Alternating keeps each ratio's two rates minutes apart at most;
   the system's processes are stopped (SIGSTOP) while the baseline runs.
3. While every connection is still open, the broker's publish counts per namespace
   (management API); then the processes stop and everything is deleted.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aio_pika

from orchestrator.bench.accounting import (
    backlog,
    baseline_exchanges,
    count_publishes,
    notes,
    outbox_estimate,
    system_exchanges,
)
from orchestrator.bench.baseline import RawTopology
from orchestrator.bench.children import start_all, stop_all
from orchestrator.bench.machine import describe_machine
from orchestrator.bench.management import Management, ManagementUnavailable
from orchestrator.bench.profilers import Profilers, available_profiler
from orchestrator.bench.results import BenchReport, LevelResult
from orchestrator.bench.system import CORE_SERVICES, BenchSystem, Workload
from orchestrator.bench.targets import baseline_roles, baseline_target, system_target

if TYPE_CHECKING:
    from orchestrator.bench.children import BenchProcess
    from orchestrator.bench.targets import Target
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
    workload: Workload = field(default_factory=Workload)
    saga_timeout: float = 60.0
    management_url: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """For the JSON report."""
        d = asdict(self)
        d["profile_dir"] = str(self.profile_dir) if self.profile_dir else None
        d["log_dir"] = str(self.log_dir) if self.log_dir else None
        return d


async def run_bench(
    settings: Settings, config: BenchConfig, display: Display | None = None
) -> BenchReport:
    """Run the benchmark; the namespaces and the database are removed whatever happens."""
    shown = display or NullDisplay()
    tag = uuid.uuid4().hex[:8]
    system_settings = settings.with_(
        namespace=f"bench-{tag}",
        database=f"bench_{tag}",
        publish_progress=config.publish_progress,
        log_format="json",
    )
    with tempfile.TemporaryDirectory(prefix="saga-bench-") as tmp:
        logs = (config.log_dir or Path(tmp)) / f"bench-{tag}"
        system = BenchSystem(
            system_settings,
            work_dir=Path(tmp),
            log_dir=logs,
            services=(*CORE_SERVICES, "readside") if config.read_side else CORE_SERVICES,
            profilers=_profilers(config),
        )
        raw = RawTopology(namespace=f"bench-{tag}-raw", queue_type=settings.queue_type)
        roles = baseline_roles(system_settings.with_(namespace=raw.namespace), logs / "baseline")
        try:
            return await _run(system, raw, roles if config.baseline else [], config, shown)
        finally:
            shown.phase("cleaning up")
            await stop_all(roles)
            await _cleanup(system, raw)


async def _run(
    system: BenchSystem,
    raw: RawTopology,
    roles: list[BenchProcess],
    config: BenchConfig,
    display: Display,
) -> BenchReport:
    management = Management(amqp_url=system.settings.amqp_url, url=config.management_url)
    display.phase(f"starting the system (store, {len(system.service_names)} services)")
    await system.start(config.workload)
    if roles:
        display.phase("starting the raw-broker baseline (4 processes)")
        await start_all(roles)
    report = BenchReport(
        config=config.as_dict(),
        machine=await _machine(system, management),
        namespaces={
            "system": system.settings.namespace,
            "database": system.settings.database,
            "baseline": raw.namespace,
        },
    )
    report.messages = await _measure(
        system, raw, roles, config=config, display=display, report=report, management=management
    )
    display.phase("stopping the system")
    await stop_all(roles)
    await system.stop_services()
    report.store_total = system.store_ops()
    outbox = await system.outbox_messages()
    report.messages["system"]["outbox_estimate"] = outbox_estimate(report.sagas_started(), outbox)
    if system.profilers is not None:
        report.profiles = system.profilers.summaries()
    pyinstrument = system.profilers is not None and system.profilers.kind == "pyinstrument"
    report.notes.extend(notes(report, saga_timeout=config.saga_timeout, profiled=pyinstrument))
    return report


async def _measure(
    system: BenchSystem,
    raw: RawTopology,
    roles: list[BenchProcess],
    *,
    config: BenchConfig,
    display: Display,
    report: BenchReport,
    management: Management,
) -> dict[str, Any]:
    """Every level of both targets, alternating; then the broker's counts (while every
    connection is still open) and the read side's backlog."""
    async with AsyncExitStack() as stack:
        targets: list[Target] = [system_target(system, config.workload)]
        if roles:
            targets.append(baseline_target(raw, roles, system.settings.amqp_url, config.workload))
        for target in targets:
            await stack.enter_async_context(target)
        for concurrency in config.concurrency:
            await targets[0].level(concurrency, config, display)
            if roles:
                await _paused(system, targets[1].level(concurrency, config, display))
        report.system = targets[0].levels
        report.baseline = targets[1].levels if roles else []
        display.phase("waiting for the broker's statistics")
        exchanges = {"system": system_exchanges(system), "baseline": baseline_exchanges(raw)}
        counts = await asyncio.gather(
            *(count_publishes(management, exchanges[t.name], t.levels) for t in targets)
        )
        counted: dict[str, Any] = {t.name: c for t, c in zip(targets, counts, strict=True)}
    counted["read_side_backlog"] = backlog(management, system)
    if roles:
        counted["baseline"]["by_construction"] = 8 * sum(r.started for r in report.baseline)
    return counted


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


async def _cleanup(system: BenchSystem, raw: RawTopology) -> None:
    """Remove what the run created; a failure here is reported, not raised, so that it
    does not hide why the run itself failed."""
    try:
        await system.cleanup()
    except Exception as e:  # report it and go on cleaning
        print(f"bench: clean-up of {system.settings.namespace} failed: {e!r}", file=sys.stderr)
    try:
        connection = await aio_pika.connect(
            system.settings.amqp_url,
            client_properties={"connection_name": f"{raw.namespace}.bench-cleanup"},
        )
        async with connection:
            await raw.delete(await connection.channel())
    except Exception as e:  # likewise
        print(f"bench: clean-up of {raw.namespace} failed: {e!r}", file=sys.stderr)
