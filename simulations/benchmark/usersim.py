"""What *your* policy will do with *your* traffic: ``rollwise simulate --policy FILE``.

An SRE gives a policy file and a description of the service's traffic (``TrafficSpec``:
request rate, the stable revision's error rate and latency, how much the per-minute error
rate and latency level move beyond chance, the cold start of new pods) and names the
regressions that matter (``Regression``: ``errors=x2``, ``p99=+20%``, ``latency=x1.3``,
``drift=0.25``). The benchmark's harness (``run.simulate_rollouts``) then plays whole
rollouts on that traffic (``conditions.RolloutTraffic``), judged by the controller's own
analysis code with that policy (``judges.policy_judge``: ``controller.analysis.looks``
and ``judge`` at every tick, the policy's certification rule): a good canary (identical to
stable on average) for the time to promotion and the false-rollback rate, and one bad
canary per named regression for the detection probability and the exposure (requests the
bad canary served before it was rolled back). Every case of one request rate shares its
random streams (``Case.stream``), so regressions differ only in their law: a larger
regression sees the same traffic, made worse.

What the simulation cannot draw is left out and said so (``simulable``): a drift check
against a *training* histogram (the simulated model's predictions are the benchmark's,
not your model's), or on a metric the benchmark has no histogram for. Pauses (approvals,
soaks) are not simulated: times to promotion are the analysis time alone.

Pure: no I/O (the CLI reads the files and writes the results). Callers: ``cli`` and
``report.policy_plot``.
"""

from __future__ import annotations

import difflib
import math
import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from scipy import special

from controller.cli.table import Column, markdown
from controller.policy.durations import Duration, LatencyDuration, format_duration
from controller.policy.model import DistributionCheck, RolloutPolicy
from controller.policy.yamldoc import DataPath, Document, format_path, show
from simulations.benchmark import run
from simulations.benchmark.conditions import ColdStart, Conditions, Dispersion, Jitter
from simulations.benchmark.judges import policy_judge
from simulations.benchmark.scenarios import (
    BASELINE_ERROR_RATE,
    FEATURE_BETAS,
    LATENCY_MEDIAN_S,
    PREDICTION_METRIC,
    STABLE,
    Revision,
    Scenario,
    drift_shift,
)
from simulations.benchmark.suites import Case

Z99 = float(special.ndtri(0.99))
# p99 / p50 of a Pareto with shape a is 50^(1/a): (1 - 0.99)^(-1/a) over 2^(1/a).
PARETO_RATIO_BASE = 50.0
GOOD = "good canary"
STREAM = 15_005          # the random streams' key of every case (issue 15, item 5)
DEFAULT_ROLLOUTS = 300
CHUNK = 25               # rollouts per task: small, so the progress bar moves


# --- the traffic ------------------------------------------------------------------------


def _rate(value: Any) -> Any:
    """``"0.5%"`` as 0.005; anything else as it is (the field validates it)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100.0
        except ValueError:
            raise ValueError(f"{show(value)} is not a percentage such as 0.5%") from None
    return value


def _rates(value: Any) -> Any:
    """One request rate or a list of them, as a list."""
    return value if isinstance(value, list) else [value]


def _regression(text: str) -> str:
    parse_regression(text)          # raises ValueError naming the regression
    return text


Rate = Annotated[float, BeforeValidator(_rate), Field(ge=0.0, lt=1.0, allow_inf_nan=False)]
Factor = Annotated[float, Field(gt=0.0, le=100.0, allow_inf_nan=False)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True,
                              frozen=True)


class LatencySpec(_Spec):
    """The stable revision's latency: its median and p99, lognormal or Pareto between."""

    p50: LatencyDuration = Field(timedelta(milliseconds=1000 * LATENCY_MEDIAN_S),
                                 description="Median latency. Default 80ms.")
    p99: LatencyDuration = Field(timedelta(milliseconds=round(1000 * STABLE.quantile(0.99))),
                                 description="99th percentile. Default 256ms.")
    family: Literal["lognormal", "pareto"] = Field(
        "lognormal", description="The shape between and beyond them; pareto: heavy tail.")

    @model_validator(mode="after")
    def _ordered(self) -> LatencySpec:
        if self.p99 <= self.p50:
            raise ValueError(f"p99 {format_duration(self.p99)} must be above p50 "
                             f"{format_duration(self.p50)}")
        return self


class DispersionSpec(_Spec):
    """Per-minute variation of each revision's error rate beyond chance."""

    cv: float = Field(0.3, ge=0.0, le=5.0, allow_inf_nan=False,
                      description="Coefficient of variation of the per-minute error rate "
                                  "(gamma random effect). Default 0.3: pod heterogeneity.")
    shared: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False,
                          description="Correlation of the two revisions' effects (1: common "
                                      "shocks). Default 0.")


class JitterSpec(_Spec):
    """Per-minute variation of each revision's latency level."""

    sd: float = Field(0.1, ge=0.0, le=2.0, allow_inf_nan=False,
                      description="Every latency x exp(N(0, sd)) per minute. Default 0.1.")
    shared: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False,
                          description="Correlation of the two revisions' jitter. Default 0.")


class ColdStartSpec(_Spec):
    """New pods are slow (and may fail more) for a while after each step begins."""

    duration: Duration = Field(timedelta(seconds=60), description="Default 60s; 0s: none.")
    latency_factor: Factor = Field(2.0, description="Latency multiplier while cold. Default 2.")
    error_factor: float = Field(1.0, ge=0.0, le=100.0, allow_inf_nan=False,
                                description="Error-rate multiplier while cold. Default 1.")


class TrafficSpec(_Spec):
    """The service's traffic as ``rollwise simulate --policy`` draws it. The defaults are
    what production usually adds (issue 15): CV 0.3, jitter 0.1, 60 s cold start x2."""

    rps: Annotated[list[Annotated[int, Field(ge=1, le=100_000)]],
                   BeforeValidator(_rates), Field(min_length=1, max_length=10)]
    error_rate: Rate = Field(BASELINE_ERROR_RATE, description="Stable's error rate.")
    latency: LatencySpec = Field(default_factory=LatencySpec)
    dispersion: DispersionSpec = Field(default_factory=DispersionSpec)
    jitter: JitterSpec = Field(default_factory=JitterSpec)
    cold_start: ColdStartSpec = Field(default_factory=ColdStartSpec)
    regressions: list[Annotated[str, AfterValidator(_regression)]] = Field(
        default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _regressions_drawable(self) -> TrafficSpec:
        for text in self.regressions:
            parse_regression(text).canary(self.stable())   # raises ValueError naming it
        return self

    def stable(self) -> Revision:
        """The stable revision: the error rate, and the latency law through p50 and p99."""
        p50, p99 = self.latency.p50.total_seconds(), self.latency.p99.total_seconds()
        if self.latency.family == "pareto":
            return Revision(self.error_rate, p50, STABLE.latency_sigma,
                            pareto_alpha=math.log(PARETO_RATIO_BASE) / math.log(p99 / p50))
        return Revision(self.error_rate, p50, math.log(p99 / p50) / Z99)

    def conditions(self) -> Conditions:
        c = self.cold_start
        return Conditions(errors=Dispersion(self.dispersion.cv, self.dispersion.shared),
                          latency=Jitter(self.jitter.sd, self.jitter.shared),
                          cold_start=ColdStart(c.duration.total_seconds(), c.latency_factor,
                                               c.error_factor))

    def describe(self) -> str:
        lat, d, j, c = self.latency, self.dispersion, self.jitter, self.cold_start

        def shared(x: float) -> str:
            return f", correlation {x:g}" if x else ", independent per revision"

        cold = (f"cold start {format_duration(c.duration)} at latency x{c.latency_factor:g}"
                + (f", errors x{c.error_factor:g}" if c.error_factor != 1 else "")
                if c.duration else "no cold start")
        return (f"{', '.join(map(str, self.rps))} rps; stable error rate "
                f"{_percent(self.error_rate)}; latency {lat.family} p50 "
                f"{format_duration(lat.p50)}, p99 {format_duration(lat.p99)}; per-minute "
                f"error-rate CV {d.cv:g}{shared(d.shared)}; latency jitter log-sd "
                f"{j.sd:g}{shared(j.shared)}; {cold}")


# Where each command-line option lands in a traffic file: the same names, one source.
OPTION_PATHS: dict[str, DataPath] = {
    "--rps": ("rps",), "--error-rate": ("errorRate",), "--p50": ("latency", "p50"),
    "--p99": ("latency", "p99"), "--latency-family": ("latency", "family"),
    "--cv": ("dispersion", "cv"), "--cv-shared": ("dispersion", "shared"),
    "--jitter": ("jitter", "sd"), "--jitter-shared": ("jitter", "shared"),
    "--cold-start": ("coldStart", "duration"), "--cold-factor": ("coldStart", "latencyFactor"),
    "--cold-error-factor": ("coldStart", "errorFactor"), "--regression": ("regressions",),
}


def _field_names(model: type[BaseModel]) -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        names.append(info.alias or name)
        inner = info.annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            names += _field_names(inner)
    return names


_FIELDS = sorted(set(_field_names(TrafficSpec)))


class TrafficError(ValueError):
    """The traffic description is wrong; one line per problem, naming the option or the
    file position and field."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def traffic_spec(document: Document | None, options: dict[str, Any]) -> TrafficSpec:
    """The traffic of a file (``document``, parsed by ``yamldoc.parse``) with the
    command-line ``options`` (by option name, as in ``OPTION_PATHS``; None: not given)
    on top. Raise TrafficError naming the file's line and field, or the option."""
    problems: list[str] = [str(p) for p in document.problems] if document else []
    data: Any = document.data if document is not None else {}
    if document is not None and not isinstance(data, dict):
        raise TrafficError([str(document.problem((), "a traffic file is a mapping (rps, "
                                                     f"errorRate, latency...), got "
                                                     f"{show(data)}"))])
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    given: dict[DataPath, str] = {}
    for option, value in options.items():
        if value is None or value == ():
            continue
        path = OPTION_PATHS[option]
        where = merged
        for part in path[:-1]:
            inner = where.get(str(part))
            where = where.setdefault(str(part), {}) if not isinstance(inner, dict) else inner
        where[str(path[-1])] = list(value) if isinstance(value, tuple) else value
        given[path] = option
    try:
        spec = TrafficSpec.model_validate(merged)
    except ValidationError as err:
        for e in err.errors(include_url=False):
            loc: DataPath = tuple(e["loc"])
            message = e["msg"].removeprefix("Value error, ")
            if e["type"] == "missing":
                message = "required: give it in the traffic file or as an option"
            elif e["type"] == "extra_forbidden":
                close = difflib.get_close_matches(str(loc[-1]), _FIELDS, n=1, cutoff=0.7)
                message = f"unknown field {show(loc[-1])}" + (
                    f" (did you mean {close[0]!r}?)" if close else "")
            elif e["type"] != "value_error" and "input" in e:
                message = f"{message}, got {show(e['input'])}"
            sources = [o for p, o in given.items()
                       if loc[:len(p)] == p or (loc and p[:len(loc)] == loc)]
            if sources:
                problems.append(f"{'/'.join(sources)}: {message}")
            elif document is not None:
                problems.append(str(document.problem(loc, message,
                                                     at_key=e["type"] == "extra_forbidden")))
            else:
                flag = next((o for o, p in OPTION_PATHS.items() if p == loc), format_path(loc))
                problems.append(f"{flag}: {message}")
        raise TrafficError(problems) from None
    if problems:
        raise TrafficError(problems)
    return spec


# --- regressions ------------------------------------------------------------------------

_CHANGE = re.compile(r"^(?:x(?P<factor>[0-9.]+)|(?P<sign>[+-])(?P<percent>[0-9.]+)%)$")
METRICS = {"errors": "the error rate", "latency": "every latency (median and tail)",
           "p99": "the p99 latency, median unchanged (a heavier tail)",
           "drift": "the predictions, drifted to this PSI"}


@dataclass(frozen=True)
class Regression:
    """A bad canary to test: ``metric`` (errors, latency, p99) times ``size``, or drifted
    predictions at PSI ``size``; ``text`` as the user wrote it."""

    text: str
    metric: Literal["errors", "latency", "p99", "drift"]
    size: float

    def canary(self, stable: Revision) -> Revision:
        """The bad canary against ``stable``; ValueError naming the regression if it
        cannot be drawn."""
        if self.metric == "errors":
            if stable.error_rate * self.size > 1:
                raise ValueError(f"regression {self.text!r}: error rate "
                                 f"{_percent(stable.error_rate)} x{self.size:g} is above 100%")
            return replace(stable, error_rate=stable.error_rate * self.size)
        if self.metric == "latency":
            return replace(stable, latency_median_s=stable.latency_median_s * self.size)
        if self.metric == "p99":
            ratio = self.size * stable.quantile(0.99) / stable.latency_median_s
            if ratio <= 1:
                raise ValueError(f"regression {self.text!r}: p99 would fall below the median")
            if stable.pareto_alpha is not None:
                return replace(stable, pareto_alpha=math.log(PARETO_RATIO_BASE) / math.log(ratio))
            return replace(stable, latency_sigma=math.log(ratio) / Z99)
        return replace(stable, logit_shift=drift_shift(self.size))

    def describe(self, stable: Revision) -> str:
        bad = self.canary(stable)
        if self.metric == "errors":
            return f"error rate {_percent(stable.error_rate)} -> {_percent(bad.error_rate)}"
        if self.metric == "drift":
            return f"predictions drifted to PSI {self.size:g}"
        where = "every latency" if self.metric == "latency" else "the tail only"
        return (f"{where}: p50 {_ms(stable.quantile(0.5))} -> {_ms(bad.quantile(0.5))}, "
                f"p99 {_ms(stable.quantile(0.99))} -> {_ms(bad.quantile(0.99))}")


def parse_regression(text: str) -> Regression:
    """``errors=x2``, ``errors=+50%``, ``latency=x1.2``, ``p99=+20%``, ``drift=0.25``."""
    name, sep, change = text.strip().partition("=")
    metric = name.strip()
    if not sep or metric not in METRICS:
        raise ValueError(f"regression {text!r}: expected METRIC=CHANGE with METRIC one of "
                         f"{', '.join(METRICS)} (e.g. errors=x2, p99=+20%, drift=0.25)")
    change = change.strip()
    if metric == "drift":
        try:
            psi = float(change)
        except ValueError:
            psi = math.nan
        if not 0 < psi <= 2:
            raise ValueError(f"regression {text!r}: drift takes the PSI to reach, a number "
                             "in (0, 2], e.g. drift=0.25")
        return Regression(text, "drift", psi)
    m = _CHANGE.match(change)
    size = math.nan
    if m and m["factor"] is not None:
        size = _float(m["factor"])
    elif m:
        size = 1.0 + (1 if m["sign"] == "+" else -1) * _float(m["percent"]) / 100.0
    if not 0 < size <= 100:
        raise ValueError(f"regression {text!r}: the change is xFACTOR or +PERCENT% (e.g. "
                         f"{metric}=x2, {metric}=+20%), a factor in (0, 100]")
    return Regression(text, metric, size)  # type: ignore[arg-type]


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


# --- the policy -------------------------------------------------------------------------


def simulable(policy: RolloutPolicy) -> tuple[RolloutPolicy, list[str]]:
    """``policy`` without the checks the simulation cannot draw, and a note for each one
    left out. Raise ValueError when none is left."""
    kept, notes = [], []
    drawable = {PREDICTION_METRIC, *FEATURE_BETAS}
    for check in policy.spec.analysis.checks:
        if isinstance(check, DistributionCheck) and check.reference.source == "training":
            notes.append(f"check {check.name!r} is left out: it compares with a training "
                         "histogram, and the simulated predictions are not your model's")
        elif isinstance(check, DistributionCheck) and check.metric not in drawable:
            notes.append(f"check {check.name!r} is left out: the simulation has no "
                         f"{check.metric!r} histogram")
        else:
            kept.append(check)
    if not kept:
        raise ValueError(f"policy {policy.name!r}: none of its checks can be simulated "
                         f"({'; '.join(notes)})")
    if len(kept) < len(policy.spec.analysis.checks):
        notes.append(f"alpha is split over the {len(kept)} check(s) left, so the simulated "
                     "policy is slightly bolder than yours")
    analysis = policy.spec.analysis.model_copy(update={"checks": kept})
    pauses = [i for i, s in enumerate(policy.spec.steps) if s.pause is not None]
    if pauses:
        notes.append("pauses (approvals, soaks) are not simulated: times to promotion are "
                     "the analysis time alone")
    return policy.model_copy(update={"spec": policy.spec.model_copy(
        update={"analysis": analysis})}), notes


TICKS = (60, 30, 20, 15, 12, 10, 6, 5, 4, 3, 2, 1)


def default_tick(policy: RolloutPolicy) -> float:
    """The longest tick (a divisor of a minute) that divides the policy's interval: the
    judge then looks at least once an interval. ValueError if the interval is not whole
    seconds."""
    interval = policy.spec.analysis.interval.total_seconds()
    for tick in TICKS:
        if abs(interval / tick - round(interval / tick)) < 1e-9:
            return float(tick)
    raise ValueError(f"the simulation needs an analysis interval of whole seconds, got "
                     f"{format_duration(policy.spec.analysis.interval)}")


# --- the runs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyTask:
    """Rollouts ``start``..``stop`` of one case at one request rate under ``policy``."""

    case: Case
    policy: RolloutPolicy
    rps: int
    start: int
    stop: int
    seed: int
    tick: float


def run_policy_task(task: PolicyTask) -> list[run.Rollout]:
    """The rollouts of a task, judged by Rollwise with the task's policy."""
    return run.simulate_rollouts(lambda: policy_judge(task.policy), task.case, task.policy,
                                 task.rps, range(task.start, task.stop), task.seed, task.tick)


def user_cases(spec: TrafficSpec, policy: RolloutPolicy) -> list[Case]:
    """The good canary and one bad canary per regression, sharing their random streams."""
    stable, conditions = spec.stable(), spec.conditions()
    good = Case(GOOD, Scenario(GOOD, stable, False, "the canary is the stable model again",
                               stable=stable), conditions, policy.name, stream=STREAM)
    bad = []
    for text in dict.fromkeys(spec.regressions):
        regression = parse_regression(text)
        metric = "latency" if regression.metric == "p99" else regression.metric
        bad.append(Case(text, Scenario(text, regression.canary(stable), True,
                                       regression.describe(stable), metric, stable),
                        conditions, policy.name, stream=STREAM))
    return [good, *bad]


def policy_tasks(spec: TrafficSpec, policy: RolloutPolicy, rollouts: int, seed: int,
                 tick: float) -> list[PolicyTask]:
    """Every task: each case at each request rate, in chunks; good canaries first (they
    run longest), so the workers end together."""
    run.check_timing(user_cases(spec, policy), tick, policy.spec.analysis.interval.total_seconds())
    return [PolicyTask(case, policy, rps, start, min(start + CHUNK, rollouts), seed, tick)
            for case in user_cases(spec, policy) for rps in spec.rps
            for start in range(0, rollouts, CHUNK)]


# --- the results ------------------------------------------------------------------------


@dataclass(frozen=True)
class GoodCanary:
    """What the policy does with a canary as good as stable, at one request rate."""

    rps: int
    rollouts: int
    promoted: float                    # share promoted (within every step's deadline)
    minutes: tuple[float, ...]         # time to promotion of each promoted rollout
    false_rollbacks: int
    inconclusive: float                # share that hit onInconclusive.deadline

    @property
    def promote_median(self) -> float:
        return statistics.median(self.minutes) if self.minutes else math.nan

    @property
    def promote_p90(self) -> float:
        return _quantile(self.minutes, 0.9)

    @property
    def false_rollback_rate(self) -> float:
        return self.false_rollbacks / self.rollouts

    @property
    def false_rollback_interval(self) -> tuple[float, float]:
        return run.wilson(self.false_rollbacks, self.rollouts)


@dataclass(frozen=True)
class BadCanary:
    """What the policy does with one named regression at one request rate."""

    regression: str
    description: str
    rps: int
    rollouts: int
    detected: int                      # rolled back on evidence
    before_half: float                 # share rolled back while under 50% of traffic
    promoted: float                    # share promoted: missed
    exposures: tuple[int, ...]         # bad-canary requests before each rollback

    @property
    def detection(self) -> float:
        return self.detected / self.rollouts

    @property
    def detection_interval(self) -> tuple[float, float]:
        return run.wilson(self.detected, self.rollouts)

    @property
    def exposure_median(self) -> float:
        return statistics.median(self.exposures) if self.exposures else math.nan


@dataclass(frozen=True)
class PolicyReport:
    policy: str
    alpha: float
    fastest_minutes: float             # every step passing at its minimum
    deadline_minutes: float            # onInconclusive.deadline, per step
    on_inconclusive: str
    tick: float
    good: tuple[GoodCanary, ...]
    bad: tuple[BadCanary, ...]


def _quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (linear interpolation between order statistics)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    h = (len(ordered) - 1) * q
    lo = math.floor(h)
    return ordered[lo] + (h - lo) * (ordered[min(lo + 1, len(ordered) - 1)] - ordered[lo])


def summarise(results: Iterable[run.Rollout], spec: TrafficSpec,
              policy: RolloutPolicy, tick: float) -> PolicyReport:
    by: dict[tuple[str, int], list[run.Rollout]] = {}
    for r in results:
        by.setdefault((r.scenario, r.rps), []).append(r)
    schedule = run.Schedule.of(policy)
    good, bad = [], []
    stable = spec.stable()
    for case in user_cases(spec, policy):
        for rps in spec.rps:
            rs = sorted(by.get((case.name, rps), []), key=lambda r: r.index)
            n = len(rs)
            if not n:
                continue
            back = [r for r in rs if r.outcome == run.ROLLED_BACK]
            promoted = [r for r in rs if r.outcome == run.PROMOTED]
            if not case.bad:
                good.append(GoodCanary(rps, n, len(promoted) / n,
                                       tuple(r.minutes for r in promoted), len(back),
                                       sum(r.outcome == run.INCONCLUSIVE for r in rs) / n))
            else:
                bad.append(BadCanary(case.name, parse_regression(case.name).describe(stable),
                                     rps, n, len(back), sum(r.weight < 50 for r in back) / n,
                                     len(promoted) / n, tuple(r.exposure for r in back)))
    return PolicyReport(policy.name, policy.spec.analysis.alpha,
                        schedule.fastest_seconds / 60.0, schedule.deadline_seconds / 60.0,
                        policy.spec.on_inconclusive.action, tick, tuple(good), tuple(bad))


# --- text and data ----------------------------------------------------------------------


def _percent(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.3g}%"


def _pct1(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.1f}%"


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f}ms"


def _minutes(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f} min"


def _count(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:,.0f}"


GOOD_COLUMNS = (
    Column("rps", priority=10, align="right"),
    Column("rollouts", priority=3, align="right"),
    Column("promoted in time", priority=9, align="right"),
    Column("time to promote: median", priority=8, align="right"),
    Column("p90", priority=5, align="right"),
    Column("false rollbacks (95% CI)", priority=10, align="right"),
    Column("inconclusive", priority=4, align="right"),
)
BAD_COLUMNS = (
    Column("regression", priority=10, fit="wrap", max_lines=2),
    Column("rps", priority=10, align="right"),
    Column("detected (95% CI)", priority=9, align="right"),
    Column("before 50%", priority=6, align="right"),
    Column("median exposure (requests)", priority=8, align="right"),
    Column("promoted", priority=5, align="right"),
)
Table = Callable[[Sequence[Column], Sequence[Sequence[str]]], str]


def render(report: PolicyReport, spec: TrafficSpec, notes: Sequence[str],
           table: Table = markdown) -> str:
    """The report as text, its tables made by ``table`` (markdown by default; the CLI
    passes the terminal's layout)."""
    lines = [f"policy {report.policy!r} on {spec.describe()}",
             f"judged by Rollwise's own analysis (alpha {report.alpha:g}) looking every "
             f"{report.tick:g} s; fastest possible promotion {_minutes(report.fastest_minutes)}, "
             f"a step without a verdict after {_minutes(report.deadline_minutes)} is "
             f"inconclusive (onInconclusive: {report.on_inconclusive})",
             *(f"note: {n}" for n in notes), "", "Good canary (as good as stable):"]
    good_rows = []
    for g in report.good:
        low, high = g.false_rollback_interval
        good_rows.append((str(g.rps), str(g.rollouts), _pct1(g.promoted),
                          _minutes(g.promote_median), _minutes(g.promote_p90),
                          f"{_pct1(g.false_rollback_rate)} ({_pct1(low)}-{_pct1(high)})",
                          _pct1(g.inconclusive)))
    lines.append(table(GOOD_COLUMNS, good_rows))
    if report.bad:
        bad_rows = []
        for b in report.bad:
            low, high = b.detection_interval
            bad_rows.append((f"{b.regression}: {b.description}", str(b.rps),
                             f"{_pct1(b.detection)} ({_pct1(low)}-{_pct1(high)})",
                             _pct1(b.before_half), _count(b.exposure_median),
                             _pct1(b.promoted)))
        lines += ["", "Regressions:", table(BAD_COLUMNS, bad_rows)]
    return "\n".join(lines)


def as_data(report: PolicyReport, spec: TrafficSpec, notes: Sequence[str], *, seed: int,
            rollouts: int, policy_file: str) -> dict[str, Any]:
    """The report as JSON-ready data (what ``--out`` writes next to the plot)."""
    def good(g: GoodCanary) -> dict[str, Any]:
        low, high = g.false_rollback_interval
        return {"rps": g.rps, "rollouts": g.rollouts, "promoted": g.promoted,
                "promoteMinutesMedian": _finite(g.promote_median),
                "promoteMinutesP90": _finite(g.promote_p90),
                "falseRollbacks": g.false_rollback_rate, "falseRollbacksLow": low,
                "falseRollbacksHigh": high, "inconclusive": g.inconclusive}

    def bad(b: BadCanary) -> dict[str, Any]:
        low, high = b.detection_interval
        return {"regression": b.regression, "description": b.description, "rps": b.rps,
                "rollouts": b.rollouts, "detected": b.detection, "detectedLow": low,
                "detectedHigh": high, "beforeHalf": b.before_half,
                "exposureMedian": _finite(b.exposure_median), "promoted": b.promoted}

    return {"policy": report.policy, "policyFile": policy_file, "seed": seed,
            "rollouts": rollouts, "alpha": report.alpha, "tickSeconds": report.tick,
            "traffic": spec.model_dump(mode="json", by_alias=True), "notes": list(notes),
            "fastestMinutes": report.fastest_minutes, "deadlineMinutes": report.deadline_minutes,
            "goodCanary": [good(g) for g in report.good],
            "regressions": [bad(b) for b in report.bad]}


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else x


__all__ = ["DEFAULT_ROLLOUTS", "GOOD", "BadCanary", "GoodCanary", "PolicyReport", "PolicyTask",
           "Regression", "TrafficError", "TrafficSpec", "as_data", "default_tick",
           "parse_regression", "policy_tasks", "render", "run_policy_task", "simulable",
           "summarise", "traffic_spec"]
