"""The error-rate check (``kind: ratio``): is the canary's error rate worse than stable's?

Pure. Its tests (``events``: relative with per-interval tempering, gross, ``maxRate``
guard) run on the rollout's blocks of errors among requests (``ledger``). The ``maxRate``
guard and the gross test judge warm-up too: a gross failure is one, cold start or not.
"""

from __future__ import annotations

import math

from controller.analysis import evidence, text
from controller.analysis.events import GuardSpec, event_finding
from controller.analysis.evidence import Finding
from controller.analysis.types import EventMeasurement, Quality
from controller.policy.model import RatioCheck


def evaluate(check: RatioCheck, m: EventMeasurement, *, alpha_share: float,
             alpha_pass: float, gross_ratio: float | None) -> Finding:
    """Evidence of the error-rate check; ``alpha_share`` is the check's share of alpha."""
    for i, block in enumerate(m.look.all_blocks):
        t = block.tally
        where = f"interval {i + 1} (step {block.step + 1})"
        if not all(math.isfinite(v) and v >= 0 for v in t.values()):
            return evidence.missing(check.name, Quality.ERROR,
                                    f"unusable counts: {where} counts must be finite and "
                                    "non-negative")
        for who, errors, total in (("canary", t.canary_events, t.canary_exposure),
                                   ("stable", t.baseline_events, t.baseline_exposure)):
            if errors > total * (1 + 1e-9) + 1e-9:
                return evidence.missing(check.name, Quality.ERROR,
                                        f"unusable counts: {where} {who} has more errors "
                                        f"({errors:g}) than requests ({total:g})")
    guard = None if check.max_rate is None else GuardSpec(
        "max-rate guard", check.max_rate, f"error rate above maxRate {text.pct(check.max_rate)}",
        f"error rate below maxRate {text.pct(check.max_rate)}", during_warmup=True)
    finding = event_finding(check.name, m.look, what="error rate", tolerance=check.tolerance,
                            guard=guard, gross_ratio=gross_ratio, alpha_share=alpha_share,
                            alpha_pass=alpha_pass)
    if guard is not None:
        finding.numbers["max_rate"] = guard.bound
    return finding
