"""TLS to the broker: services connect over amqps:// and sagas complete; a wrong CA is
refused at once with an error that says it is the certificate.

The test makes its own CA, server and client certificates (openssl), and starts its own
RabbitMQ node with only a TLS listener, on a free port, that asks every client for a
certificate signed by that CA. The node is stopped and its folder removed afterwards;
the default node is not touched.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.messaging.bus import Bus
from orchestrator.messaging.connection import TlsRefused
from orchestrator.saga.state import Status
from orchestrator.settings import Settings
from participants.kit.streams import StreamService
from tests.helpers import delete_topology
from tests.integration.conftest import start_system, stop_system
from tests.integration.rabbit_nodes import Node, need_rabbitmq_nodes, node_folder

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Certs:
    """PEM files made for one test run."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    """A CA that signed nothing here: the wrong one."""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(folder: Path) -> Certs:
    """A CA, a server certificate for localhost/127.0.0.1, a client certificate, and a
    second, unrelated CA."""
    folder.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN=saga test {ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
            cwd=folder,
        )  # fmt: skip
    (folder / "server.ext").write_text(
        "subjectAltName = DNS:localhost, IP:127.0.0.1\nextendedKeyUsage = serverAuth\n"
    )
    (folder / "client.ext").write_text("extendedKeyUsage = clientAuth\n")
    for who, cn in (("server", "localhost"), ("client", "saga-test-client")):
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
            "-keyout", f"{who}.key", "-out", f"{who}.csr", cwd=folder,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{who}.ext", "-out", f"{who}.pem",
            cwd=folder,
        )  # fmt: skip
    for pem in folder.iterdir():
        pem.chmod(0o644)  # the broker runs as 'rabbitmq'; these are throwaway test keys
    return Certs(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        other_ca=folder / "other-ca.pem",
    )


@dataclass(frozen=True)
class TlsBroker:
    """The TLS node and the certificates it trusts."""

    node: Node
    certs: Certs

    @property
    def url(self) -> str:
        """amqps:// by host name, which the server certificate names."""
        return self.node.url("amqps", host="localhost")

    def settings(self, base: Settings, *, ca: Path | None = None) -> Settings:
        """``base`` pointed at the TLS node with the client certificate."""
        return base.with_(
            amqp_url=self.url,
            amqp_ca_file=str(ca or self.certs.ca),
            amqp_cert_file=str(self.certs.client_cert),
            amqp_key_file=str(self.certs.client_key),
        )


@pytest.fixture(scope="module")
async def tls_broker() -> AsyncIterator[TlsBroker]:
    """A RabbitMQ node with a TLS listener only (peer certificates required)."""
    need_rabbitmq_nodes()
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificates")
    base = node_folder()
    certs = make_certs(base / "certs")
    node = Node.new("sagatls", base)
    node.config = (
        "listeners.tcp = none\n"
        f"listeners.ssl.default = {node.port}\n"
        f"ssl_options.cacertfile = {certs.ca}\n"
        f"ssl_options.certfile = {certs.server_cert}\n"
        f"ssl_options.keyfile = {certs.server_key}\n"
        "ssl_options.verify = verify_peer\n"
        "ssl_options.fail_if_no_peer_cert = true\n"
    )
    node.write_files()
    try:
        node.launch()
        await node.wait_running()
        yield TlsBroker(node=node, certs=certs)
    finally:
        await asyncio.to_thread(node.stop)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("shipping", ["aio-pika", "faststream"])
async def test_services_connect_over_tls_and_a_saga_completes(
    tls_broker: TlsBroker, settings: Settings, shipping: str
) -> None:
    tls = tls_broker.settings(settings)
    system = await start_system(tls, shipping_flavour=shipping)
    try:
        await system.inventory.inventory.set_stock("tls-sku", 5)
        saga_id = await system.order(("tls-sku", 2))
        state = await system.settle(saga_id)
        assert state.status is Status.COMPLETED, state
        levels = await system.levels("tls-sku")
        assert (levels.available, levels.reserved + levels.shipped) == (3, 2)
        # The connections are TLS ones to the TLS node (it has no plain listener).
        shipping_connection = (
            system.shipping.connection
            if isinstance(system.shipping, StreamService)
            else system.shipping.bus.connection
        )
        for connection in (system.orchestrator.bus.connection, shipping_connection):
            assert connection.transport is not None
            peer = connection.transport.connection.url
            assert (peer.scheme, peer.port) == ("amqps", tls_broker.node.port)
    finally:
        await stop_system(system)
        await delete_topology(tls)


async def test_a_wrong_ca_is_refused_with_a_certificate_error(
    tls_broker: TlsBroker, settings: Settings
) -> None:
    wrong = tls_broker.settings(settings, ca=tls_broker.certs.other_ca)
    bus = Bus.of(wrong, name=f"{settings.namespace}.wrong-ca")
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(TlsRefused) as refused:
        await bus.connect(timeout=30)
    message = str(refused.value)
    print(f"\nwrong CA refused: {message}")
    assert "TLS" in message
    assert "certificate" in message
    assert "SAGA_AMQP_CA_FILE" in message
    assert "guest:guest" not in message
    assert loop.time() - began < 15, "a certificate failure is not retried like a down node"
