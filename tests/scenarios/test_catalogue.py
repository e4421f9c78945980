"""The whole failure-scenario catalogue, each scenario on a fresh system of its own
(service processes, real broker, real store), through the harness runner and its CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.cli import harness as harness_cli
from orchestrator.dev.harness import HarnessEnv, Run, Scenario, catalogue, run_scenario
from orchestrator.dev.harness.report import ALL_CHECKS, ScenarioReport
from orchestrator.packs.order_fulfilment.harness import order, stock_up

CATALOGUE_ = catalogue()

pytestmark = pytest.mark.integration

ISSUE_SCENARIOS = {
    "happy-path",
    "payment-declined",
    "shipping-fails",
    "insufficient-stock",
    "retries-exhausted",
    "slow-participant",
    "late-reply",
    "duplicate-storm",
    "poison-message",
    "orchestrator-killed",
    "participant-killed",
    "broker-restart",
}

Proof = Callable[[ScenarioReport], bool]
PROOF: dict[str, tuple[str, Proof]] = {
    "happy-path": ("every saga completed", lambda r: r.outcomes == {"completed": r.sagas}),
    "payment-declined": ("declines fired", lambda r: r.faults.get("decline") == r.sagas // 2),
    "shipping-fails": ("declines fired", lambda r: r.faults.get("decline", 0) > 0),
    "insufficient-stock": (
        "orders beyond the stock failed",
        lambda r: r.outcomes.get("failed") == r.sagas - r.sagas // 4,
    ),
    "retries-exhausted": (
        "every attempt raised and every command was dead-lettered",
        lambda r: (
            r.faults.get("raise") == 3 * r.sagas
            and r.dead_letters == {"payment.commands": {"retries_exhausted": r.sagas}}
        ),
    ),
    "slow-participant": (
        "replies delayed, commands resent",
        lambda r: r.faults.get("delay", 0) >= r.sagas and r.evidence["resends"] >= r.sagas,
    ),
    "late-reply": (
        "late replies compensated",
        lambda r: (
            r.evidence["late_replies_compensated"] == r.sagas
            and r.evidence["step_timeouts"] == r.sagas
        ),
    ),
    "reply-lost": ("replies dropped", lambda r: r.faults.get("drop") == r.sagas // 2),
    "duplicate-storm": (
        "replies duplicated",
        lambda r: r.faults.get("duplicate", 0) > 0 and r.faults.get("duplicate_starts") == r.sagas,
    ),
    "poison-message": (
        "poison dead-lettered",
        lambda r: r.faults.get("poison_messages") == 15 and len(r.dead_letters) == 3,
    ),
    "orchestrator-killed": ("orchestrator killed", lambda r: r.faults.get("sigkill") == 1),
    "participant-killed": ("payment crashed", lambda r: r.faults.get("crash") == 1),
    "broker-restart": ("broker restarted", lambda r: r.faults.get("broker_restart") == 1),
    "return-refund-refused": (
        "half the returns parked on their refused refund, then resumed to completion",
        lambda r: (
            r.faults.get("decline") == r.sagas // 2 // 2
            and r.evidence["parked"] == r.sagas // 2 // 2
            and r.outcomes == {"completed": r.sagas}
        ),
    ),
    "return-window-expired": (
        "every return failed at its acceptance",
        lambda r: r.outcomes == {"completed": r.sagas - r.sagas // 2, "failed": r.sagas // 2},
    ),
    "return-duplicate-storm": (
        "starts and replies duplicated, one return per order",
        lambda r: (
            r.faults.get("duplicate", 0) > 0
            and r.faults.get("duplicate_starts") == r.sagas - r.sagas // 3
            and r.outcomes.get("failed") == r.sagas - 2 * (r.sagas // 3)
        ),
    ),
}


def test_the_catalogue_has_every_scenario_of_the_issue_each_with_a_proof() -> None:
    """Names are unique, the issue's list is covered, and this file proves each one."""
    names = [s.name for s in CATALOGUE_]
    assert len(names) == len(set(names))
    assert set(names) >= ISSUE_SCENARIOS
    assert set(PROOF) == set(names)


@pytest.mark.parametrize("scenario", CATALOGUE_, ids=lambda s: s.name)
async def test_scenario_passes_and_its_fault_fired(scenario: Scenario, harness: HarnessEnv) -> None:
    """The scenario reaches quiescence with every invariant holding, and the report shows
    that what it injects really happened."""
    report = await run_scenario(scenario, harness)
    print(f"\n{scenario.name}: {report.to_dict()}")
    if report.skipped:
        pytest.skip(report.skipped)
    assert report.ok, "\n".join(report.violations)
    assert report.checks == dict.fromkeys(ALL_CHECKS, True)
    assert sum(report.outcomes.values()) == scenario.sagas
    what, proof = PROOF[scenario.name]
    assert proof(report), f"{what}: faults {report.faults}, evidence {report.evidence}"
    if scenario.injects:
        assert report.faults, "an injecting scenario reports what it injected"


async def _expects_one_saga_too_many(run: Run) -> None:
    await stock_up(run, apple=run.sagas)
    await run.place([order(("apple", 1)) for _ in range(run.sagas)])
    run.expect(completed=run.sagas + 1)


WRONG = Scenario(
    name="wrong-expectation",
    summary="expects one more completed saga than it places",
    sagas=4,
    drive=_expects_one_saga_too_many,
    injects=False,
)


async def test_a_violation_fails_the_report_with_the_check_named(harness: HarnessEnv) -> None:
    """A scenario whose expectation does not hold fails, naming the check and the
    difference; the invariants that held are reported as held."""
    report = await run_scenario(WRONG, harness)
    assert not report.ok
    assert report.status == "FAIL"
    assert report.checks["expectations"] is False
    assert all(report.checks[c] for c in ("stock", "payments", "sagas", "dead_letters"))
    assert report.violations == ["outcomes completed=4; expected completed=5"]


async def test_a_scenario_that_cannot_run_here_is_skipped_with_the_reason(
    harness: HarnessEnv, tmp_path: Path
) -> None:
    """Without its tool, or with the broker on another machine, a scenario that acts on
    the local broker node is skipped, never run against something else."""
    needs_tool = Scenario(
        name="needs-tool",
        summary="",
        sagas=4,
        drive=_expects_one_saga_too_many,
        needs=("no-such-tool-here",),
    )
    remote = Scenario(
        name="remote", summary="", sagas=4, drive=_expects_one_saga_too_many, local_broker=True
    )
    elsewhere = HarnessEnv(
        amqp_url="amqp://guest:guest@broker.example.com:5672/",
        mongodb_url=harness.mongodb_url,
        workdir=tmp_path,
    )

    skipped = [await run_scenario(needs_tool, harness), await run_scenario(remote, elsewhere)]

    assert [r.status for r in skipped] == ["SKIP", "SKIP"]
    assert all(r.ok for r in skipped)
    assert "no-such-tool-here" in (skipped[0].skipped or "")
    assert "broker.example.com" in (skipped[1].skipped or "")


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, harness: HarnessEnv) -> None:
    """The CLI finds the session's broker and store through the environment."""
    monkeypatch.setenv("AMQP_URL", harness.amqp_url)
    monkeypatch.setenv("MONGODB_URL", harness.mongodb_url)


def _saga(*argv: str) -> int:
    with pytest.raises(SystemExit) as exited:
        cli.main(list(argv))
    return int(exited.value.code or 0)


@pytest.mark.usefixtures("cli_env")
def test_cli_lists_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    """``saga harness list`` names every scenario."""
    assert _saga("harness", "list") == 0
    out = capsys.readouterr().out
    assert all(s.name in out for s in CATALOGUE_)


@pytest.mark.usefixtures("cli_env")
def test_cli_run_prints_a_report_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``saga harness run NAME --sagas N --json FILE``: exit code 0, a readable report,
    and a JSON report for CI."""
    path = tmp_path / "report.json"
    assert _saga("harness", "run", "payment-declined", "--sagas", "6", "--json", str(path)) == 0
    out = capsys.readouterr().out
    assert "PASS" in out
    assert "payment-declined" in out
    assert "1 passed, 0 failed, 0 skipped" in out
    data = json.loads(path.read_text())
    assert data["ok"] is True
    (scenario,) = data["scenarios"]
    assert scenario["scenario"] == "payment-declined"
    assert scenario["sagas"] == 6
    assert scenario["outcomes"] == {"completed": 3, "compensated": 3} | scenario["outcomes"]
    assert scenario["faults"] == {"decline": 3}
    assert scenario["checks"] == dict.fromkeys(ALL_CHECKS, True)
    assert scenario["duration_s"] > 0


@pytest.mark.usefixtures("cli_env")
def test_cli_exits_non_zero_on_a_violation(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Any violation makes the exit code 1; a wrong name or no name is a usage error."""
    monkeypatch.setattr(harness_cli, "catalogue", lambda packs=None: (WRONG,))
    assert _saga("harness", "run", "--all", "--json", "-") == 1
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["ok"] is False
    assert data["failed"] == 1
    assert "FAIL" in captured.err
    assert _saga("harness", "run", "no-such-scenario") == 2
    assert _saga("harness", "run") == 2
