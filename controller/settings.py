"""Controller settings: ``ROLLWISE_*`` environment variables, an optional YAML file, and
secrets read from mounted files.

I/O: reads the environment and files at start-up, nothing else. Precedence, highest
first: keyword arguments, environment variables, the YAML file named by
``ROLLWISE_CONFIG_FILE``, defaults. Nested fields use ``__`` in variable names, e.g.
``ROLLWISE_PROMETHEUS__URL``. Secrets are ``SecretStr`` (never printed, never logged)
and may come from a file (``..._FILE``), the way Kubernetes mounts Secrets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

CONFIG_FILE_ENV = "ROLLWISE_CONFIG_FILE"


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be host:port, got {value!r}")
    return value


# A listener address. Every default is on loopback: a pod sets 0.0.0.0 explicitly, per face.
HostPort = Annotated[str, AfterValidator(_host_port)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _secret_from_file(value: SecretStr | None, path: Path | None, name: str) -> SecretStr | None:
    """A secret given as a file wins over nothing; both at once is a configuration error."""
    if path is None:
        return value
    if value is not None:
        raise ValueError(f"set {name} or {name}_file, not both")
    try:
        return SecretStr(path.read_text().strip())
    except OSError as err:
        raise ValueError(f"cannot read {name}_file {str(path)!r}: {err.strerror}") from err


class KubernetesSettings(_Section):
    kubeconfig: Path | None = Field(
        None, description="Kubeconfig file. Unset: in-cluster config when running in a pod, "
                          "else $KUBECONFIG or ~/.kube/config.")
    context: str | None = Field(None, description="Kubeconfig context; default the current one.")
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Namespaces to watch, comma-separated. Empty: all namespaces.")

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class PrometheusSettings(_Section):
    url: str = Field("http://127.0.0.1:9090", description="Base URL of the Prometheus HTTP API.")
    bearer_token: SecretStr | None = None
    bearer_token_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    ca_file: Path | None = Field(None, description="CA bundle to verify Prometheus' TLS cert.")
    verify_tls: bool = True
    timeout_seconds: float = Field(10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"Prometheus url must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _files(self) -> PrometheusSettings:
        self.bearer_token = _secret_from_file(self.bearer_token, self.bearer_token_file,
                                              "bearer_token")
        self.password = _secret_from_file(self.password, self.password_file, "password")
        return self


class MLMDSettings(_Section):
    backend: Literal["sqlite", "mysql", "grpc"] = Field(
        "sqlite", description="sqlite: embedded file (default); mysql; grpc: Kubeflow's "
                              "metadata-grpc-service.")
    sqlite_path: Path = Field(Path("rollwise-mlmd.sqlite"), description="SQLite file.")
    mysql_host: str = "127.0.0.1"
    mysql_port: int = Field(3306, ge=1, le=65535)
    mysql_database: str = "mlmd"
    mysql_user: str = "root"
    mysql_password: SecretStr | None = None
    mysql_password_file: Path | None = None
    grpc_host: str = "metadata-grpc-service.kubeflow"
    grpc_port: int = Field(8080, ge=1, le=65535)

    @model_validator(mode="after")
    def _files(self) -> MLMDSettings:
        self.mysql_password = _secret_from_file(self.mysql_password, self.mysql_password_file,
                                                "mysql_password")
        return self


class SlackSettings(_Section):
    bot_token: SecretStr | None = Field(None, description="Bot token (xoxb-...) with chat:write.")
    bot_token_file: Path | None = None
    signing_secret: SecretStr | None = Field(None, description="Verifies interactivity requests.")
    signing_secret_file: Path | None = None
    app_token: SecretStr | None = Field(None, description="App-level token for Socket Mode.")
    app_token_file: Path | None = None
    api_url: str = Field("https://slack.com/api/", description="Slack Web API base URL.")
    team_id: str | None = Field(None, description="Only accept clicks from this workspace.")
    response_url_prefixes: list[str] = Field(
        default_factory=lambda: ["https://hooks.slack.com/"],
        description="Where ephemeral replies may be sent (Slack's response_url).")
    default_channels: dict[str, str] = Field(
        default_factory=dict,
        description="Per-namespace default channel when a policy names none.")
    listen_address: HostPort = Field(
        "127.0.0.1:8081",
        description="host:port of POST /slack/interactions (plain HTTP; the only face an "
                    "Ingress should reach). Served only when a signing secret is set.")

    @model_validator(mode="after")
    def _files(self) -> SlackSettings:
        self.bot_token = _secret_from_file(self.bot_token, self.bot_token_file, "bot_token")
        self.signing_secret = _secret_from_file(self.signing_secret, self.signing_secret_file,
                                                "signing_secret")
        self.app_token = _secret_from_file(self.app_token, self.app_token_file, "app_token")
        return self


class LeaderElectionSettings(_Section):
    enabled: bool = Field(True, description="On by default: two replicas must never both act.")
    lease_name: str = "rollwise-controller"
    lease_namespace: str | None = Field(None, description="Default: the pod's namespace.")
    lease_duration_seconds: int = Field(15, ge=2)
    renew_deadline_seconds: int = Field(10, ge=1)
    retry_period_seconds: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _ordering(self) -> LeaderElectionSettings:
        # Leading is a deadline (controller/leader.py): a renewal every retry_period, with
        # room for one missed one, must land within renew_deadline, and a follower waits
        # lease_duration > renew_deadline before it may take over.
        if not (1.2 * self.retry_period_seconds < self.renew_deadline_seconds
                < self.lease_duration_seconds):
            raise ValueError("leader election needs 1.2 x retry_period < renew_deadline < "
                             "lease_duration")
        return self


class SealSettings(_Section):
    """The key that proves an annotation was written by Rollwise (controller/sealkey.py)."""

    key_file: Path | None = Field(
        None, description="File of base64 keys, one per line (the first seals, all verify). "
                          "Unset: the Secret below, created with a random key if missing.")
    secret_name: str = Field("rollwise-seal", description="Secret holding the seal key.")
    secret_namespace: str | None = Field(None, description="Default: the pod's namespace.")


class WebhookSettings(_Section):
    listen_address: HostPort = Field("127.0.0.1:9443",
                                     description="host:port of the TLS listener.")
    cert_file: Path | None = Field(None, description="Serving certificate (PEM). Unset: no "
                                                     "webhook listener.")
    key_file: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> WebhookSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("webhook cert_file and key_file go together")
        return self


class Settings(BaseSettings):
    """Everything the daemon and the CLI need to know about their environment."""

    model_config = SettingsConfigDict(
        env_prefix="ROLLWISE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    mlmd: MLMDSettings = Field(default_factory=MLMDSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    leader_election: LeaderElectionSettings = Field(default_factory=LeaderElectionSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    seal: SealSettings = Field(default_factory=SealSettings)
    tick_seconds: float = Field(5.0, gt=0, le=300,
                                description="How often the reconciler passes over every "
                                            "managed InferenceService (analysis runs at each "
                                            "policy's own interval).")
    policy_dir: Path = Field(Path("/etc/rollwise/policies"),
                             description="Directory of policy files (a mounted ConfigMap).")
    listen_address: HostPort = Field(
        "127.0.0.1:8080",
        description="host:port of /healthz, /readyz and /metrics (plain HTTP). In a pod set "
                    "0.0.0.0:8080. Slack and the webhook have their own listeners.")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: JSON when not on a terminal or in a pod, else console.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            if not Path(config_file).is_file():
                raise ValueError(f"{CONFIG_FILE_ENV}={config_file!r}: no such file")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


# ROLLWISE_ variables that are not controller settings (the test harness's own).
_OTHER_VARIABLES = {"ROLLWISE_CONFIG_FILE", "ROLLWISE_CACHE_DIR", "ROLLWISE_KSERVE_CRD",
                    "ROLLWISE_E2E_KUBECONFIG"}


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """ROLLWISE_ variables that name no setting: pydantic-settings would silently ignore a
    typo such as ROLLWISE_PROMETEUS__URL, leaving the default in force."""
    unknown = []
    for variable in sorted(environ):
        if not variable.startswith("ROLLWISE_") or variable in _OTHER_VARIABLES:
            continue
        top, _, nested = variable.removeprefix("ROLLWISE_").lower().partition("__")
        field = Settings.model_fields.get(top)
        if field is None:
            unknown.append(variable)
            continue
        section = field.annotation
        if nested and isinstance(section, type) and issubclass(section, BaseModel) and (
                nested not in section.model_fields):
            unknown.append(variable)
    return unknown


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and config file), with explicit overrides on top."""
    unknown = unknown_variables(os.environ)
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]}: no such field (see the configuration "
                         "reference in README.md)")
    return Settings(**overrides)
