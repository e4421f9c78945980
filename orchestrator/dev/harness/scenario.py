"""What a scenario is, and the handle it drives its system with.

A scenario is a function of a :class:`Run`: it stocks up, installs its faults, places its
sagas, does what it does to the system (kill a process, restart the broker), and says
what it expects: outcomes, dead letters, and anything else to wait for or verify. The
runner then waits for quiescence and checks the invariants.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from contracts import Message
from orchestrator.client import new_saga_id

if TYPE_CHECKING:
    from orchestrator.dev.harness.deployment import Deployment
    from orchestrator.faults import FaultRule

__all__ = ["Probe", "Run", "Scenario"]

Probe = Callable[[], Awaitable[str | None]]
"""Something to wait for: what is still missing, or None once it is there."""
Verify = Callable[[], Awaitable[list[str]]]
"""A scenario's own check after quiescence: its violations."""


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One entry of the catalogue."""

    name: str
    summary: str
    sagas: int
    """Sagas driven by default (``--sagas`` overrides)."""
    drive: Callable[[Run], Awaitable[None]]
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Service settings changed for this scenario (step timeouts, retry delays, ...)."""
    timeout: float = 90.0
    """Seconds to reach quiescence after driving."""
    injects: bool = True
    """Whether it injects a fault (else it only loads or starves the system)."""
    needs: tuple[str, ...] = ()
    """Commands it needs on this machine (e.g. rabbitmqctl); skipped without them."""
    local_broker: bool = False
    """It acts on the broker node itself, so AMQP_URL must point at this machine."""


@dataclass
class Run:
    """A scenario's handle on its running system, and what it expects of it."""

    deployment: Deployment
    sagas: int
    saga_ids: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    """What packs' invariants need to know of the setup (the order pack: the initial
    stock per SKU, under ``initial_stock``)."""
    expected_outcomes: dict[str, int] | None = None
    """Exact outcome counts, if the scenario determines them."""
    expected_dead_letters: dict[str, dict[str, int]] = field(default_factory=dict)
    injected: Counter[str] = field(default_factory=Counter)
    """Faults the harness itself caused (kills, restarts, poison messages)."""
    notes: list[str] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    verifications: list[Verify] = field(default_factory=list)

    async def install(self, *rules: FaultRule) -> None:
        """Install fault rules and wait until every participant instance obeys them."""
        await self.deployment.faults.install(*rules, listeners=self.deployment.listeners)

    async def place(
        self,
        orders: Sequence[Message],
        *,
        saga_ids: Sequence[str] | None = None,
        repeat: int = 1,
    ) -> list[str]:
        """Start a saga per start command, all at once; returns their ids (also kept).
        With ``repeat``, each start command is published that often (same message id)."""
        ids = list(saga_ids) if saga_ids is not None else [new_saga_id() for _ in orders]
        client = self.deployment.client
        pairs = list(zip(orders, ids, strict=True)) * repeat
        await asyncio.gather(*(client.start(o, saga_id=s) for o, s in pairs))
        self.saga_ids += ids
        return ids

    def expect(self, **outcomes: int) -> None:
        """Expect exactly these outcome counts (completed=..., compensated=...)."""
        self.expected_outcomes = {k: v for k, v in outcomes.items() if v}

    def expect_dead_letters(self, queue: str, **reasons: int) -> None:
        """Expect exactly these dead letters in ``queue`` (e.g. ``payment.commands``)."""
        self.expected_dead_letters[queue] = dict(reasons)

    def wait_for(self, probe: Probe) -> None:
        """Quiescence also waits for ``probe``."""
        self.probes.append(probe)

    def verify(self, check: Verify) -> None:
        """Run ``check`` after quiescence; its findings are violations."""
        self.verifications.append(check)

    def note(self, text: str) -> None:
        """A line for the report."""
        self.notes.append(text)

    async def fired(self, action: str) -> int:
        """How often fault rules with ``action`` have fired so far (all instances)."""
        return (await self.deployment.faults.fired())[action]

    async def until(
        self, probe: Callable[[], Awaitable[bool]], what: str, timeout: float = 60.0
    ) -> None:
        """Poll ``probe`` until true; TimeoutError naming ``what`` if it does not come."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await probe():
            if loop.time() > deadline:
                raise TimeoutError(f"{what}: not reached within {timeout:g}s")
            await asyncio.sleep(0.05)
