"""The Prometheus metric provider on ``prometheus-api-client``. I/O, thin: it sends the
batched query from ``presets`` and sorts the samples back to their rollouts, telling
apart no series, NaN, stale samples, counter resets and query errors."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import requests
import structlog
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from controller.providers import HistoryResult, Quality, SeriesResult
from controller.providers.presets import Part, Template, batched_query, history_query
from controller.settings import PrometheusSettings

log = structlog.get_logger(__name__)


class PrometheusProvider:
    def __init__(self, settings: PrometheusSettings, stale_after_seconds: float = 120.0, *,
                 timeout_seconds: float | None = None) -> None:
        """``timeout_seconds`` (default the setting) bounds each query, on the client and,
        as the query's ``timeout`` parameter, on the server, which then stops evaluating."""
        self._timeout = timeout_seconds or settings.timeout_seconds
        headers: dict[str, str] = {}
        if settings.bearer_token is not None:
            headers["Authorization"] = f"Bearer {settings.bearer_token.get_secret_value()}"
        auth = None
        if settings.username and settings.password is not None:
            auth = (settings.username, settings.password.get_secret_value())
        session = requests.Session()
        if settings.ca_file is not None:
            session.verify = str(settings.ca_file)
        # One quick retry at most: a tick must not hang on a dead Prometheus; the next
        # tick tries again and missing data is reported, never read as healthy.
        self._prom = PrometheusConnect(url=settings.url, headers=headers or None,
                                       disable_ssl=not settings.verify_tls, auth=auth,
                                       timeout=self._timeout, session=session,
                                       retry=Retry(total=1, backoff_factor=0.2,
                                                   status_forcelist=(502, 503, 504)))
        self._stale_after = stale_after_seconds
        self.queries = 0

    def fetch(self, template: Template, parts: Sequence[Part],
              now: datetime) -> Mapping[str, SeriesResult]:
        if not parts:
            return {}
        query = batched_query(template, list(parts))
        self.queries += 1
        try:
            samples = self._prom.custom_query(query=query, params={
                "time": now.timestamp(), "timeout": f"{max(1, round(self._timeout * 1000))}ms"})
        except (PrometheusApiClientException, requests.RequestException, ValueError) as err:
            detail = f"query failed: {self._describe(err)}"
            log.warning("prometheus query failed", error=detail, template=template.text[:120])
            return {p.group: SeriesResult(Quality.ERROR, detail) for p in parts}
        return sort_samples(template, parts, samples, self._stale_after)


    def fetch_history(self, template: Template, parts: Sequence[Part], start: datetime,
                      end: datetime, step_seconds: int) -> Mapping[str, HistoryResult]:
        if not parts:
            return {}
        query = history_query(template, list(parts))
        self.queries += 1
        try:
            series = self._prom.custom_query_range(
                query=query, start_time=start, end_time=end, step=f"{max(step_seconds, 1)}s",
                params={"timeout": f"{max(1, round(self._timeout * 1000))}ms"})
        except (PrometheusApiClientException, requests.RequestException, ValueError) as err:
            detail = f"history query failed: {self._describe(err)}"
            log.warning("prometheus history query failed", error=detail)
            return {p.group: HistoryResult(Quality.ERROR, detail) for p in parts}
        return sort_history(template, parts, series, start, end, step_seconds)

    def _describe(self, err: Exception) -> str:
        """What went wrong, short and without the query's URL (it says nothing new)."""
        if isinstance(err, requests.Timeout | requests.ConnectionError) and "timed out" in str(
                err).lower():
            return f"no answer within {self._timeout:g}s (timed out)"
        if isinstance(err, requests.ConnectionError):
            return f"cannot connect to Prometheus ({type(err).__name__})"
        if isinstance(err, requests.exceptions.RetryError):
            # Answers in the retried statuses (502, 503, 504) every time; the text of the
            # error is mostly the query's URL, which hid the status (found by the fault chaos).
            reason = getattr(err.args[0], "reason", None) if err.args else None
            return f"Prometheus kept answering with an error ({reason or 'retries exhausted'})"
        if isinstance(err, ValueError):   # the body did not parse as JSON
            return f"the answer is not Prometheus JSON ({str(err)[:200]})"
        return str(err)[:300]


def sort_history(template: Template, parts: Sequence[Part], series: list[dict[str, Any]],
                 start: datetime, end: datetime, step_seconds: int) -> dict[str, HistoryResult]:
    """Pure: Prometheus' matrix result -> one HistoryResult per rollout group, each value list
    aligned on the range's steps (a step without a sample for a revision counts as absent:
    the history skips it for every revision, so the intervals stay paired)."""
    steps = max(1, int((end - start).total_seconds() // max(step_seconds, 1)) + 1)
    t0 = start.timestamp()
    raw: dict[str, dict[str, dict[int, Any]]] = defaultdict(lambda: defaultdict(dict))
    for s in series:
        labels = s.get("metric", {})
        group, revision = labels.get("rollwise_group"), labels.get(template.revision_label)
        if group is None or revision is None:
            continue
        for t, v in s.get("values", ()):
            index = round((float(t) - t0) / max(step_seconds, 1))
            value = float(v)
            if not (0 <= index < steps) or not math.isfinite(value):
                continue
            if template.histogram:
                le = labels.get("le")
                if le is None:
                    continue
                bound = math.inf if le == "+Inf" else float(le) * template.unit_scale
                raw[group][revision].setdefault(index, {})[bound] = value
            else:
                raw[group][revision][index] = value
    results: dict[str, HistoryResult] = {}
    for part in parts:
        found = raw.get(part.group, {})
        if any(r not in found for r in part.revisions):
            results[part.group] = HistoryResult(Quality.NO_DATA, "no history for "
                                                + ", ".join(part.revisions))
            continue
        common = sorted(set.intersection(*(set(found[r]) for r in part.revisions)))
        if template.histogram:
            results[part.group] = HistoryResult(Quality.OK, buckets={
                r: [found[r][i] for i in common] for r in part.revisions})
        else:
            results[part.group] = HistoryResult(Quality.OK, values={
                r: [float(found[r][i]) for i in common] for r in part.revisions})
    return results


def sort_samples(template: Template, parts: Sequence[Part], samples: list[dict[str, Any]],
                 stale_after: float) -> dict[str, SeriesResult]:
    """Pure: Prometheus' vector result -> one SeriesResult per rollout group."""
    values: dict[str, dict[str, float]] = defaultdict(dict)
    buckets: dict[str, dict[str, dict[float, float]]] = defaultdict(lambda: defaultdict(dict))
    ages: dict[str, dict[str, float]] = defaultdict(dict)
    resets: dict[str, dict[str, float]] = defaultdict(dict)
    for sample in samples:
        labels = sample.get("metric", {})
        group, kind = labels.get("rollwise_group"), labels.get("rollwise_q")
        revision = labels.get(template.revision_label)
        if group is None or revision is None:
            continue
        value = float(sample["value"][1])
        if kind == "age":
            ages[group][revision] = value
        elif kind == "resets":
            resets[group][revision] = value
        elif template.histogram:
            le = labels.get("le")
            if le is not None:
                bound = math.inf if le == "+Inf" else float(le) * template.unit_scale
                buckets[group][revision][bound] = value
        else:
            values[group][revision] = value
    results: dict[str, SeriesResult] = {}
    for part in parts:
        g = part.group
        found = buckets[g] if template.histogram else values[g]
        numbers = [v for b in buckets[g].values() for v in b.values()] + list(values[g].values())
        missing = [r for r in part.revisions if r not in found]
        stale = [r for r, age in ages[g].items() if age > stale_after]
        reset = [r for r, n in resets[g].items() if n > 0]
        if any(math.isnan(v) or math.isinf(v) for v in numbers):
            quality, detail = Quality.ERROR, "query returned NaN or Inf"
        elif missing:
            quality, detail = Quality.NO_DATA, f"no series for {', '.join(missing)}"
        elif stale:
            quality, detail = Quality.STALE, (
                f"newest sample of {', '.join(stale)} is older than {stale_after:.0f}s")
        elif reset:
            quality, detail = Quality.RESET, f"counter reset in the last interval: " \
                                             f"{', '.join(reset)}"
        else:
            quality, detail = Quality.OK, ""
        results[g] = SeriesResult(quality, detail, dict(values[g]),
                                  {r: dict(b) for r, b in buckets[g].items()})
    return results
