"""The prediction sink's settings: ``ROLLWISE_SINK_*`` environment variables (nested with
``__``, e.g. ``ROLLWISE_SINK_KUBERNETES__KUBECONFIG``), as controller/settings.py reads the
controller's. I/O: the environment at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from controller.providers.presets import SINK_METRIC
from controller.server import MAX_BODY
from controller.settings import HostPort, KubernetesSettings
from controller.sink.histograms import check_bounds

PREFIX = "ROLLWISE_SINK_"


class SinkSettings(BaseSettings):
    """Everything ``rollwise prediction-sink`` needs."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_nested_delimiter="__",
                                      extra="forbid", validate_default=True)

    listen_address: HostPort = Field(
        "127.0.0.1:8080", description="host:port of POST / (the logger's events), /metrics, "
                                      "/healthz and /readyz. In a pod set 0.0.0.0:8080.")
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    metric: str = Field(SINK_METRIC, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
                        description="The histogram's name (the drift preset knows the "
                                    "default).")
    buckets: Annotated[list[float], NoDecode] = Field(
        default_factory=list,
        description="Bucket upper bounds, comma-separated. Empty: those of reference_policy, "
                    "else 0, 0.1, ..., 1 (scores).")
    reference_policy: Path | None = Field(
        None, description="A policy file whose training reference (of a distribution check "
                          "on `metric`) gives the bucket bounds.")
    output: str | None = Field(None, description="The Open Inference Protocol output to "
                                                 "read (default: the first).")
    max_revisions: int = Field(10_000, ge=1, le=1_000_000)
    max_classes: int = Field(50, ge=1, le=10_000,
                             description="Class labels kept per revision; more are counted "
                                         "as __other__.")
    idle_seconds: float = Field(600.0, gt=0,
                                description="A revision without predictions this long is "
                                            "removed (its series go stale: missing data).")
    max_predictions: int = Field(10_000, ge=1, description="Predictions per event, at most.")
    max_body: int = Field(MAX_BODY, ge=1024, description="Largest event body accepted (413).")
    read_timeout: float = Field(10.0, gt=0)
    max_connections: int = Field(64, ge=1)
    pod_cache: int = Field(10_000, ge=1, description="Pods (and ReplicaSets) whose revision "
                                                     "is cached.")
    negative_seconds: float = Field(30.0, ge=0, description="How long 'no revision' for a "
                                                            "pod is cached.")
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("buckets", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [float(part) for part in value.split(",") if part.strip()]
        return value

    @field_validator("buckets")
    @classmethod
    def _layout(cls, value: list[float]) -> list[float]:
        return list(check_bounds(value)) if value else value


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """ROLLWISE_SINK_ variables that name no setting (a typo would leave a default)."""
    unknown = []
    for variable in sorted(environ):
        if not variable.startswith(PREFIX):
            continue
        top, _, nested = variable.removeprefix(PREFIX).lower().partition("__")
        field = SinkSettings.model_fields.get(top)
        section = field.annotation if field is not None else None
        if field is None or (nested and isinstance(section, type)
                             and issubclass(section, BaseModel)
                             and nested not in section.model_fields):
            unknown.append(variable)
    return unknown


def load_sink_settings(**overrides: Any) -> SinkSettings:
    unknown = unknown_variables(os.environ)
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]}: no such field (docs/prediction-sink.md)")
    return SinkSettings(**overrides)
