"""Logging through structlog: JSON lines in a pod or a pipe, readable lines on a terminal.

I/O: configures the process-wide logging once, at start-up. Every log call goes
through ``structlog.get_logger()``; context such as namespace, name and revision is
bound with ``bind`` so it appears on every line of a rollout. A redaction processor
keeps secrets out of logs even when a caller passes one by mistake.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

_SECRET_WORDS = ("token", "secret", "password", "authorization", "signature")
REDACTED = "[redacted]"


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the value of any field whose name suggests a secret."""
    for key in list(event):
        if any(word in key.lower() for word in _SECRET_WORDS):
            event[key] = REDACTED
    return event


def _want_json(fmt: Literal["auto", "json", "console"], stream: TextIO) -> bool:
    if fmt != "auto":
        return fmt == "json"
    in_pod = "KUBERNETES_SERVICE_HOST" in os.environ
    return in_pod or not stream.isatty()


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto",
    level: str = "info",
    stream: TextIO | None = None,
) -> None:
    """Set up structlog (and route the standard library's logging through the same output)."""
    out = stream or sys.stderr
    numeric = logging.getLevelName(level.upper())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if _want_json(fmt, out)
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=shared,
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO) if numeric < logging.INFO else numeric)
    # The kubernetes client logs full request bodies at DEBUG; keep them out.
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    # It logs every tick at INFO: noise, not news.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # also "run skipped: busy"
