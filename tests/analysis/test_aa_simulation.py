"""A small, bounded A/A simulation: a canary identical to stable is rarely rolled back.

200 whole rollouts per case, seeded; the bound is loose (the benchmark measures the
real rate over thousands of rollouts). No timing assertions.
"""

from __future__ import annotations

import pytest

from simulations.benchmark import run
from simulations.benchmark.scenarios import benchmark_policy


@pytest.mark.parametrize("rps, judge", [(100, "rollwise-lenient"), (10, "rollwise")])
def test_a_a_false_rollbacks_stay_below_a_loose_bound(rps: int, judge: str) -> None:
    results = run.run(run.tasks(seed=4, rollouts=200, scenario_names=["aa"], rps=[rps],
                                judges=[judge], chunk=200), workers=1)
    assert len(results) == 200
    alpha = benchmark_policy().spec.analysis.alpha
    rolled_back = sum(r.outcome == run.ROLLED_BACK for r in results) / len(results)
    assert rolled_back <= 1.5 * alpha


def test_an_obvious_regression_is_caught_in_every_rollout() -> None:
    results = run.run(run.tasks(seed=4, rollouts=30, scenario_names=["errors"], rps=[1000],
                                judges=["rollwise"], chunk=30), workers=1)
    # Before 25%: the first step's two minutes of warm-up can carry a few to the second.
    assert all(r.outcome == run.ROLLED_BACK and r.weight <= 10 for r in results)
    assert sum(r.weight == 5 for r in results) >= 25
