"""The saga definitions an orchestrator serves, by name and version.

The runtime never assumes a saga: a start command picks its definition by message type
(the newest version, unless the start names one), and every later message, deadline or
operator action picks it by the name and version stored with the saga.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from contracts import Message
from orchestrator.saga.definition import DefinitionError, SagaDefinition

__all__ = ["SagaRegistry", "UnknownSaga", "VersionInUse"]


class UnknownSaga(LookupError):
    """No registered definition has this name (or this version of it)."""


class VersionInUse(DefinitionError):
    """A configuration leaves out a version that sagas in flight still run on."""


class SagaRegistry:
    """Registered definitions; every version of a name shares the name's start type."""

    def __init__(self, definitions: Iterable[SagaDefinition]) -> None:
        self._versions: dict[str, dict[int, SagaDefinition]] = {}
        self._starts: dict[str, str] = {}
        for d in definitions:
            versions = self._versions.setdefault(d.name, {})
            if d.version in versions:
                if versions[d.version] is d:
                    continue
                raise DefinitionError(f"{d.key} is registered twice")
            owner = self._starts.get(d.start.TYPE)
            if owner is not None and owner != d.name:
                raise DefinitionError(
                    f"sagas {owner!r} and {d.name!r} both start with {d.start.TYPE}; "
                    "a start command must identify one saga"
                )
            versions[d.version] = d
            self._starts[d.start.TYPE] = d.name
        self._check_names()

    def _check_names(self) -> None:
        """Names that would make two sagas' queues or bindings collide."""
        owners: dict[str, str] = {}
        for d in self:
            for p in d.participants():
                owners.setdefault(p, d.name)
        for name in sorted(set(owners) & set(self._versions)):
            raise DefinitionError(
                f"saga {name!r} is named like a participant of saga {owners[name]!r}; "
                "a saga and a participant may not share a name (their queues would collide)"
            )
        for d in self:
            area = d.start.TYPE.split(".", 1)[0]
            if area in owners and owners[area] != d.name:
                raise DefinitionError(
                    f"start command {d.start.TYPE} of saga {d.name!r} is routed like a command "
                    f"of participant {area!r} (of saga {owners[area]!r}), whose queue would "
                    "receive it too; give it a type of its own area"
                )

    def __iter__(self) -> Iterator[SagaDefinition]:
        for name in sorted(self._versions):
            for version in sorted(self._versions[name]):
                yield self._versions[name][version]

    def __len__(self) -> int:
        return sum(len(v) for v in self._versions.values())

    def __contains__(self, name: object) -> bool:
        return name in self._versions

    @property
    def names(self) -> tuple[str, ...]:
        """Registered saga names, sorted."""
        return tuple(sorted(self._versions))

    def versions(self, name: str) -> tuple[int, ...]:
        """Registered versions of a saga, oldest first."""
        return tuple(sorted(self._get(name)))

    def get(self, name: str, version: int | None = None) -> SagaDefinition:
        """The definition ``name`` at ``version`` (the newest if None)."""
        versions = self._get(name)
        if version is None:
            return versions[max(versions)]
        try:
            return versions[version]
        except KeyError:
            known = ", ".join(f"v{v}" for v in sorted(versions))
            raise UnknownSaga(f"saga {name!r} has no version {version} here ({known})") from None

    def latest(self, name: str) -> SagaDefinition:
        """The newest version of ``name``."""
        return self.get(name)

    def knows(self, name: str, version: int | None = None) -> bool:
        """Whether ``name`` (at ``version``, if given) is registered."""
        versions = self._versions.get(name) or {}
        return bool(versions) and (version is None or version in versions)

    def for_start(self, message: Message | type[Message]) -> SagaDefinition | None:
        """The newest definition this start command starts, or None."""
        name = self._starts.get(message.TYPE)
        return None if name is None else self.latest(name)

    def start_types(self) -> tuple[type[Message], ...]:
        """The start contract of every registered saga (newest versions)."""
        return tuple(self.latest(n).start for n in self.names)

    def participants(self) -> tuple[str, ...]:
        """Every participant any registered step talks to, sorted."""
        return tuple(sorted({p for d in self for p in d.participants()}))

    def check_in_flight(self, in_flight: Mapping[tuple[str, int], int]) -> None:
        """Refuse to serve sagas without a version still in use: ``in_flight`` counts
        sagas in flight per (name, version); every version with any, of a name this
        registry serves, must be registered. Raises :class:`VersionInUse` naming each
        missing version and how many sagas run on it."""
        missing = sorted(
            (name, version, count)
            for (name, version), count in in_flight.items()
            if count > 0 and name in self._versions and version not in self._versions[name]
        )
        if not missing:
            return
        lines = [
            f"{name}@v{version}: {count} saga{'s' if count != 1 else ''} in flight, but "
            f"this configuration registers {name} "
            f"{', '.join(f'v{v}' for v in self.versions(name))} only"
            for name, version, count in missing
        ]
        keep = ", ".join(f"{n}@v{v}" for n, v, _ in missing)
        raise VersionInUse(
            "refusing to start: " + "; ".join(lines) + f". Keep {keep} registered "
            "(SAGA_DEFINITIONS) until 'saga sagas --version N --in-flight' lists none "
            "of them, then remove it."
        )

    def with_defaults(self, *, timeout: float, max_sends: int) -> SagaRegistry:
        """Every definition with the deployment's step defaults filled in."""
        return SagaRegistry(d.with_defaults(timeout=timeout, max_sends=max_sends) for d in self)

    def _get(self, name: str) -> dict[int, SagaDefinition]:
        try:
            return self._versions[name]
        except KeyError:
            known = ", ".join(self.names) or "none"
            raise UnknownSaga(f"no saga {name!r} is registered (registered: {known})") from None
