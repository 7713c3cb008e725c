"""Statistical canary analysis: per-step counts in, a verdict with its evidence out.

Pure: no I/O, no clock, no state between calls (``.importlinter`` keeps kubernetes,
Prometheus, MLMD and Slack out). The verdict at each look is a function of the
cumulative counts of every step so far, and the tests are anytime-valid, so the
controller may look as often as it likes and act on the first crossing.

* ``types``: the interface (``Measurement`` in, ``Verdict`` out).
* ``sequential``: the shared core - the conditional-binomial mixture SPRT with per-step
  exposure and its confidence sequence for a rate ratio (Lindon, Sanden and Shirikian,
  KDD 2022; Johari, Pekelis and Walsh, "Always Valid Inference"; Howard et al., Ann.
  Statist. 2021), Beta-binomial mixtures for absolute guards, Robbins' normal mixture
  (Waudby-Smith et al.'s asymptotic confidence sequences) for drift.
* ``ratio``, ``latency``, ``drift``: one module per check kind.
* ``combine``: Holm over the checks, missing data, ``judge``.
"""

from controller.analysis.combine import judge
from controller.analysis.types import (
    CheckVerdict,
    HistogramCounts,
    Measurement,
    Outcome,
    Quality,
    RatioCounts,
    StepWindow,
    Verdict,
)

__all__ = ["CheckVerdict", "HistogramCounts", "Measurement", "Outcome", "Quality", "RatioCounts",
           "StepWindow", "Verdict", "judge"]
