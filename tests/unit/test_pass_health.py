"""The leader's readiness follows its passes: /readyz fails when passes keep failing or one
hangs (issue 14, defect 2: it used to answer 200 while every pass failed)."""

from __future__ import annotations

from controller.daemon import PassHealth


def test_ready_until_three_passes_in_a_row_fail_and_again_after_one_succeeds() -> None:
    health = PassHealth(stuck_after=60)
    for i in range(3):
        assert health.problem(0) is None
        health.started(i)
        health.finished("ConnectionRefusedError: [Errno 111]")
    problem = health.problem(3)
    assert problem is not None and "last 3 reconcile passes failed" in problem
    assert "ConnectionRefusedError" in problem
    health.started(4)
    health.finished(None)
    assert health.problem(5) is None


def test_a_pass_that_hangs_longer_than_allowed_makes_the_leader_unready() -> None:
    health = PassHealth(stuck_after=60)
    health.started(100)
    assert health.problem(159) is None
    problem = health.problem(161)
    assert problem is not None and "running for 61s" in problem
    health.finished(None)
    assert health.problem(162) is None


def test_one_failure_among_successes_is_not_enough() -> None:
    health = PassHealth(stuck_after=60)
    for error in ("boom", None, "boom", "boom", None):
        health.started(0)
        health.finished(error)
    assert health.problem(1) is None
