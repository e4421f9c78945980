"""Runs scenarios: a fresh system each, the scenario's drive, quiescence, the checks.

Quiescence means: every saga settled, no message waiting in any work or retry queue,
each dead-letter queue as full as the scenario expects, the scenario's own probes
satisfied, all of it seen twice in a row; then the invariants must hold (they are
re-checked until they do or the time is up, since settling effects such as captures
follow the saga's outcome).
"""

from __future__ import annotations

import asyncio
import shutil
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from orchestrator.dev.harness.catalogue import catalogue
from orchestrator.dev.harness.deployment import Deployment
from orchestrator.dev.harness.invariants import InvariantReport, check_invariants
from orchestrator.dev.harness.report import ALL_CHECKS, CatalogueReport, ScenarioReport
from orchestrator.dev.harness.scenario import Run
from orchestrator.saga.state import EventType
from orchestrator.store.mongo import MongoSagaStore

if TYPE_CHECKING:
    from orchestrator.dev.harness.deployment import HarnessEnv
    from orchestrator.dev.harness.scenario import Scenario

__all__ = ["find_scenario", "run_catalogue", "run_scenario"]

POLL = 0.25
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
EVIDENCE = {
    "resends": EventType.COMMAND_RESENT,
    "step_timeouts": EventType.STEP_TIMED_OUT,
    "late_replies_compensated": EventType.LATE_SUCCESS_COMPENSATING,
    "parked": EventType.SAGA_PARKED,
}


def find_scenario(name: str) -> Scenario:
    """The catalogue entry called ``name``; KeyError listing the names if none."""
    known = catalogue()
    for scenario in known:
        if scenario.name == name:
            return scenario
    raise KeyError(f"no scenario {name!r}; one of: {', '.join(s.name for s in known)}")


async def run_catalogue(
    scenarios: Sequence[Scenario],
    env: HarnessEnv,
    *,
    sagas: int | None = None,
    on_start: Callable[[Scenario], None] | None = None,
    on_report: Callable[[ScenarioReport], None] | None = None,
) -> CatalogueReport:
    """Run scenarios one after the other."""
    report = CatalogueReport()
    started = time.monotonic()
    for scenario in scenarios:
        if on_start is not None:
            on_start(scenario)
        result = await run_scenario(scenario, env, sagas=sagas)
        report.scenarios.append(result)
        if on_report is not None:
            on_report(result)
    report.duration_s = time.monotonic() - started
    return report


async def run_scenario(
    scenario: Scenario, env: HarnessEnv, *, sagas: int | None = None
) -> ScenarioReport:
    """Run one scenario on its own fresh system and report; never raises for a failure
    of the system under test (it is a violation in the report)."""
    started = time.monotonic()
    n = sagas or scenario.sagas
    report = ScenarioReport(scenario=scenario.name, summary=scenario.summary, sagas=n)
    missing = [tool for tool in scenario.needs if shutil.which(tool) is None]
    if missing:
        report.skipped = f"needs {', '.join(missing)} (a local RabbitMQ node) on this machine"
        return report
    host = urlsplit(env.amqp_url).hostname or ""
    if scenario.local_broker and host not in LOCAL_HOSTS:
        report.skipped = f"acts on the local RabbitMQ node, but AMQP_URL points at {host}"
        return report
    deployment = Deployment(env, name=scenario.name, overrides=scenario.settings)
    report.namespace, report.logs = deployment.namespace, str(deployment.log_dir)
    run = Run(deployment=deployment, sagas=n)
    try:
        await deployment.start()
        await scenario.drive(run)
        await _settle_and_check(run, scenario, report)
    except Exception as e:  # the scenario could not run to its end: that is its result
        report.violations.append(f"scenario did not run to its end: {e!r}")
        report.notes.append("".join(traceback.format_exception(e, limit=-4)).strip())
        report.checks = dict.fromkeys(ALL_CHECKS, False)
    finally:
        report.notes += run.notes
        try:
            await deployment.stop()
        except Exception as e:  # a failed teardown is reported, not raised
            report.notes.append(f"teardown incomplete: {e!r}")
        report.duration_s = round(time.monotonic() - started, 2)
    return report


async def _settle_and_check(run: Run, scenario: Scenario, report: ScenarioReport) -> None:
    waiting = await _quiesce(run, scenario.timeout)
    invariants = await _invariants(run, dead_letters=None)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(10.0, scenario.timeout)
    while not invariants.ok and loop.time() < deadline:
        await asyncio.sleep(POLL)
        invariants = await _invariants(run, dead_letters=None)
    dead = {q: dict(c) for q, c in (await run.deployment.take_dead_letters()).items()}
    invariants = await _invariants(run, dead_letters=dead)
    expectations = await _expectations(run, invariants.outcomes, waiting)
    report.outcomes = dict(sorted(invariants.outcomes.items()))
    report.dead_letters = dead
    report.violations = invariants.violations + expectations
    report.checks = {c: invariants.passed(c) for c in invariants.names()} | {
        "expectations": not expectations
    }
    fired = await run.deployment.faults.fired()
    report.faults = dict(sorted((fired + run.injected).items()))
    report.evidence = await _evidence(run)


async def _quiesce(run: Run, timeout: float) -> str | None:
    """Wait until nothing moves; None, or what was still moving at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    quiet = 0
    while True:
        try:
            waiting = await _waiting_for(run)
        except Exception as e:  # e.g. the broker is still coming back
            waiting = f"cannot look: {e!r}"
        quiet = quiet + 1 if waiting is None else 0
        if quiet >= 2:
            return None
        if loop.time() > deadline:
            return waiting
        await asyncio.sleep(POLL)


async def _waiting_for(run: Run) -> str | None:
    d = run.deployment
    settled = await d.settled(run.saga_ids)
    if len(settled) < len(run.saga_ids):
        return f"{len(settled)} of {len(run.saga_ids)} sagas settled"
    depths = await d.depths()
    dlq_names = {q.name.removeprefix(d.namespace + ".") + ".dlq" for q in d.topology.work_queues}
    busy = {q: n for q, n in depths.items() if n and q not in dlq_names}
    if busy:
        return "messages waiting: " + ", ".join(f"{q}={n}" for q, n in sorted(busy.items()))
    for queue in {q.name.removeprefix(d.namespace + ".") for q in d.topology.work_queues}:
        want = sum(run.expected_dead_letters.get(queue, {}).values())
        if depths.get(queue + ".dlq", 0) < want:
            return f"{queue}.dlq holds {depths.get(queue + '.dlq', 0)} of {want} dead letters"
    for probe in run.probes:
        if (missing := await probe()) is not None:
            return missing
    return None


async def _invariants(
    run: Run, *, dead_letters: dict[str, dict[str, int]] | None
) -> InvariantReport:
    return await check_invariants(
        run.deployment.db,
        saga_ids=run.saga_ids,
        facts=run.facts,
        packs=run.deployment.settings.packs(),
        dead_letters=dead_letters,
        expected_dead_letters=run.expected_dead_letters,
        all_sagas=True,
    )


async def _expectations(run: Run, outcomes: Counter[str], waiting: str | None) -> list[str]:
    problems = []
    if waiting is not None:
        problems.append(f"not quiet at the deadline: {waiting}")
    if run.expected_outcomes is not None and dict(outcomes) != run.expected_outcomes:
        have = ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items()))
        want = ", ".join(f"{k}={v}" for k, v in sorted(run.expected_outcomes.items()))
        problems.append(f"outcomes {have}; expected {want}")
    for verify in run.verifications:
        problems += await verify()
    return problems


async def _evidence(run: Run) -> dict[str, int]:
    store = MongoSagaStore(database=run.deployment.db)
    counts: Counter[EventType] = Counter()
    for saga_id in run.saga_ids:
        for commit in await store.history(saga_id):
            counts.update(e.type for e in commit.events)
    return {name: counts[kind] for name, kind in EVIDENCE.items()}
