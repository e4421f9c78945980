"""Robust AMQP connections to one broker node or to any node of a cluster, over TLS or not.

``AMQP_URL`` names one node or several, comma-separated. A connection goes to the first
node that answers and, when that node goes away, to the next live one, round the list:
aio-pika's robust connection does the rest (channels, qos, declarations and consumers
are restored on the new node, reconnect callbacks run). Publisher confirms and consumer
acks behave as on one node: a publish in flight when the node dies is not confirmed (the
caller keeps it and sends it again), and unacked deliveries go back to their queues.

TLS: ``amqps://`` URLs, with the CA, client certificate and key files given in the
settings (``SAGA_AMQP_CA_FILE``, ``SAGA_AMQP_CERT_FILE``, ``SAGA_AMQP_KEY_FILE``) as one
:class:`ssl.SSLContext`. A server whose certificate the CA does not vouch for is refused
at once with an error that says so; it is not retried like a node that is down.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from aio_pika import RobustConnection, connect_robust
from aio_pika.exceptions import AMQPConnectionError
from yarl import URL

from orchestrator.errors import BrokerUnavailable

if TYPE_CHECKING:
    from aio_pika.abc import AbstractRobustConnection

__all__ = [
    "AllNodesFailed",
    "FailoverConnection",
    "TlsRefused",
    "connect_amqp",
    "failover_class",
    "safe_url",
    "split_urls",
    "tls_context",
]


class AllNodesFailed(AMQPConnectionError):
    """No node of the list accepted a connection; the message names each (no passwords)
    with its error. An ``AMQPConnectionError``, so aio-pika's robust connection treats it
    as any failed attempt (fail fast at start, retry later on a reconnect)."""

    def __init__(self, errors: Sequence[tuple[URL, BaseException]]) -> None:
        self.errors = tuple(errors)
        detail = "; ".join(f"{safe_url(url)}: {describe(e)}" for url, e in self.errors)
        super().__init__(f"no RabbitMQ node accepted a connection ({detail})")

    def __str__(self) -> str:
        return str(self.args[0])


class TlsRefused(BrokerUnavailable):
    """The TLS handshake failed: a wrong CA, an expired or mismatched certificate, or a
    client certificate the server rejects. Not retried: it will not heal by waiting."""


def split_urls(value: str | Sequence[str]) -> tuple[str, ...]:
    """The broker URLs of ``AMQP_URL``: one, or several separated by commas."""
    items = value.split(",") if isinstance(value, str) else list(value)
    urls = tuple(u.strip() for u in items if u.strip())
    if not urls:
        raise ValueError("no AMQP URL given")
    for url in urls:
        scheme = URL(url).scheme
        if scheme not in ("amqp", "amqps"):
            raise ValueError(f"{safe_url(url)}: the scheme must be amqp:// or amqps://")
    return urls


def safe_url(url: str | URL) -> str:
    """The URL without its password, for messages and logs."""
    parsed = URL(str(url))
    if parsed.password:
        parsed = parsed.with_password("***")
    return str(parsed.with_query(None))


def describe(error: BaseException) -> str:
    """One line for a connection error; TLS failures are named as such."""
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = getattr(error, "verify_message", None) or error
        return f"TLS certificate verification failed: {reason}"
    if isinstance(error, ssl.SSLError):
        return f"TLS handshake failed: {error}"
    return str(error) or type(error).__name__


def tls_error(error: BaseException) -> ssl.SSLError | None:
    """The TLS error behind ``error`` (itself, one of its nodes', or its cause)."""
    seen: list[BaseException] = [error]
    if isinstance(error, AllNodesFailed):
        seen += [e for _, e in error.errors]
    while seen:
        e = seen.pop(0)
        if isinstance(e, ssl.SSLError):
            return e
        if e.__cause__ is not None:
            seen.append(e.__cause__)
    return None


def tls_context(
    *, ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """A client TLS context: the server verified against ``ca_file`` (the system's CAs if
    unset), host names checked, and a client certificate if ``cert_file`` is given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


class FailoverConnection(RobustConnection):
    """A robust connection over a list of nodes (``URLS``): each connection attempt,
    the first and every reconnect, tries the nodes in turn, starting after the one that
    was lost, and fails only when none answers.

    aio-pika's robust connection has one URL; the attempt itself is its private
    ``__connect_transport``, overridden here (tests/unit/test_amqp_connection.py fails
    if that name goes away in a new aio-pika).
    """

    URLS: ClassVar[tuple[URL, ...]] = ()

    def __init__(self, url: URL, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        # The first URL carries the connection's query (name, heartbeat, ...); so do all.
        self.nodes = tuple(u.update_query(url.query) for u in self.URLS) or (self.url,)
        self.node = 0
        self.failovers = 0

    async def _RobustConnection__connect_transport(self) -> None:
        attempt = super()._RobustConnection__connect_transport  # type: ignore[misc]
        reconnect = self.connection_attempt > 0  # the node we were on was lost: next one
        start = (self.node + 1) % len(self.nodes) if reconnect else self.node
        errors: list[tuple[URL, BaseException]] = []
        for i in range(len(self.nodes)):
            index = (start + i) % len(self.nodes)
            self.url = self.nodes[index]
            try:
                await attempt()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # every node gets its try; all errors are reported
                errors.append((self.nodes[index], e))
                continue
            if reconnect and index != self.node:
                self.failovers += 1
            self.node = index
            return
        if len(errors) == 1:
            raise errors[0][1]
        raise AllNodesFailed(errors)

    @property
    def current(self) -> str:
        """The node this connection is on (or last tried), without its password."""
        return safe_url(self.nodes[self.node])


def failover_class(urls: Sequence[str]) -> type[FailoverConnection]:
    """A :class:`FailoverConnection` class over ``urls`` (for ``connection_class=``)."""
    nodes = tuple(URL(u) for u in split_urls(urls))
    return type("FailoverConnection", (FailoverConnection,), {"URLS": nodes})


async def connect_amqp(
    urls: str | Sequence[str],
    *,
    name: str,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
    reconnect_interval: float = 1.0,
) -> AbstractRobustConnection:
    """A robust connection to the first node of ``urls`` that answers (and to the next
    live one whenever the node is lost). Raises :class:`TlsRefused` on a TLS failure and
    ``AllNodesFailed`` (or the one node's error) when no node answers."""
    nodes = split_urls(urls)
    try:
        return await connect_robust(
            nodes[0],
            client_properties={"connection_name": name},
            timeout=timeout,
            ssl_context=ssl_context,
            connection_class=failover_class(nodes),
            reconnect_interval=reconnect_interval,
        )
    except Exception as e:
        if (bad := tls_error(e)) is not None:
            where = ", ".join(safe_url(u) for u in nodes)
            raise TlsRefused(
                f"TLS connection to RabbitMQ at {where} refused: {describe(bad)} "
                "(check SAGA_AMQP_CA_FILE, SAGA_AMQP_CERT_FILE and SAGA_AMQP_KEY_FILE)"
            ) from e
        raise
