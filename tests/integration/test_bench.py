"""``saga bench`` runs briefly end to end and reports sane numbers (no timing asserted)."""

from __future__ import annotations

import math

import aio_pika
import pytest
from aiormq.exceptions import ChannelNotFoundEntity

from orchestrator.bench import BenchConfig, BenchReport, run_bench
from orchestrator.bench.report import markdown, rows, to_json
from orchestrator.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def report(amqp_url: str, mongodb_url: str) -> BenchReport:
    """One short run: system and baseline, 5 sagas in flight, 2.5 s measured."""
    settings = Settings(amqp_url=amqp_url, mongodb_url=mongodb_url)
    config = BenchConfig(concurrency=(5,), duration=2.5, warmup=0.5)
    return await run_bench(settings, config)


async def test_system_and_baseline_complete_sagas_with_ordered_latencies(
    report: BenchReport,
) -> None:
    """Both targets complete sagas in the window, none time out, p50 <= p95 <= p99."""
    for level in (*report.system, *report.baseline):
        assert level.completed > 0, level
        assert level.all_outcomes.get("timeout", 0) == 0
        assert set(level.all_outcomes) == {"completed"}
        latency = level.latency
        assert 0 < latency.p50 <= latency.p95 <= latency.p99 <= latency.max
    assert len(report.baseline) == 1
    ratio = report.ratio(report.system[0])
    assert ratio > 0
    assert not math.isnan(ratio)


async def test_messages_per_saga_are_counted_on_the_broker(report: BenchReport) -> None:
    """Eight messages per completed saga plus the progress events (one per commit, four
    per completed saga with the default settings); the baseline sends exactly eight. The
    broker's count matches what the commits say was sent."""
    per_saga = report.messages_per_saga("system")
    assert 8 <= per_saga <= 15
    assert report.messages_per_saga("baseline") == pytest.approx(8.0)
    if report.messages_counted_by_broker("system"):  # the management plugin answered
        counted = report.messages["system"]
        assert counted["publishes"] == counted["outbox_estimate"]


async def test_store_commands_and_cpu_per_saga_are_positive(report: BenchReport) -> None:
    """Every service wrote to the store; the orchestrator at least once per commit (four
    per completed saga); CPU was spent by the services and by the broker."""
    sagas = report.sagas_started()
    ops = report.store_total
    assert ops.writes("orchestrator") >= 4 * sagas
    for service in ("inventory", "payment", "shipping"):
        assert ops.writes(service) >= sagas
    (row,) = rows(report)
    assert row["writes"] > 0
    assert row["cpu_services"] > 0
    assert report.baseline[0].cpu_ms_per_saga() > 0


async def test_renders_as_markdown_and_json(report: BenchReport) -> None:
    """The table has one row per level; the JSON carries the rows."""
    table = markdown(report)
    assert "| in flight | sagas/s |" in table
    assert "\n| 5 | " in table
    assert '"rows"' in to_json(report)


async def test_removes_its_namespaces(report: BenchReport, amqp_url: str) -> None:
    """The run's queues are deleted afterwards (system and baseline)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        for namespace in (report.namespaces["system"], report.namespaces["baseline"]):
            channel = await connection.channel()
            with pytest.raises(ChannelNotFoundEntity):
                await channel.declare_queue(f"{namespace}.orchestrator.commands", passive=True)
