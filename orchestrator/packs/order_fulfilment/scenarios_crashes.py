"""Scenarios where processes die and the broker goes away with sagas in flight.

Shipping holds its replies for a moment (a delay rule) so that sagas are certainly in
flight when the blow lands; how many were is in the report's notes.
"""

from __future__ import annotations

import asyncio
import subprocess

from aio_pika.exceptions import AMQPError

from orchestrator.client import new_saga_id
from orchestrator.dev.harness.checks import fired
from orchestrator.dev.harness.faults_client import FaultsNotApplied
from orchestrator.dev.harness.scenario import Run
from orchestrator.errors import OrchestratorError
from orchestrator.faults import FaultRule
from orchestrator.packs.order_fulfilment.harness import mixed, stock_up

__all__ = ["broker_restart", "orchestrator_killed", "participant_killed"]

CRASH_EXIT_CODE = 70


async def _hold_shipping(run: Run, seconds: float) -> None:
    await run.install(
        FaultRule(
            participant="shipping",
            command="schedule_shipment",
            action="delay",
            delay_seconds=seconds,
        )
    )


async def _unsettled(run: Run) -> int:
    return len(run.saga_ids) - len(await run.deployment.settled(run.saga_ids))


def _in_flight(run: Run, unsettled: int, what: str) -> None:
    run.note(f"{what} with {unsettled} of {len(run.saga_ids)} sagas unsettled")

    async def check() -> list[str]:
        return [] if unsettled > 0 else [f"{what} with no saga in flight"]

    run.verify(check)


async def orchestrator_killed(run: Run) -> None:
    """The orchestrator is SIGKILLed mid-flight and a new instance started: commits not
    yet published are relayed, passed deadlines resend, every saga settles."""
    orders, refused = mixed(run.sagas)
    await stock_up(run, apple=run.sagas, pear=run.sagas)
    await _hold_shipping(run, 0.5)
    await run.place(orders)
    await run.until(lambda: _fired_at_least(run, "delay", 3), "shipping holding replies")
    run.deployment.kill("orchestrator")
    run.injected["sigkill"] += 1
    _in_flight(run, await _unsettled(run), "orchestrator killed")
    await run.deployment.start_service("orchestrator")
    run.expect(completed=run.sagas - refused, compensated=refused)


async def participant_killed(run: Run) -> None:
    """Payment crashes (a crash rule: the process exits after storing an authorization,
    before replying and acking) and is restarted: the redelivered command finds the stored
    authorization and repeats its reply; nothing is authorized twice."""
    ids = [new_saga_id() for _ in range(run.sagas)]
    orders, refused = mixed(run.sagas)
    victim = ids[len(ids) // 4]
    await stock_up(run, apple=run.sagas, pear=run.sagas)
    await run.install(
        FaultRule(
            participant="payment",
            command="authorize_payment",
            saga_id=victim,
            action="crash",
            count=1,
            exit_code=CRASH_EXIT_CODE,
        )
    )
    await run.place(orders, saga_ids=ids)
    code = await run.deployment.exited("payment", timeout=60)
    _in_flight(run, await _unsettled(run), f"payment crashed (exit code {code})")
    await run.deployment.start_service("payment")
    run.expect(completed=run.sagas - refused, compensated=refused)
    run.verify(fired(run, "crash", exactly=1))

    async def exit_code() -> list[str]:
        return [] if code == CRASH_EXIT_CODE else [f"payment exited with {code}"]

    run.verify(exit_code)


def rabbitmqctl(*args: str) -> None:
    """Run rabbitmqctl on the local node (it returns when the node has done it)."""
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=180)


async def broker_restart(run: Run) -> None:
    """The broker application is stopped and started with sagas in flight: every service
    reconnects, declares again and carries on; nothing is lost."""
    orders, refused = mixed(run.sagas)
    await stock_up(run, apple=run.sagas, pear=run.sagas)
    await _hold_shipping(run, 1.0)
    await run.place(orders)
    await run.until(lambda: _fired_at_least(run, "delay", 5), "shipping holding replies")
    try:
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        run.injected["broker_restart"] += 1
        unsettled = await _unsettled(run)
    finally:
        await asyncio.to_thread(rabbitmqctl, "start_app")
        await asyncio.to_thread(rabbitmqctl, "await_startup")
    _in_flight(run, unsettled, "broker stopped")
    await _clear_when_listening(run)
    run.expect(completed=run.sagas - refused, compensated=refused)


async def _clear_when_listening(run: Run, timeout: float = 60.0) -> None:
    """Remove the rules through the control exchange once every participant listens
    again (their queues come back when they reconnect): proof the path survived."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await run.deployment.faults.clear(listeners=run.deployment.listeners, timeout=2.0)
            run.note("fault rules cleared through the control exchange after the restart")
            return
        except (FaultsNotApplied, OrchestratorError, AMQPError, OSError, RuntimeError) as e:
            if loop.time() > deadline:
                raise FaultsNotApplied(f"rules not cleared after the restart: {e!r}") from e
            await asyncio.sleep(0.5)


async def _fired_at_least(run: Run, action: str, n: int) -> bool:
    return await run.fired(action) >= n
