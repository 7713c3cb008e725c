"""Evidence for the judges from per-step counts, through the same ``looks`` the controller
and the benchmark use: each step becomes one closed interval of its own (no warm-up), so a
table test can state a situation as "these counts per step"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.analysis import looks
from controller.analysis.types import Measurement, Quality, StepWindow
from controller.policy.model import Analysis

T0 = datetime(2026, 1, 1, tzinfo=UTC)
INTERVAL = timedelta(minutes=1)


def quiet_history(window: StepWindow[Any], blocks: int = 30) -> list[Any]:
    """Stable's history as traffic without overdispersion: ``blocks`` intervals each with
    exactly stable's counts of ``window``, so the dispersion estimate is near zero."""
    return [window.baseline] * blocks


def evidence(analysis: Analysis, steps: Mapping[str, Sequence[StepWindow[Any]] | Any],
             *, warmup: timedelta = timedelta(0), history: bool = True) -> dict[str, Any]:
    """Per check name: the measurement the judge sees after one look at the end of each
    step, given each step's counts; with ``history``, stable's recent intervals before the
    rollout are quiet (no overdispersion: see ``quiet_history``). A value that is already a
    ``Measurement`` (missing data, say) is passed through."""
    out: dict[str, Any] = {}
    for check in analysis.checks:
        given = steps.get(check.name)
        if given is None or (isinstance(given, Measurement) and not given.windows):
            if given is not None:
                out[check.name] = given
            continue
        windows = given.windows if isinstance(given, Measurement) else given
        ledger = looks.with_reference(check, looks.empty(check),
                                      quiet_history(windows[0]) if history and windows else [])
        seen = None
        for i, window in enumerate(windows):
            start = T0 + i * INTERVAL
            timing = looks.Timing(i, start, start + INTERVAL, INTERVAL, warmup)
            try:
                seen = looks.look(check, ledger, window, timing)
            except (ValueError, AttributeError, TypeError) as err:
                # As the analyzer does: counts that cannot be judged are unusable data.
                seen = None
                out[check.name] = Measurement(Quality.ERROR, (), f"{type(err).__name__}: {err}")
                break
            ledger = seen.keep
        if seen is not None:
            out[check.name] = seen.measurement
    return out
