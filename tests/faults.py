"""Faults injected into in-process participants by wrapping their handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Handler = Callable[[str, Any], Awaitable[Any]]


class InjectedFault(RuntimeError):
    """A transient failure put there by a test."""


class Flaky:
    """Raises for the first ``failures`` calls per saga, then behaves."""

    def __init__(self, handler: Handler, failures: int) -> None:
        self.handler = handler
        self.failures = failures
        self.calls: dict[str, int] = {}

    async def __call__(self, saga_id: str, message: Any) -> Any:
        self.calls[saga_id] = self.calls.get(saga_id, 0) + 1
        if self.calls[saga_id] <= self.failures:
            raise InjectedFault(f"injected failure {self.calls[saga_id]} of {self.failures}")
        return await self.handler(saga_id, message)


class Broken:
    """Raises on every call until ``fixed`` is set."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.fixed = False
        self.calls = 0

    async def __call__(self, saga_id: str, message: Any) -> Any:
        self.calls += 1
        if not self.fixed:
            raise InjectedFault(f"injected permanent failure (call {self.calls})")
        return await self.handler(saga_id, message)


class HeldUntil:
    """Delays the handler's effect and reply until ``release()`` is awaited true."""

    def __init__(self, handler: Handler, release: Callable[[str], Awaitable[None]]) -> None:
        self.handler = handler
        self.release = release
        self.held = 0

    async def __call__(self, saga_id: str, message: Any) -> Any:
        self.held += 1
        await self.release(saga_id)
        return await self.handler(saga_id, message)
