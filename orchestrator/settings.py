"""Configuration from the environment, read once at start-up, with clear errors.

:class:`Settings` holds what the engine and every service share (broker, store, names,
retries, deadlines, the registered sagas). It is a pydantic-settings model: each field
names its environment variable (``validation_alias``) and parses it with the checks of
:mod:`orchestrator.environment`, and a bad value is a :class:`ConfigError` that names the
variable, never a pydantic ValidationError. The broker and store URLs and the operator
token are held as :class:`~pydantic.SecretStr`, so the repr of a settings object (in a
test's failure, a traceback, a log line) shows ``SecretStr('**********')``.

A participant or a pack reads its own variables with the ``env_*`` readers
(``PAYMENT_*``, ``LOW_STOCK_*``) from :meth:`Settings.env`, which is the process
environment with ``extra`` on top, so a test or a runner can set them for the services
it starts.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Self

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from orchestrator.environment import (
    ConfigError,
    EnvironmentSource,
    delays,
    env_bool,
    env_float,
    env_int,
    env_list,
    explain,
    flag,
    identifier,
    names,
    one_of,
    port,
    positive,
    whole_number,
    write_concern,
)
from orchestrator.messaging.connection import safe_url, split_urls, tls_context
from orchestrator.messaging.topology import Topology

if TYPE_CHECKING:
    from orchestrator.packs import SagaPack
    from orchestrator.saga.registry import SagaRegistry

__all__ = [
    "ConfigError",
    "Settings",
    "env_bool",
    "env_float",
    "env_int",
    "env_list",
]

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
READ_PREFERENCES = ("primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest")
"""PyMongo's read preference modes (``SAGA_MONGODB_READ_PREFERENCE``)."""
DEFAULT_PACKS = (
    "orchestrator.packs.order_fulfilment:PACK",
    "orchestrator.packs.order_return:PACK",
)
"""The shipped saga packs, registered when ``SAGA_DEFINITIONS`` is unset."""
SECRET = "_secret"
"""The suffix of a field held as a SecretStr: code gives it, and reads it as a plain str,
by the name without the suffix (``amqp_url=...``, ``settings.amqp_url``)."""
SECRET_EXTRA = re.compile(r"TOKEN|PASSWORD|SECRET|_KEY$|URL")
"""Names of ``extra`` variables whose values a repr masks."""


def _max_attempts(value: object) -> int | None:
    """``SAGA_MAX_ATTEMPTS``: 0 (or unset) means the retry tiers alone decide."""
    return None if value is None else whole_number(value) or None


WholeNumber = Annotated[int, BeforeValidator(whole_number)]
Port = Annotated[int, BeforeValidator(port)]
Seconds = Annotated[float, BeforeValidator(positive)]
Flag = Annotated[bool, BeforeValidator(flag)]
QueueType = Annotated[str, BeforeValidator(one_of("quorum", "classic"))]


def _secret(variable: str, keyword: str, default: str | None = None) -> Any:
    """A secret field, read from ``variable`` or given in code as ``keyword``."""
    value = None if default is None else SecretStr(default)
    return Field(value, validation_alias=AliasChoices(variable, keyword))


class Settings(BaseSettings):
    """Every setting of every service, each read from the variable named in its field.

    Built in code (``Settings(namespace=...)``, :meth:`with_`) or from an environment
    mapping (:meth:`from_env`); never from the process environment or a ``.env`` file
    implicitly.
    """

    model_config = SettingsConfigDict(frozen=True, extra="forbid", validate_by_name=True)

    amqp_url_secret: SecretStr = _secret("AMQP_URL", "amqp_url", DEFAULT_AMQP_URL)
    """``AMQP_URL``: one broker node, or several comma-separated (a cluster): services
    connect to the first that answers and fail over to another live one."""
    amqp_ca_file: str | None = Field(None, validation_alias="SAGA_AMQP_CA_FILE")
    """``SAGA_AMQP_CA_FILE``: the CA that signed the broker's certificate (``amqps://``;
    the system's CAs if unset)."""
    amqp_cert_file: str | None = Field(None, validation_alias="SAGA_AMQP_CERT_FILE")
    """``SAGA_AMQP_CERT_FILE``: this service's client certificate (PEM), if the broker
    asks for one."""
    amqp_key_file: str | None = Field(None, validation_alias="SAGA_AMQP_KEY_FILE")
    """``SAGA_AMQP_KEY_FILE``: the client certificate's private key (PEM), unless it is in
    the certificate file."""
    mongodb_url_secret: SecretStr | None = _secret("MONGODB_URL", "mongodb_url")
    """``MONGODB_URL``: the store (unset: ``saga-dev`` and the tests start one)."""
    mongodb_tls_ca_file: str | None = Field(None, validation_alias="SAGA_MONGODB_TLS_CA_FILE")
    """``SAGA_MONGODB_TLS_CA_FILE``: the CA of the MongoDB servers (``tlsCAFile``; turns
    TLS on)."""
    mongodb_tls_cert_key_file: str | None = Field(
        None, validation_alias="SAGA_MONGODB_TLS_CERT_KEY_FILE"
    )
    """``SAGA_MONGODB_TLS_CERT_KEY_FILE``: client certificate and key in one PEM file
    (``tlsCertificateKeyFile``; turns TLS on)."""
    database: str = Field("saga", validation_alias="SAGA_DATABASE")
    mongodb_write_concern: Annotated[str | int, BeforeValidator(write_concern)] = Field(
        "majority", validation_alias="SAGA_MONGODB_WRITE_CONCERN"
    )
    """``SAGA_MONGODB_WRITE_CONCERN``: ``majority`` (default), a number of members, or a
    tag set name. Applied to every client; it overrides a ``w=`` in ``MONGODB_URL``."""
    mongodb_read_preference: Annotated[str, BeforeValidator(one_of(*READ_PREFERENCES))] = Field(
        "primary", validation_alias="SAGA_MONGODB_READ_PREFERENCE"
    )
    """``SAGA_MONGODB_READ_PREFERENCE``: where reads go; ``primary`` unless a service
    can live with reading its own writes late."""
    mongodb_timeout_ms: WholeNumber = Field(20_000, validation_alias="SAGA_MONGODB_TIMEOUT_MS")
    """``SAGA_MONGODB_TIMEOUT_MS``: every MongoDB operation (server selection and retries
    included) gives up after this long (PyMongo's ``timeoutMS``), so a blackholed primary
    cannot hang a handler; 0 for no limit."""
    mongodb_server_selection_timeout_ms: WholeNumber = Field(
        5_000, validation_alias="SAGA_MONGODB_SERVER_SELECTION_TIMEOUT_MS"
    )
    """``SAGA_MONGODB_SERVER_SELECTION_TIMEOUT_MS``: how long an operation waits for a
    suitable server (a primary, during an election) before it fails."""
    mongodb_connect_timeout_ms: WholeNumber = Field(
        5_000, validation_alias="SAGA_MONGODB_CONNECT_TIMEOUT_MS"
    )
    """``SAGA_MONGODB_CONNECT_TIMEOUT_MS``: opening a connection, and the monitor's
    heartbeat: how soon a server that stopped answering is noticed."""
    namespace: Annotated[str, BeforeValidator(identifier)] = Field(
        "saga", validation_alias="SAGA_NAMESPACE"
    )
    queue_type: QueueType = Field("quorum", validation_alias="SAGA_QUEUE_TYPE")
    retry_queue_type: QueueType = Field("classic", validation_alias="SAGA_RETRY_QUEUE_TYPE")
    retry_delays: Annotated[tuple[float, ...], BeforeValidator(delays)] = Field(
        (1.0, 5.0, 30.0), validation_alias="SAGA_RETRY_DELAYS"
    )
    delivery_limit: WholeNumber = Field(20, validation_alias="SAGA_DELIVERY_LIMIT")
    declare_topology: Flag = Field(True, validation_alias="SAGA_DECLARE_TOPOLOGY")
    """``SAGA_DECLARE_TOPOLOGY``: services declare the topology (development); false in a
    deployment where ``saga topology apply`` declared it and services only check it."""
    topology_policies: Flag = Field(False, validation_alias="SAGA_TOPOLOGY_POLICIES")
    """``SAGA_TOPOLOGY_POLICIES``: retry delays and the delivery limit set by policies."""
    prefetch: WholeNumber = Field(64, validation_alias="SAGA_PREFETCH")
    max_body_bytes: WholeNumber = Field(256 * 1024, validation_alias="SAGA_MAX_BODY_BYTES")
    max_deferrals: WholeNumber = Field(1800, validation_alias="SAGA_MAX_DEFERRALS")
    """``SAGA_MAX_DEFERRALS``: rounds a message no instance serves goes through the first
    retry tier before it is dead-lettered as ``not_served`` (a rolling deploy ends well
    before: 1,800 rounds of the default 1 s tier is half an hour)."""
    step_timeout: Seconds = Field(30.0, validation_alias="SAGA_STEP_TIMEOUT")
    step_max_sends: WholeNumber = Field(3, validation_alias="SAGA_STEP_MAX_SENDS")
    relay_grace: Seconds = Field(5.0, validation_alias="SAGA_RELAY_GRACE")
    relay_interval: Seconds = Field(1.0, validation_alias="SAGA_RELAY_INTERVAL")
    deadline_poll: Seconds = Field(0.5, validation_alias="SAGA_DEADLINE_POLL")
    max_attempts: Annotated[int | None, BeforeValidator(_max_attempts)] = Field(
        None, validation_alias="SAGA_MAX_ATTEMPTS"
    )
    instance: str = Field("", validation_alias="SAGA_INSTANCE")
    log_format: Annotated[str, BeforeValidator(one_of("json", "console"))] = Field(
        "json", validation_alias="LOG_FORMAT"
    )
    publish_progress: Flag = Field(True, validation_alias="SAGA_PUBLISH_PROGRESS")
    operator_token_secret: SecretStr | None = _secret("SAGA_OPERATOR_TOKEN", "operator_token")
    """``SAGA_OPERATOR_TOKEN``: the API's and the UI's operator role (unset: no operator)."""
    faults_enabled: Flag = Field(False, validation_alias="SAGA_FAULTS_ENABLED")
    api_host: str = Field("127.0.0.1", validation_alias="SAGA_API_HOST")
    api_port: WholeNumber = Field(8000, validation_alias="SAGA_API_PORT")
    metrics_port: Port = Field(0, validation_alias="SAGA_METRICS_PORT")
    """``SAGA_METRICS_PORT``: where a service serves /metrics, /health and /ready (0: off;
    the deploy files use 9100)."""
    metrics_host: str = Field("127.0.0.1", validation_alias="SAGA_METRICS_HOST")
    """``SAGA_METRICS_HOST``: the address it listens on (0.0.0.0 in a container)."""
    saga_definitions: Annotated[tuple[str, ...], BeforeValidator(names)] = Field(
        DEFAULT_PACKS, validation_alias="SAGA_DEFINITIONS"
    )
    """``SAGA_DEFINITIONS``: the saga packs (or definitions) this deployment runs."""
    extra: Mapping[str, str] = Field(default_factory=dict)
    """Environment variables of services and packs (``PAYMENT_*``, ...) set on top of the
    process environment: read with :meth:`env`, passed on by :meth:`to_env`."""

    def __init__(self, **values: Any) -> None:
        """Settings from keyword arguments (field names; ``amqp_url``, ``mongodb_url`` and
        ``operator_token`` for the secrets); a ConfigError names what is wrong."""
        try:
            super().__init__(**values)
        except ValidationError as e:
            # from None: the ValidationError's text would repeat the values, secrets too.
            raise ConfigError(explain(e, type(self))) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the arguments: no implicit process environment, ``.env`` or secrets
        folder (:meth:`from_env` reads an environment explicitly)."""
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings of an environment (the process's if None): ``AMQP_URL``,
        ``MONGODB_URL``, ``LOG_FORMAT`` and ``SAGA_*``; unset or empty variables keep
        their defaults."""
        return cls(**EnvironmentSource(cls, os.environ if env is None else env)())

    @property
    def amqp_url(self) -> str:
        """``AMQP_URL`` in plain text, for the code that connects (never log it: use
        ``safe_url``)."""
        return self.amqp_url_secret.get_secret_value()

    @property
    def mongodb_url(self) -> str | None:
        """``MONGODB_URL`` in plain text, or None if unset."""
        return self.mongodb_url_secret.get_secret_value() if self.mongodb_url_secret else None

    @property
    def operator_token(self) -> str | None:
        """``SAGA_OPERATOR_TOKEN`` in plain text, or None if unset."""
        secret = self.operator_token_secret
        return secret.get_secret_value() if secret else None

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Checks of values that parse but would be unsafe, or of settings together."""
        for name, value in (
            ("SAGA_MONGODB_SERVER_SELECTION_TIMEOUT_MS", self.mongodb_server_selection_timeout_ms),
            ("SAGA_MONGODB_CONNECT_TIMEOUT_MS", self.mongodb_connect_timeout_ms),
        ):
            if value < 1:
                raise ConfigError(f"{name}={value}: must be at least 1 (milliseconds)")
        self._check_tls()
        if self.prefetch < 1:
            raise ConfigError(
                f"SAGA_PREFETCH={self.prefetch}: the prefetch must be at least 1 "
                "(0 would mean no limit on unacknowledged messages per consumer)"
            )
        return self

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        """The fields, with the values of secret-looking ``extra`` variables masked (the
        secret fields mask themselves)."""
        for name, value in super().__repr_args__():
            if name != "extra":
                yield name, value
            else:
                yield (
                    name,
                    {k: "**********" if SECRET_EXTRA.search(k) else v for k, v in value.items()},
                )

    def to_env(self) -> dict[str, str]:
        """The environment variables that make ``from_env`` return these settings
        (for starting service processes)."""
        env = {
            "AMQP_URL": self.amqp_url,
            "SAGA_DATABASE": self.database,
            "SAGA_MONGODB_WRITE_CONCERN": str(self.mongodb_write_concern),
            "SAGA_MONGODB_READ_PREFERENCE": self.mongodb_read_preference,
            "SAGA_MONGODB_TIMEOUT_MS": str(self.mongodb_timeout_ms),
            "SAGA_MONGODB_SERVER_SELECTION_TIMEOUT_MS": str(
                self.mongodb_server_selection_timeout_ms
            ),
            "SAGA_MONGODB_CONNECT_TIMEOUT_MS": str(self.mongodb_connect_timeout_ms),
            "SAGA_NAMESPACE": self.namespace,
            "SAGA_QUEUE_TYPE": self.queue_type,
            "SAGA_RETRY_QUEUE_TYPE": self.retry_queue_type,
            "SAGA_RETRY_DELAYS": ",".join(f"{d:g}" for d in self.retry_delays),
            "SAGA_DELIVERY_LIMIT": str(self.delivery_limit),
            "SAGA_DECLARE_TOPOLOGY": "true" if self.declare_topology else "false",
            "SAGA_TOPOLOGY_POLICIES": "true" if self.topology_policies else "false",
            "SAGA_PREFETCH": str(self.prefetch),
            "SAGA_MAX_BODY_BYTES": str(self.max_body_bytes),
            "SAGA_MAX_DEFERRALS": str(self.max_deferrals),
            "SAGA_STEP_TIMEOUT": f"{self.step_timeout:g}",
            "SAGA_STEP_MAX_SENDS": str(self.step_max_sends),
            "SAGA_RELAY_GRACE": f"{self.relay_grace:g}",
            "SAGA_RELAY_INTERVAL": f"{self.relay_interval:g}",
            "SAGA_DEADLINE_POLL": f"{self.deadline_poll:g}",
            "SAGA_MAX_ATTEMPTS": str(self.max_attempts or ""),
            "SAGA_INSTANCE": self.instance,
            "LOG_FORMAT": self.log_format,
            "SAGA_PUBLISH_PROGRESS": "true" if self.publish_progress else "false",
            "SAGA_FAULTS_ENABLED": "true" if self.faults_enabled else "false",
            "SAGA_API_HOST": self.api_host,
            "SAGA_API_PORT": str(self.api_port),
            "SAGA_METRICS_PORT": str(self.metrics_port),
            "SAGA_METRICS_HOST": self.metrics_host,
            "SAGA_DEFINITIONS": ",".join(self.saga_definitions),
        }
        optional = {
            "MONGODB_URL": self.mongodb_url,
            "SAGA_AMQP_CA_FILE": self.amqp_ca_file,
            "SAGA_AMQP_CERT_FILE": self.amqp_cert_file,
            "SAGA_AMQP_KEY_FILE": self.amqp_key_file,
            "SAGA_MONGODB_TLS_CA_FILE": self.mongodb_tls_ca_file,
            "SAGA_MONGODB_TLS_CERT_KEY_FILE": self.mongodb_tls_cert_key_file,
            "SAGA_OPERATOR_TOKEN": self.operator_token,
        }
        env.update({k: v for k, v in optional.items() if v})
        env.update(self.extra)
        return env

    def env(self) -> Mapping[str, str]:
        """The environment a service reads its own variables from: the process
        environment with :attr:`extra` on top."""
        return {**os.environ, **self.extra}

    def mongodb_options(self) -> dict[str, Any]:
        """The keyword arguments of ``connect_mongo`` these settings choose (write concern,
        read preference, timeouts, TLS)."""
        return {
            "write_concern": self.mongodb_write_concern,
            "read_preference": self.mongodb_read_preference,
            "timeout_ms": self.mongodb_timeout_ms or None,
            "server_selection_timeout_ms": self.mongodb_server_selection_timeout_ms,
            "connect_timeout_ms": self.mongodb_connect_timeout_ms,
            "options": self.mongodb_tls_options(),
        }

    @property
    def amqp_urls(self) -> tuple[str, ...]:
        """The broker nodes of ``AMQP_URL``, in the order they are tried."""
        try:
            return split_urls(self.amqp_url)
        except ValueError as e:
            raise ConfigError(f"AMQP_URL: {e}") from None

    def amqp_ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``amqps://`` nodes, from the ``SAGA_AMQP_*_FILE`` settings;
        None when every node is plain ``amqp://``."""
        if not any(u.startswith("amqps://") for u in self.amqp_urls):
            return None
        try:
            return tls_context(
                ca_file=self.amqp_ca_file,
                cert_file=self.amqp_cert_file,
                key_file=self.amqp_key_file,
            )
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(
                f"SAGA_AMQP_CA_FILE/SAGA_AMQP_CERT_FILE/SAGA_AMQP_KEY_FILE cannot be loaded: {e}"
            ) from e

    def mongodb_tls_options(self) -> dict[str, Any]:
        """Keyword arguments for ``AsyncMongoClient`` beyond the URL (TLS)."""
        options: dict[str, Any] = {}
        if self.mongodb_tls_ca_file:
            options |= {"tls": True, "tlsCAFile": self.mongodb_tls_ca_file}
        if self.mongodb_tls_cert_key_file:
            options |= {"tls": True, "tlsCertificateKeyFile": self.mongodb_tls_cert_key_file}
        return options

    def _check_tls(self) -> None:
        """Certificate files that are set must exist, and must not be silently unused."""
        files = {
            "SAGA_AMQP_CA_FILE": self.amqp_ca_file,
            "SAGA_AMQP_CERT_FILE": self.amqp_cert_file,
            "SAGA_AMQP_KEY_FILE": self.amqp_key_file,
            "SAGA_MONGODB_TLS_CA_FILE": self.mongodb_tls_ca_file,
            "SAGA_MONGODB_TLS_CERT_KEY_FILE": self.mongodb_tls_cert_key_file,
        }
        for name, path in files.items():
            if path and not os.path.isfile(path):
                raise ConfigError(f"{name}={path!r}: no such file")
        if self.amqp_key_file and not self.amqp_cert_file:
            raise ConfigError("SAGA_AMQP_KEY_FILE is set without SAGA_AMQP_CERT_FILE")
        amqp_tls = [n for n in files if n.startswith("SAGA_AMQP") and files[n]]
        plain = [u for u in self.amqp_urls if not u.startswith("amqps://")]
        if amqp_tls and plain:
            raise ConfigError(
                f"{amqp_tls[0]} is set but AMQP_URL has plain amqp:// nodes "
                f"({', '.join(safe_url(u) for u in plain)}); use amqps:// for TLS"
            )

    def require_mongodb_url(self) -> str:
        """The MongoDB URL, or a clear error saying how to set it."""
        if not self.mongodb_url:
            raise ConfigError(
                "MONGODB_URL is not set (e.g. mongodb://127.0.0.1:27017/); "
                "the development runner 'saga-dev' starts an embedded server"
            )
        return self.mongodb_url

    def packs(self) -> tuple[SagaPack, ...]:
        """The saga packs of ``SAGA_DEFINITIONS`` (imported once per process)."""
        from orchestrator.packs import PackError, load_packs  # noqa: PLC0415 - packs import us

        try:
            return load_packs(self.saga_definitions)
        except (PackError, ValueError) as e:
            raise ConfigError(f"SAGA_DEFINITIONS: {e}") from e

    def registry(self) -> SagaRegistry:
        """Every registered saga definition, with this deployment's step defaults."""
        from orchestrator.packs import registry_of  # noqa: PLC0415

        try:
            return registry_of(
                self.packs(), timeout=self.step_timeout, max_sends=self.step_max_sends
            )
        except ValueError as e:
            raise ConfigError(f"SAGA_DEFINITIONS: {e}") from e

    def topology(self) -> Topology:
        """The RabbitMQ names and queue settings of this deployment, derived from its
        registered sagas."""
        from orchestrator.packs import routes_of  # noqa: PLC0415

        try:
            routes = routes_of(self.packs())
        except ValueError as e:  # sagas that cannot be registered together
            raise ConfigError(f"SAGA_DEFINITIONS: {e}") from e
        return Topology(
            namespace=self.namespace,
            retry_delays=self.retry_delays,
            max_attempts=self.max_attempts,
            queue_type=self.queue_type,  # type: ignore[arg-type]
            retry_queue_type=self.retry_queue_type,  # type: ignore[arg-type]
            delivery_limit=self.delivery_limit,
            routes=routes,
            declares=self.declare_topology,
            tunables_in_policies=self.topology_policies,
        )

    def with_(self, **changes: Any) -> Settings:
        """A copy with some settings changed (by the names the constructor takes),
        checked again."""
        current = {
            name.removesuffix(SECRET): getattr(self, name) for name in type(self).model_fields
        }
        return type(self)(**{**current, **changes})
