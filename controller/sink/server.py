"""The sink's HTTP receiver: ``POST /`` takes one logger CloudEvent, ``GET /metrics`` the
histograms, ``/healthz`` and ``/readyz``.

I/O, thin: ``PredictionSink.receive`` turns one request into one answer (parse, pair, map
the pod, count), and ``controller.server.HttpServer`` is the listener with its bounds (one
deadline per request, a connection limit, a body limit answered 413 unread, clean 4xx).

Answers: 200 counted; 400 not a readable logger event (the cause in the body, counted by
cause, logged once per cause); 404 the pod's revision is unknown (counted as dropped
predictions, logged once per pod); 503 the API server could not be asked (dropped, logged
once per distinct error). The KServe agent does not retry, so every loss is in a counter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from controller.errors import KubeError
from controller.server import HttpServer, Request, Response
from controller.sink.events import EventUnreadable, Pairing, parse
from controller.sink.histograms import PredictionHistograms, RevisionKey
from controller.sink.revisions import RevisionMapper

log = structlog.get_logger(__name__)
_ONCE_CAP = 1000       # distinct pods / errors remembered for "logged once"


class PredictionSink:
    """Events in, histograms out; thread-safe."""

    def __init__(self, histograms: PredictionHistograms, mapper: RevisionMapper, *,
                 output: str | None = None, max_predictions: int = 10_000,
                 pairing: Pairing | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.histograms, self.mapper = histograms, mapper
        self.output, self.max_predictions = output, max_predictions
        self.pairing = pairing or Pairing()
        self._clock = clock
        self._lock = threading.Lock()
        self._logged: set[str] = set()
        self.refused = Counter("rollwise_sink_http_refused", "Requests the listener refused "
                               "before reading them (timeout, too-large, ...)", ["reason"],
                               registry=histograms.registry)

    def routes(self) -> dict[tuple[str, str], Callable[[Request], Response]]:
        return {("POST", "/"): self.receive, ("GET", "/metrics"): self.metrics,
                ("GET", "/healthz"): _ok, ("GET", "/readyz"): _ok}

    def receive(self, request: Request) -> Response:
        try:
            event = parse(request.headers, request.body, output=self.output,
                          max_predictions=self.max_predictions)
        except EventUnreadable as err:
            self.histograms.unparseable.labels(err.cause.value).inc()
            self._once(f"cause:{err.cause.value}", "unreadable logger event",
                       cause=err.cause.value, error=str(err))
            return Response(400, f"{err}\n".encode())
        self.histograms.events.labels(event.kind).inc()
        now = self._clock()
        with self._lock:
            if event.kind == "request":
                expired = self.pairing.request(event, now)
            else:
                _, expired = self.pairing.response(event, now)
        if expired:
            self.histograms.unanswered.inc(expired)
        if event.kind == "request" or not event.predictions:
            return Response(200, b"ok\n")
        try:
            revision = self.mapper.revision(event.namespace, event.pod)
        except KubeError as err:
            self.histograms.dropped.labels("lookup-failed").inc(len(event.predictions))
            self._once(f"error:{err}", "cannot map a pod to its revision", error=str(err))
            return Response(503, f"cannot map pod {event.namespace}/{event.pod}: {err}\n"
                            .encode())
        if revision is None:
            self.histograms.dropped.labels("unknown-revision").inc(len(event.predictions))
            self._once(f"pod:{event.namespace}/{event.pod}", "pod serves no known revision",
                       pod=f"{event.namespace}/{event.pod}", event_id=event.id)
            return Response(404, f"pod {event.namespace}/{event.pod}: no revision (not found, "
                                 f"or not owned by a Deployment)\n".encode())
        self.histograms.observe(RevisionKey(event.namespace, event.inferenceservice,
                                            event.component, revision), event.predictions)
        return Response(200, b"ok\n")

    def metrics(self, request: Request) -> Response:
        return Response(200, generate_latest(self.histograms.registry), CONTENT_TYPE_LATEST)

    def on_refused(self, reason: str) -> None:
        self.refused.labels(reason).inc()

    def _once(self, key: str, message: str, **fields: str) -> None:
        with self._lock:
            if key in self._logged or len(self._logged) >= _ONCE_CAP:
                return
            self._logged.add(key)
        log.warning(message, **fields)


def _ok(request: Request) -> Response:
    return Response(200, b"ok\n")


def listener(sink: PredictionSink, address: str, *, read_timeout: float = 10.0,
             max_connections: int = 64, max_body: int = 1 << 20) -> HttpServer:
    return HttpServer(address, sink.routes(), read_timeout=read_timeout,
                      max_connections=max_connections, max_body=max_body,
                      on_error=sink.on_refused)


__all__ = ["PredictionSink", "listener"]
