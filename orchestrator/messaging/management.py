"""The few calls of the RabbitMQ management HTTP API that ``saga topology`` makes:
policies, users, permissions and topic permissions of one vhost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from orchestrator.errors import OrchestratorError

if TYPE_CHECKING:
    from orchestrator.messaging.permissions import ServiceUser
    from orchestrator.messaging.topology import Policy

__all__ = ["Management", "ManagementError", "management_for"]

DEFAULT_PORT = 15672


class ManagementError(OrchestratorError):
    """The management API refused a call or cannot be reached."""


def management_for(amqp_url: str, management_url: str | None = None) -> Management:
    """The management API of the broker of ``amqp_url`` (the first, if several): same
    host, port 15672, same credentials and vhost; ``management_url``
    (``http://user:pass@host:15672``) overrides host, port and credentials."""
    amqp = urlsplit(amqp_url.split(",", maxsplit=1)[0].strip())
    vhost = unquote(amqp.path[1:]) if len(amqp.path) > 1 else "/"
    user, password = unquote(amqp.username or "guest"), unquote(amqp.password or "guest")
    scheme = "https" if amqp.scheme == "amqps" else "http"
    base = f"{scheme}://{amqp.hostname or '127.0.0.1'}:{DEFAULT_PORT}"
    if management_url:
        given = urlsplit(management_url)
        base = f"{given.scheme}://{given.hostname}:{given.port or DEFAULT_PORT}"
        if given.username:
            user, password = unquote(given.username), unquote(given.password or "")
    return Management(base=base, user=user, password=password, vhost=vhost)


@dataclass(frozen=True, kw_only=True)
class Management:
    """A management API endpoint and the vhost the calls are about."""

    base: str
    user: str
    password: str
    vhost: str = "/"

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with httpx.AsyncClient(
            base_url=self.base, auth=(self.user, self.password), timeout=15.0
        ) as http:
            try:
                response = await http.request(method, path, json=body)
            except httpx.HTTPError as e:
                raise ManagementError(
                    f"cannot reach the RabbitMQ management API at {self.base} "
                    f"(rabbitmq-plugins enable rabbitmq_management): {e}"
                ) from e
        if method == "DELETE" and response.status_code == httpx.codes.NOT_FOUND:
            return None
        if response.is_error:
            raise ManagementError(
                f"{method} {self.base}{path}: {response.status_code} {response.text[:300]}"
            )
        return response.json() if response.content else None

    @property
    def _vh(self) -> str:
        return quote(self.vhost, safe="")

    async def put_policy(self, policy: Policy) -> None:
        """Create or replace a policy of the vhost."""
        await self._call(
            "PUT",
            f"/api/policies/{self._vh}/{quote(policy.name, safe='')}",
            {
                "pattern": policy.pattern,
                "definition": policy.definition,
                "priority": policy.priority,
                "apply-to": policy.apply_to,
            },
        )

    async def policies(self) -> list[dict[str, Any]]:
        """The policies of the vhost."""
        found: list[dict[str, Any]] = await self._call("GET", f"/api/policies/{self._vh}")
        return found

    async def delete_policy(self, name: str) -> None:
        """Remove a policy (gone already is fine)."""
        await self._call("DELETE", f"/api/policies/{self._vh}/{quote(name, safe='')}")

    async def put_user(self, user: ServiceUser, password: str) -> None:
        """Create the user (no tags: no management UI access) with its permissions in the
        vhost, replacing what it had."""
        name = quote(user.name, safe="")
        await self._call("PUT", f"/api/users/{name}", {"password": password, "tags": ""})
        await self._call(
            "PUT",
            f"/api/permissions/{self._vh}/{name}",
            {"configure": user.configure, "write": user.write, "read": user.read},
        )
        await self._call("DELETE", f"/api/topic-permissions/{self._vh}/{name}")
        for exchange, pattern in user.topic_write.items():
            await self._call(
                "PUT",
                f"/api/topic-permissions/{self._vh}/{name}",
                {"exchange": exchange, "write": pattern, "read": ".*"},
            )

    async def delete_user(self, name: str) -> None:
        """Remove a user and its permissions (gone already is fine)."""
        await self._call("DELETE", f"/api/users/{quote(name, safe='')}")
