"""Starting any registered saga: ``POST /definitions/{name}/sagas`` with an
``Idempotency-Key``; ``GET /definitions`` lists what can be started.

One route per registered saga is generated from the registry, so the OpenAPI document
shows each saga's start contract as its request body, and the body is validated by that
contract itself before anything is stored. The saga id is derived from the key, and the
start command's message id from the saga id, so even two requests racing with one key
publish one start that the orchestrator deduplicates (see
:mod:`orchestrator.api.idempotency`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel, Field

from orchestrator.api.deps import Services, Starter, services
from orchestrator.api.idempotency import IdempotencyKey, fingerprint, name_for, remember
from orchestrator.api.models import errors

if TYPE_CHECKING:
    from contracts import Message
    from orchestrator.saga.definition import SagaDefinition
    from orchestrator.saga.registry import SagaRegistry

__all__ = ["SAGA_LINKS", "START_ERRORS", "SagaAccepted", "router_for", "start_once"]

START_ERRORS = errors(400, 401, 409, 413, 503)
"""What a start route can answer besides 200, 202 and 422."""
SAGA_LINKS = {
    "GetSaga": {
        "operationId": "get_saga",
        "parameters": {"saga_id": "$response.body#/saga_id"},
        "description": "The saga that was started: its state and timeline",
    }
}
"""OpenAPI links from a start's answer to the saga (clients and fuzzers follow them)."""


class SagaAccepted(BaseModel):
    """The saga that was started (or had been, for a repeated key)."""

    saga_id: str
    saga_name: str
    idempotency_key: str
    created: bool = Field(description="False if the key was seen before (same saga)")
    status_url: str


class DefinitionView(BaseModel):
    """A registered saga."""

    name: str
    versions: list[int]
    latest: int
    start_type: str
    steps: list[str]
    description: str
    start_schema: dict[str, Any]


async def start_once(
    svc: Services,
    *,
    key: str,
    saga_name: str,
    command: Message,
    version: int | None = None,
) -> tuple[str, bool]:
    """Record the key (or find it) and publish the start; (saga id, created)."""
    saga_id = name_for(key)
    created = await remember(
        svc.db["api_idempotency_keys"],
        key,
        {
            "saga_id": saga_id,
            "saga_name": saga_name,
            "request": fingerprint(f"{saga_name}:{version}", command),
        },
        what="order or start command",
    )
    await svc.client.start(command, saga_id=saga_id, version=version)
    return saga_id, created


def _route(definition: SagaDefinition, registry: SagaRegistry) -> Any:
    start_type = definition.start
    name = definition.name

    async def start_saga(
        body: Any,
        response: Response,
        svc: Annotated[Services, Depends(services)],
        idempotency_key: IdempotencyKey,
        _: Starter,
        version: Annotated[
            int | None,
            Query(ge=1, le=1_000_000, description="Definition version (default: newest)"),
        ] = None,
    ) -> SagaAccepted:
        if version is not None and not registry.knows(name, version):
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"saga {name!r} has no version {version} here"
            )
        command: Message = body
        saga_id, created = await start_once(
            svc, key=idempotency_key, saga_name=name, command=command, version=version
        )
        if not created:
            response.status_code = status.HTTP_200_OK
        return SagaAccepted(
            saga_id=saga_id,
            saga_name=name,
            idempotency_key=idempotency_key,
            created=created,
            status_url=f"/sagas/{saga_id}",
        )

    # The body's model is this saga's start contract, known only now (annotations are
    # strings under postponed evaluation, so it is set on the function itself).
    start_saga.__annotations__["body"] = start_type
    start_saga.__doc__ = (
        f"Start a {name} saga ({definition.description or start_type.TYPE}). The body is "
        f"its start command, {start_type.TYPE}. The same Idempotency-Key always returns "
        "the same saga."
    )
    return start_saga


def router_for(registry: SagaRegistry) -> APIRouter:
    """The start routes of every registered saga, and the list of definitions."""
    router = APIRouter(tags=["sagas"])
    for name in registry.names:
        definition = registry.latest(name)
        router.add_api_route(
            f"/definitions/{name}/sagas",
            _route(definition, registry),
            methods=["POST"],
            status_code=status.HTTP_202_ACCEPTED,
            response_model=SagaAccepted,
            name=f"start_{name}",
            summary=f"Start a {name} saga",
            responses={
                200: {
                    "model": SagaAccepted,
                    "description": "Started before with this key",
                    "links": SAGA_LINKS,
                },
                202: {"links": SAGA_LINKS},
                **START_ERRORS,
                **errors(404),
            },
        )

    @router.get("/definitions", response_model=list[DefinitionView])
    async def definitions() -> list[DefinitionView]:
        """Every registered saga: its versions, steps and start contract (JSON schema)."""
        return [
            DefinitionView(
                name=name,
                versions=list(registry.versions(name)),
                latest=registry.latest(name).version,
                start_type=registry.latest(name).start.TYPE,
                steps=[s.name for s in registry.latest(name).steps],
                description=registry.latest(name).description,
                start_schema=registry.latest(name).start.model_json_schema(),
            )
            for name in registry.names
        ]

    return router
