"""Which saga the benchmark runs, the workload its pack supplies, and the services it needs.

A pack's ``workload`` part is a callable ``workload(saga, options) -> Workload``: ``saga``
is one of the pack's saga names, ``options`` the ``--workload-option KEY=VALUE`` pairs
(strings; :func:`parse_options` converts them). The :class:`Workload` seeds the store,
prepares what its sagas need once the services run, and builds each saga's start
command, chosen so that it completes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.dev.processes import SERVICES, services_of

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from contracts import Message
    from orchestrator.packs import SagaPack
    from orchestrator.saga.definition import SagaDefinition
    from orchestrator.settings import Settings

__all__ = [
    "BenchContext",
    "SagaUnderTest",
    "Workload",
    "WorkloadError",
    "default_saga",
    "parse_options",
    "resolve",
    "services_for",
]

Doc = dict[str, Any]


class WorkloadError(ValueError):
    """The saga cannot be benchmarked as asked (no workload, bad option); the message
    says why and what is known."""


@dataclass(frozen=True, kw_only=True)
class BenchContext:
    """What a workload may use once the services run: the system's settings (to start
    sagas with ``SagaClient``), its database, and whether the read side runs (sagas it
    runs are then projected too)."""

    settings: Settings
    database: AsyncDatabase[Doc]
    read_side: bool = False


class Workload(Protocol):
    """What a pack's ``workload`` part returns for one of its sagas."""

    @property
    def saga(self) -> str:
        """The saga whose sagas :meth:`start` starts."""
        ...

    @property
    def seeds_with(self) -> tuple[str, ...]:
        """Other sagas :meth:`prepare` runs (their participants are started for it, and
        stopped before measuring if the saga under test does not use them)."""
        ...

    def options(self) -> Mapping[str, Any]:
        """The options in effect, for the report."""
        ...

    async def seed(self, database: AsyncDatabase[Doc]) -> None:
        """Before the services start: what every saga needs (stock, accounts)."""
        ...

    async def prepare(self, bench: BenchContext) -> None:
        """Once the services run, before measuring (may run sagas of :attr:`seeds_with`)."""
        ...

    async def reserve(self, concurrency: int, seconds: float) -> None:
        """Before each measured level (``concurrency`` in flight, starting sagas for
        ``seconds``): make sure that many more starts can complete. The services of
        :attr:`seeds_with` the saga does not use are stopped by then."""
        ...

    def start(self, saga_id: str) -> Message:
        """The start command of one saga, chosen so that it completes."""
        ...

    def notes(self) -> list[str]:
        """What qualifies the run's numbers (e.g. the workload ran out of data)."""
        ...


def parse_options(given: Mapping[str, str], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` converted to the types of ``defaults`` (int, float, bool, str), on top of
    them; a clear error for an unknown key or a value of the wrong type."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(f"{k}={v}" for k, v in defaults.items()) or "none"
        raise WorkloadError(f"unknown workload option {', '.join(unknown)} (known: {known})")
    parsed = dict(defaults)
    for key, text in given.items():
        kind = type(defaults[key])
        try:
            parsed[key] = _convert(kind, text)
        except ValueError:
            raise WorkloadError(
                f"workload option {key}={text!r} is not a {kind.__name__}"
            ) from None
    return parsed


def _convert(kind: type, text: str) -> Any:
    if kind is not bool:
        return kind(text)
    if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
        raise ValueError(text)
    return text.lower() in ("1", "true", "yes")


def _pack_of(settings: Settings, saga: str) -> SagaPack:
    for pack in settings.packs():
        if any(d.name == saga for d in pack.definitions):
            return pack
    known = ", ".join(settings.registry().names)
    raise WorkloadError(f"no registered saga {saga!r} (registered: {known})")


def benchmarkable(settings: Settings) -> list[str]:
    """Registered sagas whose pack supplies a workload, in registration order."""
    return [
        name
        for pack in settings.packs()
        if pack.workload is not None
        for name in dict.fromkeys(d.name for d in pack.definitions)
    ]


def default_saga(settings: Settings) -> str:
    """The first saga of the first registered pack that has a workload."""
    found = benchmarkable(settings)
    if not found:
        raise WorkloadError("no registered saga pack supplies a benchmark workload")
    return found[0]


@dataclass(frozen=True, kw_only=True)
class SagaUnderTest:
    """The saga measured, its newest definition, its workload and the services to run."""

    definition: SagaDefinition
    workload: Workload
    services: tuple[str, ...]
    """Started for the whole run: the orchestrator, the participants, the read side."""
    seeding_services: tuple[str, ...] = ()
    """Started only while the workload prepares (participants of ``seeds_with`` only)."""

    @property
    def name(self) -> str:
        """The saga's name."""
        return self.definition.name

    def as_dict(self) -> dict[str, Any]:
        """For the report."""
        d = self.definition
        return {
            "name": d.name,
            "version": d.version,
            "steps": [s.name for s in d.steps],
            "stages": [[s.name for s in stage] for stage in d.stages],
            "participants": list(d.participants()),
            "messages_per_saga": 2 + 2 * len(d.steps),
            "services": list(self.services),
            "seeding_services": list(self.seeding_services),
            "workload": dict(self.workload.options()),
        }


def resolve(
    settings: Settings,
    saga: str | None = None,
    options: Mapping[str, str] | None = None,
    *,
    read_side: bool = False,
) -> SagaUnderTest:
    """The saga ``saga`` (default :func:`default_saga`) of the registered packs, with
    its pack's workload made from ``options``."""
    name = saga or default_saga(settings)
    pack = _pack_of(settings, name)
    make = pack.part("workload")
    if make is None:
        raise WorkloadError(
            f"saga {name!r} (pack {pack.name!r}) has no benchmark workload; sagas that "
            f"have one: {', '.join(benchmarkable(settings)) or 'none'}"
        )
    try:
        workload: Workload = make(name, dict(options or {}))
    except (TypeError, ValueError) as e:
        raise WorkloadError(f"workload of {name!r}: {e}") from e
    registry = settings.registry()
    definition = registry.latest(name)
    services = services_for(settings, (definition,), read_side=read_side)
    seeding = services_for(settings, tuple(registry.latest(s) for s in workload.seeds_with))
    return SagaUnderTest(
        definition=definition,
        workload=workload,
        services=services,
        seeding_services=tuple(s for s in seeding if s not in services),
    )


def services_for(
    settings: Settings, definitions: tuple[SagaDefinition, ...], *, read_side: bool = False
) -> tuple[str, ...]:
    """The orchestrator, the services of the definitions' participants (from the packs'
    ``services``), and the read side if asked."""
    known = services_of(settings)
    found = ["orchestrator"]
    for definition in definitions:
        for participant in definition.participants():
            if participant not in known or participant in SERVICES:
                raise WorkloadError(
                    f"participant {participant!r} of {definition.key} has no service in any "
                    "registered pack's `services`; the benchmark cannot start it"
                )
            found.append(participant)
    if read_side:
        found.append("readside")
    return tuple(dict.fromkeys(found))
