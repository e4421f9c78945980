"""Settings come from an explicit environment mapping, hide their secrets, and explain a
bad variable in one line that names it."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.api.deps import Access
from orchestrator.settings import ConfigError, Settings, env_bool, env_float, env_int, env_list

SECRETS = {
    "AMQP_URL": "amqp://u:hunter2@h/",
    "MONGODB_URL": "mongodb://u:hunter2@m/",
    "SAGA_OPERATOR_TOKEN": "hunter2",
}


def test_the_repr_of_settings_shows_no_password_or_token() -> None:
    """A failing test prints the settings of its system: the secrets must not be in it."""
    settings = Settings.from_env(SECRETS)
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings)
    assert "SecretStr('**********')" in repr(settings)
    assert "hunter2" not in repr(settings.with_(namespace="other"))


def test_code_still_reads_the_secrets_in_plain_text() -> None:
    settings = Settings.from_env(SECRETS)
    assert (settings.amqp_url, settings.mongodb_url, settings.operator_token) == (
        "amqp://u:hunter2@h/",
        "mongodb://u:hunter2@m/",
        "hunter2",
    )
    assert Settings().mongodb_url is None
    assert Settings().operator_token is None


def test_to_env_passes_the_real_secrets_to_a_child_process() -> None:
    settings = Settings.from_env(SECRETS)
    env = settings.to_env()
    assert {k: env[k] for k in SECRETS} == SECRETS
    assert Settings.from_env(env) == settings


def test_tokens_of_services_and_of_the_api_roles_are_masked_in_reprs() -> None:
    settings = Settings.from_env(SECRETS).with_(
        extra={"SAGA_CLIENT_TOKEN": "hunter2", "SAGA_READ_TOKEN": "hunter2", "PAYMENT_X": "1"}
    )
    assert "hunter2" not in repr(settings)
    assert "'PAYMENT_X': '1'" in repr(settings)
    access = Access.of(settings)
    assert "hunter2" not in repr(access)
    assert access.client is not None
    assert access.client.get_secret_value() == "hunter2"


def test_with_changes_secrets_and_other_settings_by_their_usual_names() -> None:
    changed = Settings().with_(amqp_url="amqp://a/", mongodb_url="mongodb://b/", prefetch=5)
    assert (changed.amqp_url, changed.mongodb_url, changed.prefetch) == (
        "amqp://a/",
        "mongodb://b/",
        5,
    )
    assert changed.with_(operator_token=None).operator_token is None
    assert changed.with_(namespace="n").amqp_url == "amqp://a/"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SAGA_PREFETCH": "many"}, "SAGA_PREFETCH='many' is not a whole number"),
        ({"SAGA_DELIVERY_LIMIT": "-3"}, "SAGA_DELIVERY_LIMIT='-3' must not be negative"),
        ({"SAGA_STEP_TIMEOUT": "0"}, "SAGA_STEP_TIMEOUT='0' must be positive"),
        ({"SAGA_FAULTS_ENABLED": "maybe"}, "SAGA_FAULTS_ENABLED='maybe' must be true or false"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' must be one of json, console"),
        ({"SAGA_QUEUE_TYPE": "stream"}, "SAGA_QUEUE_TYPE='stream' must be one of quorum, classic"),
        ({"SAGA_RETRY_DELAYS": "1,x"}, "SAGA_RETRY_DELAYS='1,x' must be comma-separated seconds"),
        ({"SAGA_NAMESPACE": "a b"}, "SAGA_NAMESPACE='a b' may hold only letters"),
    ],
)
def test_a_bad_variable_is_one_clear_line_naming_it_and_its_value(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env(env)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)
    assert "pydantic" not in str(error.value)
    assert error.value.__cause__ is None
    assert error.value.__suppress_context__


def test_every_bad_variable_is_named_at_once() -> None:
    with pytest.raises(ConfigError, match=r"SAGA_PREFETCH='x' .*; SAGA_API_PORT='y' "):
        Settings.from_env({"SAGA_PREFETCH": "x", "SAGA_API_PORT": "y"})


def test_a_bad_secret_is_named_without_its_value() -> None:
    with pytest.raises(ConfigError, match="AMQP_URL") as error:
        Settings.from_env({"AMQP_URL": "amqp://u:hunter2@n1/,http://u:hunter2@n2/"})
    assert "hunter2" not in str(error.value)


def test_settings_made_in_code_are_checked_the_same_way() -> None:
    with pytest.raises(ConfigError, match="SAGA_PREFETCH='x' is not a whole number"):
        Settings(prefetch="x")
    with pytest.raises(ConfigError, match=r"SAGA_PREFETCH=0.*at least 1"):
        Settings().with_(prefetch=0)
    with pytest.raises(ConfigError, match="no_such_setting is not a setting"):
        Settings(no_such_setting=1)


def test_empty_variables_keep_their_defaults() -> None:
    defaults = Settings()
    env = {"AMQP_URL": "", "SAGA_PREFETCH": "", "SAGA_DATABASE": "", "SAGA_MAX_ATTEMPTS": ""}
    assert Settings.from_env(env) == defaults
    assert Settings.from_env({"SAGA_MAX_ATTEMPTS": "0"}).max_attempts is None
    assert Settings.from_env({"SAGA_MAX_ATTEMPTS": "4"}).max_attempts == 4


def test_only_the_given_environment_is_read_never_the_process_one_or_a_dotenv_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("SAGA_NAMESPACE=from-dotenv\nAMQP_URL=amqp://dotenv/\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAGA_NAMESPACE", "from-process")
    assert Settings().namespace == "saga"
    assert Settings.from_env({}).namespace == "saga"
    assert Settings.from_env({}).amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert Settings.from_env().namespace == "from-process"


def test_the_readers_of_services_name_the_variable() -> None:
    env = {"N": "7", "F": "0.5", "B": " Yes ", "L": "a, ,b", "BAD": "x"}
    assert (env_int(env, "N", 1), env_float(env, "F", 1.0), env_bool(env, "B", False)) == (
        7,
        0.5,
        True,
    )
    assert env_list(env, "L", ()) == ("a", "b")
    assert env_int(env, "UNSET", 3) == 3
    with pytest.raises(ConfigError, match="BAD='x' is not a whole number"):
        env_int(env, "BAD", 0)
    with pytest.raises(ConfigError, match="BAD='x' must be true or false"):
        env_bool(env, "BAD", False)
