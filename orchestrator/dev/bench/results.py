"""What a benchmark run measured: per concurrency level, for the system and the baseline."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "WRITE_COMMANDS",
    "BenchReport",
    "LevelResult",
    "Percentiles",
    "StoreOps",
    "percentile",
]

WRITE_COMMANDS = frozenset({"insert", "update", "delete", "findAndModify"})
"""MongoDB commands that write (one round trip each, whatever the batch size)."""
READ_COMMANDS = frozenset({"find", "getMore", "aggregate", "count", "distinct"})


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of sorted values, linearly interpolated."""
    if not sorted_values:
        return math.nan
    rank = (len(sorted_values) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


@dataclass(frozen=True, kw_only=True)
class Percentiles:
    """End-to-end latency in milliseconds."""

    p50: float
    p95: float
    p99: float
    mean: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Percentiles:
        """Percentiles of latencies given in seconds."""
        ms = sorted(s * 1000 for s in seconds)
        if not ms:
            return cls(p50=math.nan, p95=math.nan, p99=math.nan, mean=math.nan, max=math.nan)
        return cls(
            p50=percentile(ms, 50),
            p95=percentile(ms, 95),
            p99=percentile(ms, 99),
            mean=sum(ms) / len(ms),
            max=ms[-1],
        )


@dataclass(frozen=True, kw_only=True)
class StoreOps:
    """MongoDB commands sent by the services, by service and command name."""

    by_service: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def minus(self, earlier: StoreOps) -> StoreOps:
        """The commands sent since ``earlier``."""
        return StoreOps(
            by_service={
                service: {
                    name: count - earlier.by_service.get(service, {}).get(name, 0)
                    for name, count in counts.items()
                }
                for service, counts in self.by_service.items()
            }
        )

    def writes(self, service: str | None = None) -> int:
        """Write round trips (of one service, or all)."""
        return self._sum(WRITE_COMMANDS, service)

    def reads(self, service: str | None = None) -> int:
        """Read round trips (of one service, or all)."""
        return self._sum(READ_COMMANDS, service)

    def _sum(self, names: frozenset[str], service: str | None) -> int:
        services = [service] if service else list(self.by_service)
        return sum(
            count
            for s in services
            for name, count in self.by_service.get(s, {}).items()
            if name in names
        )


@dataclass(frozen=True, kw_only=True)
class LevelResult:
    """One closed-loop run at one concurrency, measured over its window."""

    target: str
    """``system`` or ``baseline``."""
    concurrency: int
    window: float
    """Seconds measured (after the warm-up)."""
    outcomes: Mapping[str, int]
    """Sagas settled in the window by outcome (``completed``, ``failed``, ``compensated``,
    ``timeout``)."""
    latency: Percentiles
    started: int
    """Sagas started in all (warm-up and drain included)."""
    all_outcomes: Mapping[str, int] = field(default_factory=dict)
    """Every saga started at this level by outcome (warm-up and drain included)."""
    cpu: Mapping[str, float]
    """CPU seconds spent in the window, per process group."""
    store: StoreOps = field(default_factory=StoreOps)
    rss_start: Mapping[str, float] = field(default_factory=dict)
    """Resident memory (MiB) per process group at the window's start..."""
    rss_end: Mapping[str, float] = field(default_factory=dict)
    """... and at its end."""

    @property
    def completed(self) -> int:
        """Sagas completed in the window."""
        return self.outcomes.get("completed", 0)

    @property
    def settled(self) -> int:
        """Sagas that reached any terminal state in the window."""
        return sum(n for k, n in self.outcomes.items() if k != "timeout")

    @property
    def rate(self) -> float:
        """Completed sagas per second."""
        return self.completed / self.window if self.window > 0 else 0.0

    def per_saga(self, amount: float) -> float:
        """``amount`` divided by the sagas settled in the window."""
        return amount / self.settled if self.settled else math.nan

    def cpu_ms_per_saga(self, groups: Sequence[str] | None = None) -> float:
        """CPU milliseconds per saga of some process groups (default: the services, or
        the baseline's roles: every group but the broker, the store and the driver)."""
        chosen = groups if groups is not None else self.service_groups
        return self.per_saga(1000 * sum(self.cpu.get(g, 0.0) for g in chosen))

    @property
    def service_groups(self) -> list[str]:
        """The process groups that are services (or baseline roles)."""
        return [g for g in self.cpu if g not in NOT_SERVICES]

    @property
    def other_load(self) -> float:
        """CPUs' worth of work on the machine during the window by processes the benchmark
        did not start or watch (other users, other tests): it makes the numbers worse."""
        tracked = sum(v for k, v in self.cpu.items() if k != "machine")
        return max(0.0, self.cpu.get("machine", 0.0) - tracked) / self.window


NOT_SERVICES = frozenset({"broker", "store", "driver", "machine"})


@dataclass(kw_only=True)
class BenchReport:
    """Everything one ``saga bench`` run found."""

    config: Mapping[str, Any]
    machine: Mapping[str, Any]
    namespaces: Mapping[str, str] = field(default_factory=dict)
    """The RabbitMQ namespace (and, for the system, the database) each target used."""
    system: list[LevelResult] = field(default_factory=list)
    baseline: list[LevelResult] = field(default_factory=list)
    messages: Mapping[str, Any] = field(default_factory=dict)
    """Broker-side publish counts per target: ``{"system": {...}, "baseline": {...}}``."""
    store_total: StoreOps = field(default_factory=StoreOps)
    notes: list[str] = field(default_factory=list)
    profiles: Mapping[str, Any] = field(default_factory=dict)
    history: Mapping[str, Any] = field(default_factory=dict)
    """What ``--history`` seeded: sagas, documents, templates, seconds (empty if none)."""
    empty_store: Mapping[str, list[LevelResult]] = field(default_factory=dict)
    """With ``--history``: the same levels measured in the same run before seeding,
    ``{"system": [...], "baseline": [...]}``, to compare the ratio against."""
    saga: Mapping[str, Any] = field(default_factory=dict)
    """The saga under test: name, version, steps, stages, services, messages per saga by
    its definition, the workload's options."""
    memory: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Resident memory (MiB) per service: ``started`` (ready, before any load) and
    ``end`` (after the last level)."""

    def baseline_at(self, concurrency: int) -> LevelResult | None:
        """The baseline level run at ``concurrency``, if any."""
        return next((b for b in self.baseline if b.concurrency == concurrency), None)

    def ratio(self, level: LevelResult) -> float:
        """System rate / baseline rate at the same concurrency (nan without a baseline)."""
        base = self.baseline_at(level.concurrency)
        if base is None or base.rate == 0:
            return math.nan
        return level.rate / base.rate

    def empty_store_ratio(self, concurrency: int) -> float:
        """The ratio measured before ``--history`` seeded (nan if not measured)."""
        system = next(
            (r for r in self.empty_store.get("system", []) if r.concurrency == concurrency), None
        )
        base = next(
            (r for r in self.empty_store.get("baseline", []) if r.concurrency == concurrency), None
        )
        if system is None or base is None or base.rate == 0:
            return math.nan
        return system.rate / base.rate

    def messages_per_saga(self, target: str = "system") -> float:
        """Publishes per saga started: counted by the broker (management API) or, if it
        could not be asked, the store-side estimate (nan if neither is known)."""
        counted = self.messages.get(target) or {}
        sagas = sum(r.started for r in (self.system if target == "system" else self.baseline))
        publishes = counted.get("publishes")
        if publishes is None:
            publishes = counted.get("outbox_estimate", counted.get("by_construction"))
        return publishes / sagas if publishes is not None and sagas else math.nan

    def messages_counted_by_broker(self, target: str = "system") -> bool:
        """Whether the broker counted the messages (else they are the estimate)."""
        return "publishes" in (self.messages.get(target) or {})

    def sagas_started(self) -> int:
        """System sagas started in all levels."""
        return sum(r.started for r in self.system)

    @property
    def expected_messages(self) -> int | None:
        """Messages per completed saga by its definition: the start, a command and a
        reply per step, the outcome (progress events not counted)."""
        found = self.saga.get("messages_per_saga")
        return int(found) if found is not None else None

    def saga_path_per_saga(self) -> float:
        """Starts, commands, replies and outcomes per saga started, as the commits stored
        them (nan if unknown): equal to :attr:`expected_messages` when every saga
        completed without a resend."""
        counted: Mapping[str, int] = (self.messages.get("system") or {}).get("stored") or {}
        sagas = self.sagas_started()
        if not counted or not sagas:
            return math.nan
        return (sagas + 2 * counted.get("command", 0) + counted.get("outcome", 0)) / sagas

    def progress_messages(self) -> int | None:
        """Messages the broker counted for the progress events (fewer than the events
        when they are batched): its count less the saga path the store expects; None if
        either is unknown."""
        counted = self.messages.get("system") or {}
        publishes, path = counted.get("publishes"), counted.get("saga_path_estimate")
        if publishes is None or path is None:
            return None
        return int(publishes) - int(path)

    def progress_per_saga(self) -> float:
        """Progress events per saga started, as the commits stored them (nan if unknown)."""
        counted = (self.messages.get("system") or {}).get("stored") or {}
        sagas = self.sagas_started()
        return int(counted.get("progress", 0)) / sagas if counted and sagas else math.nan
