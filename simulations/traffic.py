"""Open-loop traffic against simulated model endpoints, following a live traffic split.

Purpose
-------
Drive the endpoints of :mod:`simulations.endpoints` the way clients drive an
InferenceService: requests arrive at a set rate whatever the latency (open loop), and
each one goes to a revision picked at random with the weights of the *current* traffic
split, so a controller that shifts traffic sees the shift in Prometheus.

I/O
---
* Input: ``split()`` -> ``[(endpoint_url, percent), ...]``, re-read about every 0.5 s;
  ``isvc_split`` builds one from an InferenceService's
  ``status.components.predictor.traffic`` (Knative ``TrafficTarget`` entries with
  ``revisionName`` and ``percent``) read through the Kubernetes API; ``route_split`` from a
  Gateway API ``HTTPRoute`` (KServe Standard mode): its ``backendRefs`` weights once a
  gateway has accepted the route's current generation, each Service's share spread over
  its ready endpoints.
* Output: real HTTP/1.1 keep-alive ``POST <url>/v1/models/<model>:predict`` requests
  (KServe v1) to 127.0.0.1; counters ``sent`` and ``errors`` by url, ``dropped`` (arrivals
  the worker pool could not take: the generator is saturated) and ``unroutable``
  (arrivals while the split named no known endpoint).
* Bounded: the generator needs ``max_requests`` or ``max_seconds`` and stops by itself
  after the first bound is hit, or on ``stop()``; every request has a timeout.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import urlsplit

from simulations.kserve.httproute import accepted_at_generation, split_from_route

if TYPE_CHECKING:
    from simulations.endpoints import EndpointFleet

__all__ = [
    "Split",
    "TrafficGenerator",
    "isvc_split",
    "route_split",
    "split_from_isvc",
    "split_in_force",
]

log = logging.getLogger(__name__)

Split = Callable[[], Sequence[tuple[str, float]]]
#: (namespace, Service) -> the urls of its ready endpoints (an EndpointSlice's view).
ServiceEndpoints = Callable[[str, str], Sequence[str]]
SPLIT_REFRESH_S = 0.5
BACKLOG_S = 0.5  # arrivals the workers may lag behind before new ones are dropped
_BODY = json.dumps({"instances": [[6.8, 2.8, 4.8, 1.4]]}).encode()


class TrafficGenerator:
    """Sends requests at ``rate_rps`` from a scheduler thread to ``concurrency`` workers.

    Arrivals are Poisson (``arrivals="poisson"``) or evenly spaced (``"fixed"``). Arrivals
    wait for a free worker in a backlog holding half a second of traffic (at least
    ``4 * concurrency``); one that finds the backlog full is counted in ``dropped``
    rather than delaying later arrivals, which would close the loop.
    ``model_name`` is the model in the predict path; without it the generator asks each
    endpoint once with ``GET /v1/models`` (a request the endpoint counts, as a real
    queue-proxy would). ``host`` is the Host header to send (a gateway routes by it);
    without it the endpoint's address is sent, as HTTP clients do.
    """

    def __init__(
        self,
        split: Split,
        *,
        rate_rps: float,
        seed: int = 0,
        max_requests: int | None = None,
        max_seconds: float | None = None,
        concurrency: int = 8,
        model_name: str | None = None,
        arrivals: Literal["poisson", "fixed"] = "poisson",
        request_timeout_s: float = 10.0,
        split_refresh_s: float = SPLIT_REFRESH_S,
        host: str | None = None,
    ) -> None:
        if not (rate_rps > 0 and math.isfinite(rate_rps)):
            raise ValueError("rate_rps must be a positive number")
        if max_requests is None and max_seconds is None:
            raise ValueError("bound the generator: give max_requests and/or max_seconds")
        if max_requests is not None and max_requests < 0:
            raise ValueError("max_requests must be >= 0")
        if max_seconds is not None and not max_seconds >= 0:
            raise ValueError("max_seconds must be >= 0")
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if arrivals not in ("poisson", "fixed"):
            raise ValueError(f"unknown arrivals {arrivals!r}")
        self._split = split
        self.rate_rps = rate_rps
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.concurrency = concurrency
        self.model_name = model_name
        self.arrivals = arrivals
        self.request_timeout_s = request_timeout_s
        self.split_refresh_s = split_refresh_s
        self.host = host
        self._rng = random.Random(seed)
        backlog = max(4 * concurrency, math.ceil(rate_rps * BACKLOG_S))
        self._queue: queue.Queue[str] = queue.Queue(maxsize=backlog)
        self._stop = threading.Event()
        self._scheduled_all = threading.Event()
        self._lock = threading.Lock()
        self._sent: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._dropped = 0
        self._unroutable = 0
        self._paths: dict[str, str] = {}
        self._threads: list[threading.Thread] = []
        self._started_at: float | None = None
        self._finished_at: float | None = None

    # ------------------------------------------------------------------ results

    @property
    def sent(self) -> Counter[str]:
        """Requests sent, by endpoint url (a snapshot)."""
        with self._lock:
            return Counter(self._sent)

    @property
    def errors(self) -> Counter[str]:
        """Requests answered 5xx or failed in transport, by endpoint url (a snapshot)."""
        with self._lock:
            return Counter(self._errors)

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._dropped

    @property
    def unroutable(self) -> int:
        with self._lock:
            return self._unroutable

    @property
    def elapsed_s(self) -> float:
        if self._started_at is None:
            return 0.0
        end = self._finished_at if self._finished_at is not None else time.monotonic()
        return end - self._started_at

    @property
    def done(self) -> bool:
        return bool(self._threads) and not any(t.is_alive() for t in self._threads)

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("a generator runs once; create a new one")
        self._started_at = time.monotonic()
        self._threads = [threading.Thread(target=self._schedule, name="traffic-scheduler")]
        self._threads += [
            threading.Thread(target=self._work, name=f"traffic-worker-{i}")
            for i in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the generator stopped by itself (or ``timeout``); True if done."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        return self.done

    def stop(self, timeout: float = 15.0) -> None:
        """Stop scheduling, abandon queued arrivals, let in-flight requests finish."""
        self._stop.set()
        self.wait(timeout)

    def __enter__(self) -> TrafficGenerator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ threads

    def _schedule(self) -> None:
        try:
            self._schedule_arrivals()
        finally:
            self._scheduled_all.set()

    def _schedule_arrivals(self) -> None:
        assert self._started_at is not None
        start = self._started_at
        deadline = math.inf if self.max_seconds is None else start + self.max_seconds
        limit = self.max_requests
        routes = self._read_split([])
        next_refresh = start + self.split_refresh_s
        next_arrival = start
        arrived = 0
        while not self._stop.is_set() and (limit is None or arrived < limit):
            now = time.monotonic()
            if now >= deadline:
                return
            if now >= next_refresh:
                routes = self._read_split(routes)
                next_refresh = now + self.split_refresh_s
            if next_arrival > now:
                self._stop.wait(min(next_arrival, deadline, next_refresh) - now)
                continue
            self._dispatch(self._choose(routes))
            arrived += 1
            next_arrival += self._gap()

    def _gap(self) -> float:
        if self.arrivals == "poisson":
            return self._rng.expovariate(self.rate_rps)
        return 1.0 / self.rate_rps

    def _read_split(self, previous: list[tuple[str, float]]) -> list[tuple[str, float]]:
        """Current split as (url, weight>0); keeps the previous one if split() fails."""
        try:
            return [(url, float(pct)) for url, pct in self._split() if float(pct) > 0]
        except Exception:
            log.exception("traffic split could not be read; keeping the previous one")
            return previous

    def _choose(self, routes: list[tuple[str, float]]) -> str | None:
        if not routes:
            return None
        urls = [url for url, _ in routes]
        return self._rng.choices(urls, weights=[w for _, w in routes])[0]

    def _dispatch(self, url: str | None) -> None:
        if url is None:
            with self._lock:
                self._unroutable += 1
            return
        try:
            self._queue.put_nowait(url)
        except queue.Full:
            with self._lock:
                self._dropped += 1

    def _work(self) -> None:
        connections: dict[str, http.client.HTTPConnection] = {}
        try:
            while not self._stop.is_set():
                try:
                    url = self._queue.get(timeout=0.05)
                except queue.Empty:
                    if self._scheduled_all.is_set():
                        return
                    continue
                ok = self._send(connections, url)
                with self._lock:
                    self._sent[url] += 1
                    if not ok:
                        self._errors[url] += 1
        finally:
            for conn in connections.values():
                conn.close()
            self._finished_at = time.monotonic()

    def _send(self, connections: dict[str, http.client.HTTPConnection], url: str) -> bool:
        """One predict call on this worker's keep-alive connection; True if not 5xx.

        A reused connection that the server closed while idle is retried once on a new
        one, as HTTP clients do; any other failure counts as an error.
        """
        for attempt in (1, 2):
            reused = url in connections
            try:
                conn = connections.get(url) or self._connect(connections, url)
                status, _ = _request(conn, "POST", self._predict_path(conn, url), _BODY,
                                     self.host)
                return status < 500
            except (OSError, http.client.HTTPException, ValueError) as exc:
                stale = connections.pop(url, None)
                if stale is not None:
                    stale.close()
                closed_while_idle = isinstance(
                    exc, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError
                )
                if not (reused and closed_while_idle and attempt == 1):
                    return False
        return False

    def _connect(
        self, connections: dict[str, http.client.HTTPConnection], url: str
    ) -> http.client.HTTPConnection:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=self.request_timeout_s
        )
        connections[url] = conn
        return conn

    def _predict_path(self, conn: http.client.HTTPConnection, url: str) -> str:
        base = urlsplit(url).path.rstrip("/")
        if self.model_name is not None:
            return f"{base}/v1/models/{self.model_name}:predict"
        with self._lock:
            known = self._paths.get(url)
        if known is None:
            status, body = _request(conn, "GET", f"{base}/v1/models", None, self.host)
            models = json.loads(body)["models"] if status == 200 else []
            if len(models) != 1:
                raise ValueError(f"{url} serves models {models}; pass model_name")
            known = f"{base}/v1/models/{models[0]}:predict"
            with self._lock:
                self._paths[url] = known
        return known


def _request(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None,
    host: str | None = None,
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if host is not None:
        headers["Host"] = host
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()  # read fully so the connection can be reused


# ---------------------------------------------------------------------- InferenceService


def split_from_isvc(
    isvc: dict[str, Any], namespace: str, fleet: EndpointFleet
) -> list[tuple[str, float]]:
    """Map ``status.components.predictor.traffic`` to endpoint urls.

    Entries without a revision endpoint in the fleet (or without percent, as tag-only
    routes have) are left out, so their share goes to the remaining revisions.
    """
    status = isvc.get("status") or {}
    traffic = ((status.get("components") or {}).get("predictor") or {}).get("traffic") or []
    split: list[tuple[str, float]] = []
    for target in traffic:
        revision, percent = target.get("revisionName"), target.get("percent")
        endpoint = fleet.get(namespace, revision) if revision else None
        if endpoint is not None and percent:
            split.append((endpoint.url, float(percent)))
    return split


def isvc_split(api_client: Any, namespace: str, name: str, fleet: EndpointFleet, *,
               refresh_s: float = SPLIT_REFRESH_S) -> Split:
    """A ``split()`` reading the InferenceService's predictor traffic, cached for
    ``refresh_s`` (0.5 s by default)."""
    from kubernetes import client as k8s  # deferred: a heavy import not every user needs

    api = k8s.CustomObjectsApi(api_client)
    lock = threading.Lock()
    cache: list[tuple[float, list[tuple[str, float]]]] = []

    def split() -> list[tuple[str, float]]:
        with lock:
            now = time.monotonic()
            if cache and now - cache[0][0] < refresh_s:
                return cache[0][1]
            isvc = cast(
                dict[str, Any],
                api.get_namespaced_custom_object(
                    group="serving.kserve.io",
                    version="v1beta1",
                    namespace=namespace,
                    plural="inferenceservices",
                    name=name,
                ),
            )
            routes = split_from_isvc(isvc, namespace, fleet)
            cache[:] = [(now, routes)]
            return routes

    return split


# ---------------------------------------------------------------------- HTTPRoute


def split_in_force(
    route: dict[str, Any] | None,
    resolve: ServiceEndpoints,
    last_accepted: dict[str, Any] | None,
) -> tuple[list[tuple[str, float]], dict[str, Any] | None]:
    """The split a gateway applies for ``route``, and the route spec that split comes from.

    Weights take effect only once a parent accepted the route's current generation; until
    then the last accepted spec stays in force (none before the first, or once the route
    is gone: nothing routes). A Service's weight is shared by its ready endpoints; a
    Service without any is left out, so its share goes to the others, as
    ``split_from_isvc`` does for revisions.
    """
    if route is None:
        return [], None
    in_force = route if accepted_at_generation(route) else last_accepted
    if in_force is None:
        return [], None
    split: list[tuple[str, float]] = []
    for namespace, service, weight in split_from_route(in_force):
        urls = list(resolve(namespace, service))
        if weight > 0 and urls:
            split.extend((url, weight / len(urls)) for url in urls)
    return split, in_force


def route_split(api_client: Any, namespace: str, name: str, resolve: ServiceEndpoints, *,
                refresh_s: float = SPLIT_REFRESH_S) -> Split:
    """A ``split()`` reading the HTTPRoute ``namespace/name`` (KServe Standard mode writes
    one named after the InferenceService), cached for ``refresh_s``."""
    from kubernetes import client as k8s  # deferred: a heavy import not every user needs
    from kubernetes.client.exceptions import ApiException

    api = k8s.CustomObjectsApi(api_client)
    lock = threading.Lock()
    cache: list[tuple[float, list[tuple[str, float]]]] = []
    accepted: list[dict[str, Any] | None] = [None]

    def split() -> list[tuple[str, float]]:
        with lock:
            now = time.monotonic()
            if cache and now - cache[0][0] < refresh_s:
                return cache[0][1]
            try:
                route = cast(dict[str, Any], api.get_namespaced_custom_object(
                    "gateway.networking.k8s.io", "v1", namespace, "httproutes", name))
            except ApiException as exc:
                if exc.status != 404:
                    raise
                route = None
            routes, accepted[0] = split_in_force(route, resolve, accepted[0])
            cache[:] = [(now, routes)]
            return routes

    return split
