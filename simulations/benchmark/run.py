"""Simulate whole rollouts under each judge and summarise them.

A rollout follows the policy's schedule as the state machine does: after each tick of
traffic (60 s by default) the judge decides; FAIL rolls back; PASS advances once the
step has lasted its minimum duration and served its minimum canary requests; a step
that has not advanced by the inconclusive deadline ends the rollout as inconclusive (a
human would be asked). The last step (100%) is the promotion.

Traffic comes from ``conditions.RolloutTraffic`` (streams keyed by the rollout, the tick
and the shock period, never by a decision), so all judges see the same requests for as
long as they make the same decisions (common random numbers). Work is spread over
processes by chunks of rollouts; each rollout's runtime is kept for the report.
Called by ``cli`` and ``report``; no I/O.
"""

from __future__ import annotations

import math
import multiprocessing
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import cache
from typing import TypeVar

from controller.analysis import Outcome
from controller.policy.model import RolloutPolicy
from simulations.benchmark.conditions import RolloutTraffic
from simulations.benchmark.judges import (
    JUDGES,
    Judge,
    StepLog,
    begin,
    make_judge,
    wants_history,
)
from simulations.benchmark.scenarios import feature_metrics
from simulations.benchmark.suites import IID, Case, cases, policies

SCENARIOS = IID
RPS = (10, 100, 1000)
TICK_SECONDS = 60.0
ROLLED_BACK, PROMOTED, INCONCLUSIVE = "rolled-back", "promoted", "inconclusive"
T = TypeVar("T")


@dataclass(frozen=True)
class Schedule:
    """The policy's steps as durations and request counts."""

    weights: tuple[int, ...]
    min_seconds: tuple[float, ...]
    min_requests: tuple[int, ...]
    deadline_seconds: float

    @staticmethod
    def of(policy: RolloutPolicy) -> Schedule:
        spec = policy.spec
        interval = spec.analysis.interval.total_seconds()
        n = len(spec.steps) - 1

        def whole(d: timedelta) -> float:   # the controller looks once per interval
            return math.ceil(d.total_seconds() / interval) * interval

        return Schedule(
            weights=tuple(s.weight for s in spec.steps),
            min_seconds=tuple(whole(spec.min_duration(i)) for i in range(n)),
            min_requests=tuple(spec.min_requests(i) for i in range(n)),
            deadline_seconds=whole(spec.on_inconclusive.deadline),
        )

    @property
    def fastest_seconds(self) -> float:
        """How long a canary that passes every step at once takes to be promoted."""
        return sum(self.min_seconds)


@dataclass(frozen=True)
class Rollout:
    judge: str
    scenario: str
    rps: int
    index: int
    outcome: str
    minutes: float
    exposure: int         # requests the canary served while bad, until the rollout ended
    weight: int           # the canary's weight when it ended
    seconds: float = field(default=0.0, compare=False)   # runtime of the simulation


def simulate_rollout(judge: Judge, case: Case, rps: int, index: int, seed: int,
                     schedule: Schedule, tick_seconds: float = TICK_SECONDS, *,
                     policy: RolloutPolicy | None = None) -> Rollout:
    """One rollout from the first step to promotion, rollback or an inconclusive step.
    ``policy``: the one the judge applies (its feature histograms and stable history are
    drawn); by default the case's (``rollout_policy``)."""
    world = case.world
    policy = policy or case.rollout_policy
    traffic = RolloutTraffic(world, case.conditions, seed, (case.key, rps, index), rps,
                             tick_seconds, feature_metrics(policy))
    history = policy.spec.analysis.history.total_seconds()
    if history > 0 and wants_history(judge):
        begin(judge, traffic.history(history), tick_seconds)
    steps = [StepLog(schedule.weights[0], tick_seconds)]
    exposure = 0
    tick = 0
    step_start = 0.0
    last = len(schedule.weights) - 2

    def done(outcome: str) -> Rollout:
        return Rollout(judge.name, case.name, rps, index, outcome, tick * tick_seconds / 60.0,
                       exposure, steps[-1].weight)

    while True:
        tick += 1
        step = len(steps) - 1
        canary, stable, truth = traffic.tick(tick, steps[-1].weight, step_start)
        steps[-1].record(canary, stable, truth)
        if truth.start >= world.onset_seconds:
            exposure += canary.requests
        outcome = judge.decide(steps, final=step == last)
        if outcome == Outcome.FAIL:
            return done(ROLLED_BACK)
        current = steps[-1]
        if (outcome == Outcome.PASS and current.seconds >= schedule.min_seconds[step]
                and current.canary.requests >= schedule.min_requests[step]):
            if step == last:
                return done(PROMOTED)
            steps.append(StepLog(schedule.weights[step + 1], tick_seconds))
            step_start = tick * tick_seconds
        elif current.seconds >= schedule.deadline_seconds:
            return done(INCONCLUSIVE)


@dataclass(frozen=True)
class Task:
    judge: str
    scenario: str
    rps: int
    start: int
    stop: int
    seed: int
    tick: float = TICK_SECONDS
    interval: float | None = None     # Rollwise's look interval; None: the policy's


@cache
def policy_named(name: str, interval: float | None = None) -> RolloutPolicy:
    """A case's policy, with its analysis interval set to ``interval`` seconds if given
    (how often Rollwise looks)."""
    policy = policies()[name]
    if interval is None:
        return policy
    analysis = policy.spec.analysis.model_copy(update={"interval": timedelta(seconds=interval)})
    return policy.model_copy(update={"spec": policy.spec.model_copy(update={
        "analysis": analysis})})


def simulate_rollouts(new_judge: Callable[[], Judge], case: Case, policy: RolloutPolicy,
                      rps: int, indices: range, seed: int,
                      tick_seconds: float = TICK_SECONDS) -> list[Rollout]:
    """Rollouts ``indices`` of ``case``, each judged by a fresh ``new_judge()`` that applies
    ``policy``, with its runtime."""
    schedule = Schedule.of(policy)
    out = []
    for i in indices:
        began = time.perf_counter()
        rollout = simulate_rollout(new_judge(), case, rps, i, seed, schedule, tick_seconds,
                                   policy=policy)
        out.append(replace(rollout, seconds=time.perf_counter() - began))
    return out


def run_task(task: Task) -> list[Rollout]:
    case = cases()[task.scenario]
    policy = policy_named(case.policy, task.interval)
    return simulate_rollouts(lambda: make_judge(task.judge, case.world, policy), case, policy,
                             task.rps, range(task.start, task.stop), task.seed, task.tick)


def _multiple(value: float, of: float) -> bool:
    n = value / of
    return n >= 1 and abs(n - round(n)) <= 1e-9


def check_timing(checked: Sequence[Case], tick: float, interval: float | None) -> None:
    """Raise ValueError naming the value when the tick cannot carry the cases: it must
    divide a minute (Flagger's and Kayenta's interval), Rollwise's look interval and the
    times at which a case's canary changes."""
    if not tick > 0 or not _multiple(60.0, tick):
        raise ValueError(f"tick {tick:g} s must divide 60 s (1, 2, 5, 10, 15, 20, 30, 60)")
    if interval is not None and not _multiple(interval, tick):
        raise ValueError(f"interval {interval:g} s must be a multiple of the tick {tick:g} s")
    for case in checked:
        onset = case.world.onset_seconds
        if onset and not _multiple(onset, tick):
            raise ValueError(f"case {case.name!r}: its regression starts at {onset:g} s, not "
                             f"on a tick of {tick:g} s")


def tasks(seed: int, rollouts: int, scenario_names: Sequence[str], rps: Sequence[int],
          judges: Sequence[str], chunk: int = 50, tick: float = TICK_SECONDS,
          interval: float | None = None) -> list[Task]:
    check_timing([cases()[n] for n in scenario_names], tick, interval)
    out = [Task(j, s, r, start, min(start + chunk, rollouts), seed, tick, interval)
           for s in scenario_names for r in rps for j in judges
           for start in range(0, rollouts, chunk)]
    # Slow judges and long (A/A, low-traffic) rollouts first, so the pool ends together.
    weight = {"rollwise-strict": 0, "rollwise": 1, "rollwise-slo": 1, "rollwise-lenient": 2,
              "kayenta": 3}
    return sorted(out, key=lambda t: (weight.get(t.judge, 4), cases()[t.scenario].bad, t.rps))


def run(task_list: Sequence[Task], workers: int,
        progress: Callable[[int], None] = lambda n: None) -> list[Rollout]:
    """Run the benchmark's tasks on ``workers`` processes (in this process when 1)."""
    return run_all(run_task, task_list, workers, progress)


def run_all(work: Callable[[T], list[Rollout]], task_list: Sequence[T], workers: int,
            progress: Callable[[int], None] = lambda n: None) -> list[Rollout]:
    """``work`` on every task, on ``workers`` processes (in this process when 1); ``work``
    must be a module-level function, so that a worker can import it."""
    results: list[Rollout] = []
    if workers <= 1:
        for t in task_list:
            chunk = work(t)
            results += chunk
            progress(len(chunk))
        return results
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for chunk in pool.imap_unordered(work, task_list):
            results += chunk
            progress(len(chunk))
    return results


# --- summaries ------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    scenario: str
    rps: int
    judge: str
    rollouts: int
    rolled_back: float
    rolled_back_low: float        # Wilson 95% interval
    rolled_back_high: float
    promoted: float
    inconclusive: float
    before_half: float            # rolled back while the canary had less than 50%
    exposure_mean: float          # bad-canary requests before rollback (rolled-back runs)
    exposure_median: float
    promote_minutes_median: float
    promote_minutes_mean: float
    before_onset: float = 0.0     # rolled back before the canary went bad (mid-step)
    ms_per_rollout: float = math.nan   # simulation runtime


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(results: Iterable[Rollout]) -> list[Summary]:
    groups: dict[tuple[str, int, str], list[Rollout]] = defaultdict(list)
    for r in results:
        groups[(r.scenario, r.rps, r.judge)].append(r)
    out = []
    for (scenario, rps, judge), rs in groups.items():
        n = len(rs)
        back = [r for r in rs if r.outcome == ROLLED_BACK]
        promoted = [r for r in rs if r.outcome == PROMOTED]
        low, high = wilson(len(back), n)
        onset = cases()[scenario].world.onset_seconds / 60.0
        out.append(Summary(
            scenario, rps, judge, n, len(back) / n, low, high, len(promoted) / n,
            sum(r.outcome == INCONCLUSIVE for r in rs) / n,
            sum(r.weight < 50 for r in back) / n,
            statistics.fmean(r.exposure for r in back) if back else math.nan,
            statistics.median(r.exposure for r in back) if back else math.nan,
            statistics.median(r.minutes for r in promoted) if promoted else math.nan,
            statistics.fmean(r.minutes for r in promoted) if promoted else math.nan,
            sum(r.minutes <= onset for r in back) / n if onset else 0.0,
            1000 * statistics.fmean(r.seconds for r in rs),
        ))
    order = {s: i for i, s in enumerate(cases())}
    jorder = {j: i for i, j in enumerate(JUDGES)}
    return sorted(out, key=lambda s: (order.get(s.scenario, 99), s.rps,
                                      jorder.get(s.judge, 99)))
