"""How fast the prediction sink takes events, and how much memory its histograms hold.

``python -m simulations.sink_benchmark [--events N] [--revisions R] [--out FILE]``

- **events/s on one core**: KServe agent events (binary mode, as the Go agent sends them:
  one request and one response per prediction call, a v1 body of ``--instances``
  predictions) through ``PredictionSink.receive`` (parse with the CloudEvents SDK, pair by
  id, pod -> revision from the cache, count), in one thread; CPU seconds from
  ``time.process_time``. Then the same events over HTTP through the sink's listener
  (``controller.server.HttpServer``) from one keep-alive client in the same process (one
  interpreter, so at most one core between them: a floor for the listener).
- **memory at R revisions x 20 buckets**: ``tracemalloc`` of the histograms (19 bounds and
  +Inf) holding R revisions with every bucket non-zero, plus the pod cache holding one
  pod per revision; and what one scrape of ``/metrics`` costs at that size.

I/O: in-process servers on loopback only. Not a test: numbers to report
(docs/prediction-sink.md).
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import time
import tracemalloc
from pathlib import Path

from prometheus_client import generate_latest

from controller.server import Request
from controller.sink.histograms import PredictionHistograms, RevisionKey
from controller.sink.revisions import FakeOwners, RevisionMapper
from controller.sink.server import PredictionSink, listener

_REQUEST = "org.kubeflow.serving.inference.request"
_RESPONSE = "org.kubeflow.serving.inference.response"
_PODS = 20


def _pod(i: int) -> str:
    return f"model-predictor-{i % 2 + 1:05}-deployment-7c9f8d6b5-{i:05}"


def _sink(bounds: list[float]) -> tuple[PredictionSink, FakeOwners]:
    owners = FakeOwners()
    for i in range(_PODS):
        owners.knative_pod("models", f"model-predictor-{i % 2 + 1:05}", _pod(i),
                           _pod(i).rsplit("-", 1)[0])
    return PredictionSink(PredictionHistograms(bounds), RevisionMapper(owners)), owners


def _events(n: int, instances: int) -> list[tuple[dict[str, str], bytes]]:
    out = []
    for i in range(n // 2):
        headers = {"Ce-Specversion": "1.0", "Ce-Id": f"5f0a7d2e-{i:08}",
                   "Ce-Source": _pod(i % _PODS), "Ce-Time": "2026-12-04T18:46:07.066554Z",
                   "Ce-Recordedtime": "2026-12-04T18:46:07.068113Z",
                   "Ce-Inferenceservicename": "model", "Ce-Namespace": "models",
                   "Ce-Component": "predictor", "Ce-Endpoint": "default", "Ce-Metadata": "{}",
                   "Content-Type": "application/json"}
        request = json.dumps({"instances": [[0.1, 0.2, 0.3, 0.4]] * instances}).encode()
        response = json.dumps({"predictions": [((i * 7 + k) % 100) / 100
                                               for k in range(instances)]}).encode()
        out.append(({**headers, "Ce-Type": _REQUEST}, request))
        out.append(({**headers, "Ce-Type": _RESPONSE}, response))
    return out


def in_process(n: int, instances: int) -> dict[str, float]:
    sink, _ = _sink([i / 10 for i in range(11)])
    events = _events(n, instances)
    cpu, wall = time.process_time(), time.perf_counter()
    for headers, body in events:
        answer = sink.receive(Request("POST", "/", headers, body))
        assert answer.status == 200, answer.body
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"events": len(events), "cpu_s": cpu, "wall_s": wall,
            "events_per_cpu_s": len(events) / cpu}


def over_http(n: int, instances: int) -> dict[str, float]:
    sink, _ = _sink([i / 10 for i in range(11)])
    server = listener(sink, "127.0.0.1:0", max_connections=4)
    server.start()
    events = _events(n, instances)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        for headers, body in events:
            connection.request("POST", "/", body=body, headers=headers)
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        connection.close()
        server.stop()
    return {"events": len(events), "cpu_s": cpu, "wall_s": wall,
            "events_per_wall_s": len(events) / wall, "events_per_cpu_s": len(events) / cpu}


def memory(revisions: int, buckets: int = 20) -> dict[str, float]:
    bounds = [(i + 1) / buckets for i in range(buckets - 1)]        # + the +Inf bucket
    values = [(i + 0.5) / buckets for i in range(buckets)]          # one in each bucket
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    histograms = PredictionHistograms(bounds, max_revisions=revisions)
    owners = FakeOwners()
    mapper = RevisionMapper(owners, capacity=revisions)
    for r in range(revisions):
        key = RevisionKey(f"ns-{r % 100}", f"model-{r}", "predictor",
                          f"model-{r}-predictor-00001")
        histograms.observe(key, values)
    base = tracemalloc.take_snapshot()
    for r in range(revisions):       # the pod cache, one pod per revision
        namespace, revision = f"ns-{r % 100}", f"model-{r}-predictor-00001"
        owners.knative_pod(namespace, revision, f"{revision}-deployment-abc-{r:05}",
                           f"{revision}-deployment-abc")
    owners_size = tracemalloc.take_snapshot()
    for r in range(revisions):
        revision = f"model-{r}-predictor-00001"
        mapper.revision(f"ns-{r % 100}", f"{revision}-deployment-abc-{r:05}")
    owners.reads.clear()             # the fake's own record of reads is not the cache
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    assert all(c > 0 for c in (histograms.counts(key) or ([0], {}))[0])
    started, cpu = time.perf_counter(), time.process_time()
    text = generate_latest(histograms.registry)
    scrape, scrape_cpu = time.perf_counter() - started, time.process_time() - cpu

    def size(a: tracemalloc.Snapshot, b: tracemalloc.Snapshot) -> float:
        return sum(s.size_diff for s in b.compare_to(a, "filename")) / 2**20

    return {"revisions": revisions, "buckets": buckets,
            "histograms_mib": size(before, base), "pod_cache_mib": size(owners_size, after),
            "scrape_s": scrape, "scrape_cpu_s": scrape_cpu, "scrape_mib": len(text) / 2**20,
            "series": text.count(b"\n") - text.count(b"#")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--revisions", type=int, default=10_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    results = {"in_process": in_process(args.events, args.instances),
               "over_http": over_http(args.events // 4, args.instances),
               "memory": memory(args.revisions)}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
