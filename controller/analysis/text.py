"""How numbers read in a verdict's one-line reason (Slack, Kubernetes Events).

Pure. Each helper renders one value of ``CheckVerdict.numbers``; percentages and
milliseconds are the only unit changes, so a reader can find every number of a reason
in ``numbers``.
"""

from __future__ import annotations

import math


def num(x: float) -> str:
    """Three significant digits, no exponent for everyday magnitudes."""
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x != 0 and (abs(x) >= 1e6 or abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def pct(x: float) -> str:
    """A fraction as a percentage: 0.0102 -> 1.02%."""
    if math.isnan(x):
        return "n/a"
    return f"{100 * x:.3g}%"


def count(x: float) -> str:
    """A request count: 12,345."""
    return f"{x:,.0f}"


def seconds(x: float) -> str:
    """A latency in seconds, rendered in ms below 10 s: 0.25 -> 250ms."""
    if math.isnan(x):
        return "n/a"
    if abs(x) < 10:
        return f"{1000 * x:.4g}ms"
    return f"{x:.4g}s"
