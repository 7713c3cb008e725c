"""Settings come from env, file and mounted secrets; secrets never reach a log line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog
from pydantic import ValidationError

from controller.logs import configure_logging
from controller.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("ROLLWISE_"):
            monkeypatch.delenv(key)


def test_defaults_are_safe() -> None:
    settings = load_settings()
    assert settings.leader_election.enabled is True
    assert settings.mlmd.backend == "sqlite"
    assert settings.listen_address.startswith("127.0.0.1:")
    assert settings.kubernetes.namespaces == []


def test_environment_with_nested_fields_and_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLWISE_PROMETHEUS__URL", "http://prom:9090/")
    monkeypatch.setenv("ROLLWISE_KUBERNETES__NAMESPACES", "models, fraud")
    monkeypatch.setenv("ROLLWISE_MLMD__BACKEND", "grpc")
    settings = load_settings()
    assert settings.prometheus.url == "http://prom:9090"
    assert settings.kubernetes.namespaces == ["models", "fraud"]
    assert settings.mlmd.backend == "grpc"


def test_config_file_is_read_and_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "rollwise.yaml"
    config.write_text("policy_dir: /policies\nlog_level: debug\nprometheus: {url: http://a:1}\n")
    monkeypatch.setenv("ROLLWISE_CONFIG_FILE", str(config))
    monkeypatch.setenv("ROLLWISE_LOG_LEVEL", "warning")
    settings = load_settings()
    assert settings.policy_dir == Path("/policies")
    assert settings.log_level == "warning"
    assert settings.prometheus.url == "http://a:1"


def test_secrets_from_mounted_files_are_hidden(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    (tmp_path / "token").write_text("xoxb-very-secret\n")
    monkeypatch.setenv("ROLLWISE_SLACK__BOT_TOKEN_FILE", str(tmp_path / "token"))
    settings = load_settings()
    assert settings.slack.bot_token is not None
    assert settings.slack.bot_token.get_secret_value() == "xoxb-very-secret"
    assert "xoxb-very-secret" not in repr(settings)
    assert "xoxb-very-secret" not in settings.model_dump_json()


@pytest.mark.parametrize(("env", "value", "fragment"), [
    ("ROLLWISE_LISTEN_ADDRESS", "8080", "host:port"),
    ("ROLLWISE_PROMETHEUS__URL", "prom:9090", "http://"),
    ("ROLLWISE_MLMD__BACKEND", "postgres", "sqlite"),
    ("ROLLWISE_SLACK__BOT_TOKEN_FILE", "/nonexistent/token", "cannot read bot_token_file"),
    ("ROLLWISE_LEADER_ELECTION__RENEW_DEADLINE_SECONDS", "30", "renew_deadline"),
    ("ROLLWISE_NO_SUCH_SETTING", "1", "unknown setting ROLLWISE_NO_SUCH_SETTING"),
    ("ROLLWISE_PROMETHEUS__URLL", "http://x", "unknown setting ROLLWISE_PROMETHEUS__URLL"),
])
def test_bad_settings_name_the_field(monkeypatch: pytest.MonkeyPatch, env: str, value: str,
                                     fragment: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises((ValidationError, ValueError)) as caught:
        load_settings()
    assert fragment in str(caught.value)


def test_json_logs_carry_bound_context_and_redact_secrets() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    log = structlog.get_logger().bind(namespace="models", name="churn", revision="churn-00002")
    log.info("step advanced", step=2, slack_token="xoxb-leak")
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    assert line["event"] == "step advanced"
    assert (line["namespace"], line["name"], line["revision"]) == (
        "models", "churn", "churn-00002")
    assert line["slack_token"] == "[redacted]"
    assert "xoxb-leak" not in out.getvalue()


def test_console_logs_on_a_terminal_are_not_json() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    configure_logging("auto", "info", stream=out)
    structlog.get_logger().info("hello", x=1)
    assert "hello" in out.getvalue() and not out.getvalue().lstrip().startswith("{")
