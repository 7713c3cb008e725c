"""Durations as SREs write them in policy YAML: ``500ms``, ``30s``, ``5m``, ``2h``, ``1h30m``.

Pure: no I/O. Callers: the policy models (``model``) and the messages of the state
machine. Durations are strings with units on purpose; a bare number is an error
because ``timeout: 30`` is ambiguous (seconds? minutes?).

Every duration of a policy has a maximum, so that the controller's arithmetic can never
fail on a value that loaded: ``now + timeout`` is far from ``datetime.max`` for any
``now`` before the year 9999, and parsing itself computes in integer milliseconds and
compares with the bound before any ``timedelta`` is built (``99999999999h`` used to
raise OverflowError out of the loader). The bounds:

* ``MAX_DURATION`` (30 days) for every span of a rollout: step durations, pauses,
  timeouts, deadlines, reminders, the analysis interval. A canary step, an approval or
  a soak longer than a month is a mistake in the unit, not a plan; a month leaves room
  for a release frozen over the holidays.
* ``MAX_LATENCY`` (1 hour) for latency thresholds and guards: no request-latency
  histogram has buckets beyond it (Knative's and KServe's end at minutes).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
DURATION_PATTERN = r"^([0-9]+(ms|s|m|h|d))+$"
_FULL = re.compile(DURATION_PATTERN)
_MAX_DIGITS = 15                 # more digits than this exceed any bound in any unit

MAX_DURATION = timedelta(days=30)
MAX_LATENCY = timedelta(hours=1)


def parse_duration(text: str, maximum: timedelta = MAX_DURATION) -> timedelta:
    """Parse ``1h30m``-style text of at most ``maximum``; raise ValueError with a message fit
    for a policy author."""
    value = text.strip()
    if value.startswith("-"):
        raise ValueError(f"duration {_short(text)!r} must not be negative")
    if not _FULL.match(value):
        raise ValueError(
            f"invalid duration {_short(text)!r}: use whole numbers with units ms, s, m, h or d, "
            "e.g. 30s, 5m, 1h30m"
        )
    limit_ms = maximum // timedelta(milliseconds=1)
    total_ms = 0
    for digits, unit in _PART.findall(value):
        if len(digits.lstrip("0")) > _MAX_DIGITS:
            total_ms = limit_ms + 1
            break
        total_ms += int(digits) * _UNIT_MS[unit]
    if total_ms > limit_ms:
        raise ValueError(f"duration must be at most {format_duration(maximum)}, "
                         f"got {_short(text)!r}")
    return timedelta(milliseconds=total_ms)


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


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


def _validator(maximum: timedelta, *, positive: bool) -> Callable[[Any], timedelta]:
    def validate(value: Any) -> timedelta:
        if isinstance(value, timedelta):
            parsed = value
            if parsed > maximum:
                raise ValueError(f"duration must be at most {format_duration(maximum)}, "
                                 f"got {format_duration(parsed)}")
        elif isinstance(value, bool) or not isinstance(value, str):
            raise ValueError(
                f"a duration is text with a unit, e.g. 30s or 5m; got {type(value).__name__} "
                f"{_short(repr(value))}"
            )
        else:
            parsed = parse_duration(value, maximum)
        if parsed < timedelta():
            raise ValueError(f"duration {format_duration(parsed)} must not be negative")
        if positive and parsed == timedelta():
            raise ValueError(f"duration {_short(repr(value))} must be greater than zero")
        return parsed

    return validate


def _schema(maximum: timedelta) -> dict[str, str]:
    return {"type": "string", "pattern": DURATION_PATTERN,
            "description": "Whole numbers with units ms, s, m, h, d, e.g. 30s, 5m, 1h30m; at "
                           f"most {format_duration(maximum)}."}


Duration = Annotated[timedelta, BeforeValidator(_validator(MAX_DURATION, positive=False)),
                     PlainSerializer(format_duration), WithJsonSchema(_schema(MAX_DURATION))]
"""A non-negative duration of at most 30 days, written as text with units."""

PositiveDuration = Annotated[timedelta, BeforeValidator(_validator(MAX_DURATION, positive=True)),
                             PlainSerializer(format_duration),
                             WithJsonSchema(_schema(MAX_DURATION))]
"""A duration greater than zero and at most 30 days."""

LatencyDuration = Annotated[timedelta, BeforeValidator(_validator(MAX_LATENCY, positive=True)),
                            PlainSerializer(format_duration), WithJsonSchema(_schema(MAX_LATENCY))]
"""A request latency: greater than zero and at most 1 hour."""
