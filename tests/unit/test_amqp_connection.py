"""Broker node lists, TLS settings and the failover connection's hook into aio-pika."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from aio_pika import RobustConnection
from yarl import URL

from orchestrator.messaging.connection import (
    AllNodesFailed,
    failover_class,
    safe_url,
    tls_error,
)
from orchestrator.settings import ConfigError, Settings


def test_amqp_url_takes_a_comma_separated_list_of_nodes() -> None:
    settings = Settings.from_env(
        {"AMQP_URL": "amqp://u:p@n1:5672/, amqp://u:p@n2:5672/,,amqp://u:p@n3:5672/"}
    )
    assert settings.amqp_urls == (
        "amqp://u:p@n1:5672/",
        "amqp://u:p@n2:5672/",
        "amqp://u:p@n3:5672/",
    )
    assert Settings().amqp_urls == ("amqp://guest:guest@127.0.0.1:5672/",)


def test_a_url_that_is_not_amqp_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigError, match="AMQP_URL") as error:
        _ = Settings(amqp_url="amqp://u:p@n1/,http://u:secret@n2/").amqp_urls
    assert "secret" not in str(error.value)


def test_safe_url_hides_the_password_and_the_query() -> None:
    assert safe_url("amqps://svc:hunter2@n1:5671/vh?name=x") == "amqps://svc:***@n1:5671/vh"


def test_all_nodes_failed_names_every_node_without_passwords() -> None:
    error = AllNodesFailed(
        [
            (URL("amqp://u:secret@n1:5672/"), ConnectionRefusedError(111, "refused")),
            (URL("amqp://u:secret@n2:5672/"), TimeoutError()),
        ]
    )
    text = str(error)
    assert "amqp://u:***@n1:5672/" in text
    assert "amqp://u:***@n2:5672/" in text
    assert "secret" not in text


def test_a_certificate_failure_is_found_behind_a_node_list() -> None:
    bad = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error = AllNodesFailed(
        [(URL("amqps://n1/"), ConnectionRefusedError()), (URL("amqps://n2/"), bad)]
    )
    assert tls_error(error) is bad
    assert tls_error(ConnectionRefusedError()) is None


def test_the_failover_connection_overrides_aio_pikas_connection_attempt() -> None:
    """The failover lives in aio-pika's private attempt method: a new aio-pika that
    renames it must fail here, not silently stop failing over."""
    assert hasattr(RobustConnection, "_RobustConnection__connect_transport")
    cls = failover_class(["amqp://u:p@n1/", "amqp://u:p@n2/"])
    assert "_RobustConnection__connect_transport" in cls.__mro__[1].__dict__
    assert [str(u) for u in cls.URLS] == ["amqp://u:p@n1/", "amqp://u:p@n2/"]


def test_tls_files_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"SAGA_AMQP_CA_FILE=.*no such file"):
        Settings.from_env(
            {"AMQP_URL": "amqps://n1/", "SAGA_AMQP_CA_FILE": str(tmp_path / "missing.pem")}
        )


def test_certificates_with_a_plain_amqp_url_are_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not used")
    with pytest.raises(ConfigError, match="use amqps://"):
        Settings.from_env({"AMQP_URL": "amqp://n1/", "SAGA_AMQP_CA_FILE": str(ca)})


def test_an_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    settings = Settings.from_env({"AMQP_URL": "amqps://n1/", "SAGA_AMQP_CA_FILE": str(ca)})
    with pytest.raises(ConfigError, match="SAGA_AMQP_CA_FILE"):
        settings.amqp_ssl_context()


def test_plain_urls_need_no_tls_context() -> None:
    assert Settings().amqp_ssl_context() is None
    context = Settings(amqp_url="amqps://n1/").amqp_ssl_context()
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname


def test_mongodb_tls_options_reach_the_client(tmp_path: Path) -> None:
    ca, both = tmp_path / "ca.pem", tmp_path / "client.pem"
    ca.write_text("x")
    both.write_text("x")
    settings = Settings.from_env(
        {
            "SAGA_MONGODB_TLS_CA_FILE": str(ca),
            "SAGA_MONGODB_TLS_CERT_KEY_FILE": str(both),
        }
    )
    assert settings.mongodb_tls_options() == {
        "tls": True,
        "tlsCAFile": str(ca),
        "tlsCertificateKeyFile": str(both),
    }
    assert Settings().mongodb_tls_options() == {}
    assert Settings.from_env(settings.to_env()).mongodb_options() == settings.mongodb_options()
