"""Durations as SREs write them in policy YAML: ``500ms``, ``30s``, ``5m``, ``2h``, ``1h30m``.

Pure: no I/O. Durations are strings with units on purpose; a bare number is an
error because ``timeout: 30`` is ambiguous (seconds? minutes?).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"ms": timedelta(milliseconds=1), "s": timedelta(seconds=1), "m": timedelta(minutes=1),
          "h": timedelta(hours=1), "d": timedelta(days=1)}
_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
DURATION_PATTERN = r"^([0-9]+(ms|s|m|h|d))+$"
_FULL = re.compile(DURATION_PATTERN)


def parse_duration(text: str) -> timedelta:
    """Parse ``1h30m``-style text; raise ValueError with a message fit for a policy author."""
    value = text.strip()
    if value.startswith("-"):
        raise ValueError(f"duration {text!r} must not be negative")
    if not _FULL.match(value):
        raise ValueError(
            f"invalid duration {text!r}: use whole numbers with units ms, s, m, h or d, "
            "e.g. 30s, 5m, 1h30m"
        )
    return sum((int(n) * _UNITS[unit] for n, unit in _PART.findall(value)), timedelta())


def format_duration(value: timedelta) -> str:
    """The shortest text that parse_duration reads back to the same value."""
    total_ms = int(value / timedelta(milliseconds=1))
    if total_ms == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, total_ms = divmod(total_ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _validate(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(
            f"a duration is text with a unit, e.g. 30s or 5m; got {type(value).__name__} {value!r}"
        )
    return parse_duration(value)


def _validate_positive(value: Any) -> timedelta:
    parsed = _validate(value)
    if parsed <= timedelta():
        raise ValueError(f"duration {value!r} must be greater than zero")
    return parsed


_SCHEMA = {"type": "string", "pattern": DURATION_PATTERN,
           "description": "Whole numbers with units ms, s, m, h, d, e.g. 30s, 5m, 1h30m."}

Duration = Annotated[timedelta, BeforeValidator(_validate), PlainSerializer(format_duration),
                     WithJsonSchema(_SCHEMA)]
"""A non-negative duration written as text with units."""

PositiveDuration = Annotated[timedelta, BeforeValidator(_validate_positive),
                             PlainSerializer(format_duration), WithJsonSchema(_SCHEMA)]
"""A duration that must be greater than zero."""
