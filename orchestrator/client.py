"""A client for starting sagas and reading their state: used by the dev runner, the CLI
and the tests. Starting a saga is publishing its start command; nothing else is special."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from contracts import decode
from orchestrator.messaging.bus import Bus
from orchestrator.messaging.envelope import SAGA_VERSION, build_message
from orchestrator.ops.timeline import timeline_lines
from orchestrator.runtime.engine import SagaRuntime
from orchestrator.runtime.outbox import AmqpOutboxPublisher, Dispatcher
from orchestrator.saga.definition import routing_key
from orchestrator.store.connect import connect_mongo
from orchestrator.store.mongo import MongoSagaStore

if TYPE_CHECKING:
    from pymongo import AsyncMongoClient

    from contracts import Message
    from orchestrator.saga.commits import Commit
    from orchestrator.saga.state import SagaState
    from orchestrator.settings import Settings

__all__ = ["SagaClient", "new_saga_id"]


def new_saga_id() -> str:
    """A fresh saga id (32 hex digits)."""
    return uuid.uuid4().hex


class SagaClient:
    """Publishes start commands and reads saga state from the store."""

    def __init__(self, settings: Settings, *, name: str = "client") -> None:
        self.settings = settings
        self.topology = settings.topology()
        self.bus = Bus.of(settings, name=f"{settings.namespace}.{name}", topology=self.topology)
        self._mongo: AsyncMongoClient[dict[str, Any]] | None = None
        self._store: MongoSagaStore | None = None

    async def __aenter__(self) -> SagaClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect to the broker and the store."""
        self._mongo = await connect_mongo(
            self.settings.require_mongodb_url(),
            app_name=self.bus.name,
            **self.settings.mongodb_options(),
        )
        self._store = MongoSagaStore(database=self._mongo[self.settings.database])
        await self.bus.connect()

    async def close(self) -> None:
        """Disconnect."""
        await self.bus.close()
        if self._mongo is not None:
            await self._mongo.close()

    @property
    def store(self) -> MongoSagaStore:
        """The saga store (read side for this client)."""
        assert self._store is not None, "connect() first"
        return self._store

    async def start(
        self,
        command: Message,
        *,
        saga_id: str | None = None,
        message_id: str | None = None,
        version: int | None = None,
    ) -> str:
        """Publish a saga's start command (confirmed); returns the saga id. ``version``
        starts that version of the saga's definition instead of the newest."""
        saga_id = saga_id or new_saga_id()
        await self.send(
            command,
            message_id=message_id or f"{saga_id}:start",
            correlation_id=saga_id,
            headers={SAGA_VERSION: version} if version is not None else None,
        )
        return saga_id

    async def send(
        self,
        command: Message,
        *,
        message_id: str,
        correlation_id: str,
        headers: dict[str, Any] | None = None,
    ) -> None:
        """Publish any command on the commands exchange (confirmed, mandatory), routed by
        its type: a start command to its saga, any other to its participant."""
        message = build_message(
            command,
            message_id=message_id,
            correlation_id=correlation_id,
            app_id=self.bus.name,
            headers=headers,
        )
        await self.bus.publish(
            message, exchange=self.topology.commands_exchange, routing_key=routing_key(command)
        )

    async def publish_raw(
        self,
        type_name: str,
        body: dict[str, Any],
        *,
        correlation_id: str,
        message_id: str | None = None,
    ) -> str:
        """Validate a command given as JSON and publish it like any service would.
        Raises ``MalformedMessage`` (nothing is published) if it is not a valid contract."""
        command = decode(type_name, json.dumps(body).encode())
        message_id = message_id or f"{correlation_id}:{uuid.uuid4().hex[:12]}"
        message = build_message(
            command,
            message_id=message_id,
            correlation_id=correlation_id,
            app_id=self.bus.name,
            reply_to=None,
        )
        await self.bus.publish(
            message, exchange=self.topology.commands_exchange, routing_key=routing_key(command)
        )
        return message_id

    async def resume(self, saga_id: str) -> Commit | None:
        """Resume a parked saga: append the decision and publish the commands it resends.
        None if the saga is not parked. The saga's definition is the one stored with it,
        looked up in this deployment's registry."""
        dispatcher = Dispatcher(store=self.store, publisher=AmqpOutboxPublisher(bus=self.bus))
        runtime = SagaRuntime(
            registry=self.settings.registry(),
            store=self.store,
            dispatcher=dispatcher,
            publish_progress=self.settings.publish_progress,
        )
        commit = await runtime.resume(saga_id)
        await dispatcher.flush()
        return commit

    async def follow(
        self, saga_id: str, printer: Callable[[str], None], *, timeout: float = 60.0
    ) -> SagaState:
        """Print each event of the saga as it is stored, until it settles or time is up."""
        printed = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            lines = list(timeline_lines(await self.history(saga_id)))
            for line in lines[printed:]:
                printer("  " + line)
            printed = len(lines)
            state = await self.state(saga_id)
            if state.status is not None and state.status.settled:
                printer(f"  => {state.status.value}")
                return state
            if loop.time() >= deadline:
                printer(
                    f"  (still {state.status} after {timeout:.0f}s; see 'saga status {saga_id}')"
                )
                return state
            await asyncio.sleep(0.1)

    async def state(self, saga_id: str) -> SagaState:
        """The saga as its events say it is now."""
        return await self.store.load(saga_id)

    async def history(self, saga_id: str) -> list[Commit]:
        """The saga's commits, oldest first."""
        return await self.store.history(saga_id)

    async def pruned(self, saga_id: str) -> bool:
        """Whether the saga finished and retention removed its history."""
        return await self.store.pruned(saga_id)

    async def wait_settled(
        self, saga_id: str, *, timeout: float = 30.0, poll: float = 0.05
    ) -> SagaState:
        """Poll until the saga is terminal or parked; TimeoutError with its state if not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            state = await self.state(saga_id)
            if state.status is not None and state.status.settled:
                return state
            if loop.time() >= deadline:
                raise TimeoutError(
                    f"saga {saga_id} not settled after {timeout}s: "
                    f"status={state.status}, step={state.step}"
                )
            await asyncio.sleep(poll)
