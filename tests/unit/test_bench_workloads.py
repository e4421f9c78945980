"""The benchmark's choice of saga, workload and services, and the raw-broker baseline's
plan derived from a definition: pure, over a toy saga with a parallel group."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import Field

from contracts import Message, message
from orchestrator.dev.bench.plan import baseline_plan, representative_reply
from orchestrator.dev.bench.workloads import WorkloadError, parse_options, resolve
from orchestrator.packs import SagaPack
from orchestrator.settings import Settings
from tests.unit.toy_saga import start, toy_saga

HERE = "tests.unit.test_bench_workloads"
TOY = toy_saga(group=2)
"""prep -> (left + right) -> finish -> settle (retriable): five steps in four stages."""


class ToyWorkload:
    """Starts toy sagas; seeds nothing."""

    saga = TOY.name
    seeds_with: tuple[str, ...] = ()

    def __init__(self, size: int) -> None:
        self.size = size

    def options(self) -> dict[str, Any]:
        return {"size": self.size}

    async def seed(self, database: Any) -> None:
        """Nothing."""

    async def prepare(self, bench: Any) -> None:
        """Nothing."""

    async def reserve(self, concurrency: int, seconds: float) -> None:
        """Nothing."""

    def start(self, saga_id: str) -> Message:
        return start(f"toy-{saga_id[:8]}")

    def notes(self) -> list[str]:
        return []


def toy_workload(saga: str, options: Mapping[str, str]) -> ToyWorkload:
    """The toy pack's workload part."""
    return ToyWorkload(**parse_options(options, {"size": 3}))


SERVICES = {name: f"toys.{name}" for name in TOY.participants()}
TOY_PACK = SagaPack(
    name="toys", definitions=(TOY,), services=SERVICES, workload=f"{HERE}:toy_workload"
)
NO_WORKLOAD = SagaPack(name="toys", definitions=(TOY,), services=SERVICES)
NO_SERVICES = SagaPack(name="toys", definitions=(TOY,), workload=f"{HERE}:toy_workload")


def settings_with(pack: str) -> Settings:
    return Settings(saga_definitions=(f"{HERE}:{pack}",))


def test_the_baseline_sends_the_sagas_messages_stage_by_stage() -> None:
    """Two messages per step plus the start and the outcome; the parallel group's two
    commands form one stage; keys, types and bodies are the system's own."""
    plan = baseline_plan(TOY, start("toy-1"))

    assert [[s.name for s in stage] for stage in plan.stages] == [
        ["prep"],
        ["left", "right"],
        ["finish"],
        ["settle"],
    ]
    assert plan.messages_per_saga == 2 + 2 * 5
    assert plan.participants == ("prep", "left", "right", "finish", "settle")
    left = plan.stages[1][0]
    assert (left.routing_key, left.command_type) == ("left.do_left", "left.do_left.v1")
    assert json.loads(left.command_body) == {"ref": "toy-1"}
    assert (left.reply_type, json.loads(left.reply_body)) == ("left.left_done.v1", {"ref": "toy-1"})
    assert (plan.start_key, plan.reply_key) == ("toys.begin", TOY.name)
    assert plan.outcome_key == f"{TOY.name}.completed"
    assert json.loads(plan.outcome_body)["saga_name"] == TOY.name


@message("bench_tests.other_start.v1")
class OtherStart(Message):
    """A start command of no toy saga."""

    ref: str


@message("bench_tests.reserved.v1")
class Reserved(Message):
    """A reply with fields the command does not carry."""

    ref: str
    reservation_id: str
    units: int
    note: str | None = None


@message("bench_tests.strict.v1")
class Strict(Message):
    """A reply a placeholder cannot satisfy."""

    ref: str
    code: str = Field(pattern=r"^[A-Z]{3}$")


def test_a_start_of_another_saga_is_refused() -> None:
    """The plan's bodies come from the saga's own start command."""
    with pytest.raises(TypeError, match=r"starts with toys\.begin\.v1"):
        baseline_plan(TOY, OtherStart(ref="x"))


def test_a_representative_reply_fills_what_the_command_does_not_carry() -> None:
    """Fields shared with the command are copied, the rest get placeholders; a reply
    whose constraints a placeholder breaks is still a body of that size."""
    command = TOY.steps[0].command(start("toy-9"))
    body = json.loads(representative_reply(Reserved, command, start("toy-9")))
    assert body == {
        "ref": "toy-9",
        "reservation_id": "bench-placeholder-0001",
        "units": 1,
        "note": None,
    }
    strict = json.loads(representative_reply(Strict, command, start("toy-9")))
    assert strict == {"ref": "toy-9", "code": "bench-placeholder-0001"}


def test_workload_options_are_converted_to_the_defaults_types() -> None:
    defaults = {"skus": 100, "rate": 300.0, "name": "x", "fast": False}
    given = {"skus": "7", "rate": "2.5", "name": "y", "fast": "yes"}
    assert parse_options(given, defaults) == {"skus": 7, "rate": 2.5, "name": "y", "fast": True}
    assert parse_options({}, defaults) == defaults
    with pytest.raises(WorkloadError, match=r"unknown workload option colour \(known: skus=100"):
        parse_options({"colour": "red"}, defaults)
    with pytest.raises(WorkloadError, match="workload option skus='many' is not a int"):
        parse_options({"skus": "many"}, defaults)
    with pytest.raises(WorkloadError, match="workload option fast='maybe' is not a bool"):
        parse_options({"fast": "maybe"}, defaults)


def test_a_user_saga_runs_with_its_participants_services() -> None:
    """The default saga is the first pack's with a workload; the services are the
    orchestrator and the saga's participants, and the read side if asked."""
    saga = resolve(settings_with("TOY_PACK"), options={"size": "5"}, read_side=True)

    assert saga.name == TOY.name
    assert saga.services == ("orchestrator", *TOY.participants(), "readside")
    assert saga.seeding_services == ()
    assert saga.as_dict()["messages_per_saga"] == 12
    assert saga.as_dict()["workload"] == {"size": 5}


def test_the_shipped_sagas_resolve_with_their_packs_workloads() -> None:
    """Order saga first; the return saga seeds with the order saga, whose shipping runs
    only while it prepares."""
    settings = Settings()
    assert resolve(settings).name == "order_fulfilment"
    parallel = resolve(settings, "order_fulfilment_parallel")
    assert parallel.definition.stages[0] == parallel.definition.steps[:2]
    returns = resolve(settings, "order_return")
    assert returns.services == ("orchestrator", "returns", "inventory", "payment")
    assert returns.seeding_services == ("shipping",)


@pytest.mark.parametrize(
    ("pack", "saga", "options", "error"),
    [
        ("TOY_PACK", "travel", {}, r"no registered saga 'travel' \(registered: toy"),
        ("NO_WORKLOAD", None, {}, "no registered saga pack supplies a benchmark workload"),
        ("NO_WORKLOAD", TOY.name, {}, r"has no benchmark workload; sagas that have one: none"),
        ("NO_SERVICES", None, {}, r"participant 'prep' of toy@v1 has no service"),
        ("TOY_PACK", None, {"size": "big"}, r"workload option size='big' is not a int"),
    ],
    ids=["unknown_saga", "no_pack_with_workload", "no_workload", "no_service", "bad_option"],
)
def test_what_cannot_be_benchmarked_is_refused_before_anything_starts(
    pack: str, saga: str | None, options: dict[str, str], error: str
) -> None:
    with pytest.raises(WorkloadError, match=error):
        resolve(settings_with(pack), saga, options)
