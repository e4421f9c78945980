"""The history soak of issue 15 at a small scale: five rounds of sagas with thousands of
finished sagas added between them; the rate and the idle CPU of the last round stay
within a tolerance of the first (ratios inside one run, never absolute times)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

from orchestrator.dev.bench.cpu import cpu_seconds, own_cpu_seconds
from orchestrator.dev.bench.history import Template, capture_templates, seed_history
from orchestrator.saga.state import Status
from tests.helpers import eventually
from tests.integration.conftest import System, SystemFactory

pytestmark = [pytest.mark.integration, pytest.mark.soak]

ROUNDS = 5
SAGAS_PER_ROUND = 60
IN_FLIGHT = 10
HISTORY_PER_ROUND = 2000
IDLE_WINDOW = 3.0


def store_pid(mongodb_url: str) -> int | None:
    """The embedded server answering on this URL's port (None for another server)."""
    port = str(urlparse(mongodb_url).port).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"nx-27017" in a for a in args[:2]) and port in args:
            return int(entry.name)
    return None


@dataclass(frozen=True)
class Round:
    history: int
    rate: float
    idle_cpu: float


async def run_sagas(system: System) -> tuple[float, list[str]]:
    """SAGAS_PER_ROUND sagas, IN_FLIGHT at a time: completed per second, and their ids."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one() -> str:
        async with gate:
            saga_id = await system.order(("apple", 1))
            state = await system.client.wait_settled(saga_id, timeout=60, poll=0.1)
            assert state.status is Status.COMPLETED
            return saga_id

    started = time.monotonic()
    ids = await asyncio.gather(*(one() for _ in range(SAGAS_PER_ROUND)))
    return SAGAS_PER_ROUND / (time.monotonic() - started), list(ids)


async def idle_cpu(system: System, pid: int | None) -> float:
    """CPU of the test process (all services run in it) and the store over an idle
    window, once nothing is pending."""
    store = system.client.store
    await eventually(
        store.live_work,
        until=lambda w: w.pending_outbox == 0 and w.active_deadlines == 0,
        what="nothing pending",
    )
    before = own_cpu_seconds() + ((cpu_seconds(pid) or 0.0) if pid else 0.0)
    await asyncio.sleep(IDLE_WINDOW)  # the measured window itself, not a wait for an effect
    after = own_cpu_seconds() + ((cpu_seconds(pid) or 0.0) if pid else 0.0)
    return (after - before) / IDLE_WINDOW


async def test_rate_and_idle_cpu_do_not_grow_with_history(
    make_system: SystemFactory, mongodb_url: str
) -> None:
    """Round 5 runs with 8,000 more finished sagas stored than round 1, yet completes
    sagas at least 0.6 times as fast, and idles at no more than the first round's CPU
    plus 0.03 of a core (the pollers do not scan the history)."""
    system = await make_system()
    await system.inventory.inventory.set_stock("apple", ROUNDS * SAGAS_PER_ROUND + 10)
    db = system.client.store.commits.database
    pid = store_pid(mongodb_url)
    templates: list[Template] = []
    rounds: list[Round] = []
    for n in range(ROUNDS):
        history = n * HISTORY_PER_ROUND
        if n:
            await seed_history(db, templates, HISTORY_PER_ROUND)
        rate, ids = await run_sagas(system)
        if not templates:
            await system.orchestrator.runtime.dispatcher.flush()
            templates = await capture_templates(db, ids[:3])
        rounds.append(Round(history=history, rate=rate, idle_cpu=await idle_cpu(system, pid)))
    print()
    for r in rounds:
        print(f"history {r.history:>5}: {r.rate:6.1f} sagas/s, idle {r.idle_cpu:.3f} CPU")
    first, last = rounds[0], rounds[-1]
    assert last.rate >= 0.6 * first.rate, rounds
    assert last.idle_cpu <= first.idle_cpu + 0.03, rounds
