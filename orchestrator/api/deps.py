"""What every route needs: connections opened once per process, and who may call it.

Three roles, each a bearer token (``Authorization: Bearer <token>``), none with a
default, so an API started without tokens refuses everything but health and metrics:

* **operator** (``SAGA_OPERATOR_TOKEN``): everything, including changes (restock,
  replay, discard, resume);
* **client** (``SAGA_CLIENT_TOKEN``): start sagas (``POST /orders``,
  ``POST /definitions/{name}/sagas``); the operator token may too;
* **reader** (``SAGA_READ_TOKEN``): reads that show business or personal data (sagas with
  their start data, dead letters with their bodies, stock); the operator token may too.
  ``SAGA_READS_OPEN=true`` opens reads to anyone, for a development machine.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from orchestrator.settings import env_bool

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from orchestrator.client import SagaClient
    from orchestrator.readside import SagaAnalytics, SagaSummaries
    from orchestrator.saga.registry import SagaRegistry
    from orchestrator.settings import Settings

__all__ = ["Access", "Operator", "Reader", "Services", "Starter", "services"]


@dataclass(frozen=True, kw_only=True)
class Access:
    """The tokens of each role (None: not configured), held as SecretStr so that a repr
    or a log line never shows them."""

    operator: SecretStr | None = None
    client: SecretStr | None = None
    reader: SecretStr | None = None
    reads_open: bool = False

    @classmethod
    def of(cls, settings: Settings) -> Access:
        """From ``SAGA_OPERATOR_TOKEN``, ``SAGA_CLIENT_TOKEN``, ``SAGA_READ_TOKEN`` and
        ``SAGA_READS_OPEN``."""
        env = settings.env()
        return cls(
            operator=settings.operator_token_secret or None,
            client=_secret(env.get("SAGA_CLIENT_TOKEN")),
            reader=_secret(env.get("SAGA_READ_TOKEN")),
            reads_open=env_bool(env, "SAGA_READS_OPEN", False),
        )


def _secret(token: str | None) -> SecretStr | None:
    return SecretStr(token) if token else None


@dataclass
class Services:
    """Connections and stores shared by the routes."""

    settings: Settings
    client: SagaClient
    db: AsyncDatabase[dict[str, Any]]
    summaries: SagaSummaries
    analytics: SagaAnalytics
    registry: SagaRegistry
    access: Access


def services(request: Request) -> Services:
    """The app's services (set up in the lifespan)."""
    found: Services = request.app.state.services
    return found


_bearer = HTTPBearer(
    auto_error=False,
    description="SAGA_OPERATOR_TOKEN (everything), SAGA_CLIENT_TOKEN (start sagas) or "
    "SAGA_READ_TOKEN (reads)",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _check(given: Credentials, accepted: dict[str, SecretStr | None], what: str) -> None:
    """Pass if the bearer token is one of the configured ``accepted`` ones; else 401."""
    configured = {role: token for role, token in accepted.items() if token}
    if not configured:
        names = " or ".join(f"SAGA_{role.upper()}_TOKEN" for role in accepted)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"{what} is disabled: no token is configured for it (set {names})",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = given.credentials.encode() if given is not None else b""
    # Compare with every token (no early exit): the time taken does not tell which matched.
    matches = [
        hmac.compare_digest(token, t.get_secret_value().encode()) for t in configured.values()
    ]
    if not token or not any(matches):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"{what} needs a token: Authorization: Bearer <{' or '.join(configured)} token>",
            headers={"WWW-Authenticate": "Bearer"},
        )


def operator(request: Request, credentials: Credentials) -> None:
    """Changes need the operator token."""
    access = services(request).access
    _check(credentials, {"operator": access.operator}, "changing things")


def starter(request: Request, credentials: Credentials) -> None:
    """Starting sagas needs the client token or the operator token."""
    access = services(request).access
    _check(credentials, {"client": access.client, "operator": access.operator}, "starting sagas")


def reader(request: Request, credentials: Credentials) -> None:
    """Reads need the read token or the operator token, unless reads are open."""
    access = services(request).access
    if access.reads_open:
        return
    _check(credentials, {"read": access.reader, "operator": access.operator}, "reading")


Operator = Annotated[None, Depends(operator)]
Starter = Annotated[None, Depends(starter)]
Reader = Annotated[None, Depends(reader)]
