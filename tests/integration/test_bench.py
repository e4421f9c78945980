"""``saga bench`` runs briefly end to end for any registered saga (the order saga, its
parallel variant, the return saga) and reports the structure and the deterministic
counts its definition implies. No timing is ever asserted."""

from __future__ import annotations

import math

import aio_pika
import pytest
from aiormq.exceptions import ChannelNotFoundEntity

from orchestrator.dev.bench import BenchConfig, BenchReport, run_bench
from orchestrator.dev.bench.report import markdown, rows, summary_lines, to_json
from orchestrator.saga.definition import SagaDefinition
from orchestrator.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

SAGAS = ("order_fulfilment", "order_fulfilment_parallel", "order_return")
RETURN_OPTIONS = {"templates": "4", "skus": "4"}
"""Few real orders: the return run stays short. The rate stays the default (300/s, what
3 in flight can start at most by the workload's bound), so that no machine is fast
enough to run out of orders to return: a rate of 40/s ran out in CI, at 58 returns/s."""


def definition(name: str) -> SagaDefinition:
    """The registered (newest) definition: the counts follow it, whatever its steps."""
    return Settings().registry().latest(name)


@pytest.fixture(scope="module", params=SAGAS)
async def report(request: pytest.FixtureRequest, amqp_url: str, mongodb_url: str) -> BenchReport:
    """One short run per saga: system and baseline, 3 sagas in flight, 2 s measured."""
    saga = request.param
    settings = Settings(amqp_url=amqp_url, mongodb_url=mongodb_url)
    config = BenchConfig(
        saga=saga,
        workload_options=RETURN_OPTIONS if saga == "order_return" else {},
        concurrency=(3,),
        duration=2.0,
        warmup=0.5,
    )
    return await run_bench(settings, config)


async def test_system_and_baseline_complete_sagas_with_ordered_latencies(
    report: BenchReport,
) -> None:
    """Both targets complete sagas in the window, none time out or fail, p50 <= p95 <=
    p99; the ratio of their rates is a number."""
    for level in (*report.system, *report.baseline):
        assert level.completed > 0, level
        assert set(level.all_outcomes) == {"completed"}, level.all_outcomes
        latency = level.latency
        assert 0 < latency.p50 <= latency.p95 <= latency.p99 <= latency.max
    assert len(report.baseline) == 1
    ratio = report.ratio(report.system[0])
    assert ratio > 0
    assert not math.isnan(ratio)


async def test_the_saga_and_its_services_come_from_the_registered_definition(
    report: BenchReport,
) -> None:
    """The report names the saga, its steps and stages; the services started are the
    orchestrator and the saga's participants (the return saga's seeding needs shipping,
    which is stopped before measuring); the baseline has a role per participant."""
    saga = definition(report.saga["name"])
    participants = list(saga.participants())
    assert report.saga["steps"] == [s.name for s in saga.steps]
    assert report.saga["stages"] == [[s.name for s in stage] for stage in saga.stages]
    assert report.saga["services"] == ["orchestrator", *participants]
    expected_seeding = ["shipping"] if saga.name == "order_return" else []
    assert report.saga["seeding_services"] == expected_seeding
    system_groups = set(report.system[0].cpu) - {"broker", "store", "driver", "machine"}
    assert system_groups == {"orchestrator", *participants}
    baseline_groups = set(report.baseline[0].cpu) - {"broker", "driver", "machine"}
    assert baseline_groups == {"orchestrator", *participants}


async def test_messages_per_saga_follow_the_definition(report: BenchReport) -> None:
    """The saga path is exactly two messages per step plus the start and the outcome,
    as stored by the commits; progress events come on top (at most one per commit); the
    baseline sends exactly the saga path; the broker's count is the store's saga path
    plus at least one and at most one message per progress event (they are batched)."""
    steps = len(definition(report.saga["name"]).steps)
    assert report.expected_messages == 2 + 2 * steps
    assert report.saga_path_per_saga() == pytest.approx(2 + 2 * steps)
    assert 0 < report.progress_per_saga() <= 1 + steps
    assert report.messages_per_saga("baseline") == pytest.approx(2 + 2 * steps)
    system = report.messages["system"]
    if report.messages_counted_by_broker("system"):  # the management plugin answered
        # Progress events go in batches (SAGA_PROGRESS_BATCH): at least one message for
        # them, at most one each.
        assert system["saga_path_estimate"] < system["publishes"] <= system["outbox_estimate"]


async def test_store_commands_cpu_and_memory_per_service(report: BenchReport) -> None:
    """Every participant wrote to the store; the orchestrator's commits took at most
    one insert each, and each participant at most a few round trips per saga (group
    commit lets concurrent writes share one); CPU was spent by the services and the
    baseline; each service's memory is reported when ready, at the window's edges and
    at the end."""
    sagas = report.sagas_started()
    steps = len(definition(report.saga["name"]).steps)
    ops = report.store_total
    inserts = ops.by_service["orchestrator"].get("insert", 0)
    assert 0 < inserts <= (1 + steps) * sagas
    for service in report.saga["services"][1:]:
        assert 0 < ops.writes(service) <= 4 * steps * sagas, service
    (row,) = rows(report)
    assert row["writes"] > 0
    assert row["cpu_services"] > 0
    assert report.baseline[0].cpu_ms_per_saga() > 0
    for moment in ("started", "end"):
        assert set(report.memory[moment]) >= set(report.saga["services"])
        assert all(mib > 0 for mib in report.memory[moment].values())
    level = report.system[0]
    assert level.rss_end["orchestrator"] > 0
    assert level.rss_start["orchestrator"] > 0


async def test_renders_as_markdown_and_json(report: BenchReport) -> None:
    """The table has one row per level; the summary names the saga and memory; the JSON
    carries the rows and the messages per saga."""
    table = markdown(report)
    assert "| in flight | sagas/s |" in table
    assert "\n| 3 | " in table
    assert summary_lines(report)[0].startswith(f"saga {report.saga['name']} v")
    assert "system memory (RSS MiB)" in table
    data = to_json(report)
    assert '"rows"' in data
    assert '"saga_path"' in data


async def test_removes_its_namespaces(report: BenchReport, amqp_url: str) -> None:
    """The run's queues are deleted afterwards (system and baseline)."""
    saga = report.saga["name"]
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        for namespace in (report.namespaces["system"], report.namespaces["baseline"]):
            channel = await connection.channel()
            with pytest.raises(ChannelNotFoundEntity):
                await channel.declare_queue(f"{namespace}.orchestrator.{saga}.starts", passive=True)


async def test_the_return_workload_returned_orders_it_prepared(report: BenchReport) -> None:
    """Every return was of a completed order, none twice (so none was refused)."""
    if report.saga["name"] != "order_return":
        pytest.skip("the return saga's workload only")
    (note,) = [n for n in report.notes if n.startswith("order_return:")]
    assert "ran out" not in note
    assert report.saga["workload"]["templates"] == 4


@pytest.mark.parametrize("saga", ["order_fulfilment", "order_return"])
async def test_history_mode_seeds_finished_sagas_before_measuring(
    saga: str, amqp_url: str, mongodb_url: str
) -> None:
    """``--history 60``: the levels are measured once on the empty store, then 60
    finished sagas of the saga under test (clones of real ones, every document the
    system writes for them) are seeded and the levels measured again, which still
    complete sagas; the report says how many, how long seeding took and how the ratio
    moved, and the messages counted leave the preparation and the first pass out."""
    settings = Settings(amqp_url=amqp_url, mongodb_url=mongodb_url)
    config = BenchConfig(
        saga=saga,
        workload_options=RETURN_OPTIONS if saga == "order_return" else {},
        concurrency=(2,),
        duration=1.0,
        warmup=0.3,
        history=60,
    )
    report = await run_bench(settings, config)
    assert report.history["sagas"] == 60
    assert report.history["documents"] >= 60 * 4, "commits and participants' records"
    assert any(note.startswith("history: 60 finished sagas") for note in report.notes)
    assert report.system[0].completed > 0
    empty = report.empty_store
    assert [r.concurrency for r in empty["system"]] == [2]
    assert [r.concurrency for r in empty["baseline"]] == [2]
    assert empty["system"][0].completed > 0
    assert empty["baseline"][0].completed > 0
    assert report.empty_store_ratio(2) > 0
    (growth,) = [line for line in summary_lines(report) if line.startswith("growth at 2")]
    assert "with 60 finished sagas stored (change " in growth, growth
    steps = len(definition(saga).steps)
    assert report.saga_path_per_saga() == pytest.approx(2 + 2 * steps)
    assert report.messages_per_saga("baseline") == pytest.approx(2 + 2 * steps)
    system = report.messages["system"]
    if report.messages_counted_by_broker("system"):
        assert system["saga_path_estimate"] < system["publishes"] <= system["outbox_estimate"]
