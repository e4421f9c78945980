"""Saga packs: a saga definition and what it brings to the rest of the system.

A deployment runs the packs named in ``SAGA_DEFINITIONS`` (``pkg.module:attr``, comma
separated; default: the shipped packs). An entry may name a :class:`SagaPack`, a
:class:`~orchestrator.saga.definition.SagaDefinition`, or a list of either; a bare
definition is a pack with nothing but its steps, which is all the orchestrator needs.
The topology, the registry, the API, the CLI, the read side, the harness and the
benchmark are all derived from the loaded packs, so adding a saga edits no engine code.

Every optional part of a pack is a ``module:attribute`` string, imported only by the
tool that uses it: the orchestrator never imports FastAPI routes or harness scenarios.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from orchestrator.messaging.topology import QueueSpec, Routes, SagaRoute
from orchestrator.saga.definition import SagaDefinition, routing_key
from orchestrator.saga.registry import SagaRegistry
from orchestrator.settings import DEFAULT_PACKS

__all__ = [
    "DEFAULT_PACKS",
    "PackError",
    "SagaPack",
    "load_object",
    "load_packs",
    "registry_of",
    "routes_of",
]


class PackError(ValueError):
    """A ``SAGA_DEFINITIONS`` entry cannot be loaded; the message names it."""


@dataclass(frozen=True, kw_only=True)
class SagaPack:
    """A saga (one or more versions) and what it adds around the engine.

    Only ``definitions`` is required. ``services`` are the participant processes the dev
    runner, the harness and the benchmark start for it (name -> module run with
    ``python -m``); ``participants`` names command queues beyond its steps' participants;
    ``queues`` adds event queues (consumers of its outcome events, its projections). The
    rest are ``module:attribute`` strings:

    * ``api``: a FastAPI ``APIRouter`` mounted by ``saga-api``;
    * ``cli``: ``register(subparsers)``, adding commands to ``saga``;
    * ``readside``: ``install(service)``, adding projections to ``saga-readside``;
    * ``invariants``: ``async check(db, saga_ids, report)``, the pack's own invariants
      checked by the harness after the generic ones;
    * ``workload``: a callable returning the benchmark's workload;
    * ``scenarios``: a tuple of harness scenarios;
    * ``seed``: ``async seed(client)``, sample data for ``saga-dev``.
    """

    name: str
    definitions: tuple[SagaDefinition, ...]
    services: Mapping[str, str] = field(default_factory=dict)
    participants: tuple[str, ...] = ()
    queues: tuple[QueueSpec, ...] = ()
    api: str | None = None
    cli: str | None = None
    readside: str | None = None
    invariants: str | None = None
    workload: str | None = None
    scenarios: str | None = None
    seed: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.definitions:
            raise PackError(f"pack {self.name!r} has no saga definition")

    def part(self, role: str) -> Any:
        """Import and return one optional part (``api``, ``cli``, ...); None if absent."""
        ref = getattr(self, role)
        return None if ref is None else load_object(ref, what=f"pack {self.name!r} {role}")


def load_object(ref: str, *, what: str = "SAGA_DEFINITIONS entry") -> Any:
    """Import ``pkg.module:attr``; a clear :class:`PackError` if it is not there."""
    module_name, sep, attr = ref.strip().partition(":")
    if not sep or not module_name or not attr:
        raise PackError(f"{what} {ref!r} is not 'pkg.module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise PackError(f"{what} {ref!r}: cannot import {module_name!r}: {e}") from e
    except Exception as e:  # the module itself is broken (a bad definition, a typo): say so
        raise PackError(
            f"{what} {ref!r}: importing {module_name!r} failed: {type(e).__name__}: {e}"
        ) from e
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise PackError(f"{what} {ref!r}: {module_name} has no {attr!r}") from None
    return target


def _as_packs(ref: str, found: object) -> list[SagaPack]:
    if isinstance(found, SagaPack):
        return [found]
    if isinstance(found, SagaDefinition):
        return [SagaPack(name=found.name, definitions=(found,))]
    if isinstance(found, (list, tuple)):
        return [p for item in found for p in _as_packs(ref, item)]
    raise PackError(
        f"SAGA_DEFINITIONS entry {ref!r} is a {type(found).__name__}, "
        "not a SagaPack, a SagaDefinition or a list of them"
    )


def _merge(packs: Iterable[SagaPack]) -> tuple[SagaPack, ...]:
    """Packs of one name (versions registered separately) become one pack."""
    merged: dict[str, SagaPack] = {}
    for pack in packs:
        old = merged.get(pack.name)
        if old is None:
            merged[pack.name] = pack
            continue
        extra = tuple(d for d in pack.definitions if d not in old.definitions)
        merged[pack.name] = replace(old, definitions=(*old.definitions, *extra))
    return tuple(merged.values())


@cache
def load_packs(refs: Sequence[str] = DEFAULT_PACKS) -> tuple[SagaPack, ...]:
    """The packs ``refs`` name, loaded once per process."""
    if not refs:
        raise PackError("SAGA_DEFINITIONS names no saga")
    return _merge(p for ref in refs for p in _as_packs(ref, load_object(ref)))


def registry_of(
    packs: Iterable[SagaPack], *, timeout: float | None = None, max_sends: int | None = None
) -> SagaRegistry:
    """Every definition of the packs; with the deployment's step defaults if given."""
    registry = SagaRegistry(d for p in packs for d in p.definitions)
    if timeout is None or max_sends is None:
        return registry
    return registry.with_defaults(timeout=timeout, max_sends=max_sends)


def routes_of(packs: Iterable[SagaPack]) -> Routes:
    """The topology's input: each saga's start keys, every participant, pack queues."""
    packs = tuple(packs)
    registry = registry_of(packs)
    sagas = tuple(
        SagaRoute(
            name=name,
            starts=tuple(
                dict.fromkeys(
                    routing_key(registry.get(name, v).start) for v in registry.versions(name)
                )
            ),
        )
        for name in registry.names
    )
    participants = {*registry.participants(), *(x for p in packs for x in p.participants)}
    return Routes(
        sagas=sagas,
        participants=tuple(sorted(participants)),
        queues=tuple(q for p in packs for q in p.queues),
    )
