"""Per-revision prediction histograms, bounded, exported with prometheus_client on the
sink's own registry.

Series (``metric`` defaults to ``rollwise_prediction``, ``presets.SINK_METRIC``)::

    <metric>_bucket{namespace, inferenceservice, component, revision, le}   histogram
    <metric>_class_total{namespace, inferenceservice, component, revision, class}
    rollwise_sink_events_total{type}                     events received (request/response)
    rollwise_sink_unparseable_events_total{cause}        events refused, by ``events.Cause``
    rollwise_sink_dropped_predictions_total{reason}      predictions not counted: the pod's
                                                         revision unknown (or the API server
                                                         unreachable), a class beyond the
                                                         per-revision cap (counted as
                                                         ``__other__`` too)
    rollwise_sink_unanswered_requests_total              requests whose response never came
    rollwise_sink_revisions                              revisions held now
    rollwise_sink_revisions_removed_total{reason}        capacity (LRU) or idle

Bounded whatever the traffic: at most ``max_revisions`` revisions (the least recently
updated goes first) and ``max_classes`` class labels per revision, so memory is
O(max_revisions x (buckets + max_classes)). A revision that got nothing for
``idle_seconds`` is removed: its series vanish, Prometheus marks them stale, and the
drift check sees *missing data* rather than a histogram that silently stopped growing
(if it comes back its counters restart at zero, which the analyzer reads as a reset).
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.policy.model import MAX_BUCKETS, DistributionCheck, RolloutPolicy
from controller.providers.presets import SINK_METRIC
from controller.sink.events import Cause, Prediction

DEFAULT_BOUNDS = tuple(round(i / 10, 1) for i in range(11))   # scores in [0, 1]
OTHER_CLASS = "__other__"
LABELS = ("namespace", "inferenceservice", "component", "revision")


@dataclass(frozen=True, order=True)
class RevisionKey:
    namespace: str
    inferenceservice: str
    component: str
    revision: str


def check_bounds(bounds: Sequence[float]) -> tuple[float, ...]:
    """Finite, strictly increasing upper bounds (+Inf is implied), 1 to MAX_BUCKETS."""
    out = tuple(float(b) for b in bounds)
    if not 1 <= len(out) <= MAX_BUCKETS:
        raise ValueError(f"a bucket layout has 1 to {MAX_BUCKETS} bounds, got {len(out)}")
    if not all(math.isfinite(b) for b in out):
        raise ValueError(f"bucket bounds must be finite (+Inf is implied), got {list(out)}")
    for low, high in itertools.pairwise(out):
        if not high > low:
            raise ValueError(f"bucket bounds must be strictly increasing ({high} after {low})")
    return out


def bounds_from_policies(policies: Iterable[RolloutPolicy], metric: str) -> tuple[float, ...]:
    """The bounds of the first training reference of a distribution check on ``metric``:
    the sink's buckets must be the reference's for PSI against training to be meaningful."""
    for policy in policies:
        for check in policy.spec.analysis.checks:
            if (isinstance(check, DistributionCheck) and check.metric == metric
                    and check.reference.histogram is not None):
                return check_bounds(check.reference.histogram.bounds)
    raise ValueError(f"no policy has a distribution check on {metric} with a training "
                     f"reference histogram to take bucket bounds from")


@dataclass
class _Cell:
    buckets: list[int]                     # per bucket, not cumulative; +Inf last
    total: float = 0.0
    count: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    updated: float = 0.0


class PredictionHistograms(Collector):
    """The sink's state; thread-safe (the receiver is threaded)."""

    def __init__(self, bounds: Sequence[float] = DEFAULT_BOUNDS, *,
                 metric: str = SINK_METRIC, max_revisions: int = 10_000,
                 max_classes: int = 50, idle_seconds: float = 600.0,
                 clock: Callable[[], float] | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        if max_revisions < 1 or max_classes < 1 or idle_seconds <= 0:
            raise ValueError("max_revisions and max_classes must be >= 1, idle_seconds > 0")
        self.bounds = check_bounds(bounds)
        self.metric = metric
        self.max_revisions, self.max_classes = max_revisions, max_classes
        self.idle_seconds = idle_seconds
        self._clock = clock or time.monotonic
        self._cells: OrderedDict[RevisionKey, _Cell] = OrderedDict()
        self._lock = threading.Lock()
        self.registry = registry or CollectorRegistry()
        self.registry.register(self)
        self.events = Counter("rollwise_sink_events", "Logger events received, by type",
                              ["type"], registry=self.registry)
        self.unparseable = Counter("rollwise_sink_unparseable_events",
                                   "Requests to the sink that were not readable logger "
                                   "events, by cause", ["cause"], registry=self.registry)
        self.dropped = Counter("rollwise_sink_dropped_predictions",
                               "Predictions received but not counted, by reason", ["reason"],
                               registry=self.registry)
        self.unanswered = Counter("rollwise_sink_unanswered_requests",
                                  "Logged requests whose response event never came (an "
                                  "error answer, or a lost event)", registry=self.registry)
        self.removed = Counter("rollwise_sink_revisions_removed",
                               "Revisions whose histograms were removed, by reason",
                               ["reason"], registry=self.registry)
        self.held = Gauge("rollwise_sink_revisions", "Revisions whose histograms are held",
                          registry=self.registry)
        self.held.set_function(lambda: len(self._cells))
        for cause in Cause:
            self.unparseable.labels(cause.value)
        for kind in ("request", "response"):
            self.events.labels(kind)
        for reason in ("unknown-revision", "lookup-failed", "class-overflow"):
            self.dropped.labels(reason)
        for reason in ("capacity", "idle"):
            self.removed.labels(reason)

    def __len__(self) -> int:
        return len(self._cells)

    def observe(self, key: RevisionKey, predictions: Iterable[Prediction]) -> None:
        now = self._clock()
        overflow = 0
        with self._lock:
            cell = self._cells.get(key)
            if cell is None:
                self._expire(now)
                while len(self._cells) >= self.max_revisions:
                    self._cells.popitem(last=False)
                    self.removed.labels("capacity").inc()
                cell = self._cells[key] = _Cell([0] * (len(self.bounds) + 1))
            else:
                self._cells.move_to_end(key)
            cell.updated = now
            for value in predictions:
                if isinstance(value, str):
                    if value not in cell.classes and len(cell.classes) >= self.max_classes:
                        overflow += 1
                        value = OTHER_CLASS
                    cell.classes[value] = cell.classes.get(value, 0) + 1
                else:
                    cell.buckets[bisect.bisect_left(self.bounds, value)] += 1
                    cell.total += value
                    cell.count += 1
        if overflow:
            self.dropped.labels("class-overflow").inc(overflow)

    def expire(self) -> None:
        with self._lock:
            self._expire(self._clock())

    def _expire(self, now: float) -> None:
        while self._cells:
            key, cell = next(iter(self._cells.items()))
            if cell.updated >= now - self.idle_seconds:
                return
            del self._cells[key]
            self.removed.labels("idle").inc()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            self._expire(self._clock())
            cells = [(key, _Cell(list(c.buckets), c.total, c.count, dict(c.classes)))
                     for key, c in self._cells.items()]
        histogram = HistogramMetricFamily(self.metric, "Predictions per revision, from "
                                          "KServe's payload logger", labels=LABELS)
        classes = CounterMetricFamily(f"{self.metric}_class", "Class labels predicted per "
                                      "revision", labels=(*LABELS, "class"))
        les = [_le(b) for b in self.bounds] + ["+Inf"]
        for key, cell in sorted(cells, key=lambda kc: kc[0]):
            values = [key.namespace, key.inferenceservice, key.component, key.revision]
            if cell.count:
                histogram.add_metric(values, list(zip(les, itertools.accumulate(cell.buckets),
                                                      strict=True)), cell.total)
            for name, n in sorted(cell.classes.items()):
                classes.add_metric([*values, name], n)
        return [histogram, classes]

    def counts(self, key: RevisionKey) -> tuple[list[int], dict[str, int]] | None:
        """A revision's per-bucket counts and class counts (tests, the benchmark)."""
        with self._lock:
            cell = self._cells.get(key)
            return None if cell is None else (list(cell.buckets), dict(cell.classes))


def _le(bound: float) -> str:
    return str(int(bound)) if bound.is_integer() else repr(bound)
