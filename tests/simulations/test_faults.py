"""The fault proxy alone, in front of a fake Prometheus that answers fixed bytes: each mode's
exact answer, switching at runtime, its bounds, and what the controller's own Prometheus
provider makes of each fault (the cause it reports)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from controller.providers import Quality
from controller.providers.presets import Part, Template
from controller.providers.prometheus import PrometheusProvider
from controller.settings import PrometheusSettings
from simulations.faults import (
    ERROR_BODY,
    FAULTS,
    GARBAGE_BODY,
    Blackhole,
    FaultProxy,
    nan_answer,
)

VECTOR = (b'{"status":"success","data":{"resultType":"vector","result":['
          b'{"metric":{"rollwise_group":"0","revision":"r1"},"value":[1700000000,"41"]},'
          b'{"metric":{"rollwise_group":"0","revision":"r2"},"value":[1700000000,"7"]}]}}')
MATRIX = (b'{"status":"success","data":{"resultType":"matrix","result":['
          b'{"metric":{"revision":"r1"},"values":[[1700000000,"1"],[1700000003,"2"]]}]}}')


class _Upstream(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[tuple[str, str, bytes]]


class _Answer(BaseHTTPRequestHandler):
    server: _Upstream

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, self.path, body))
        answer = MATRIX if self.path.startswith("/api/v1/query_range") else VECTOR
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = _reply

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def upstream() -> Iterator[_Upstream]:
    server = _Upstream(("127.0.0.1", 0), _Answer)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream: _Upstream) -> Iterator[FaultProxy]:
    with FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}",
                    slow_seconds=1.0, max_seconds=60) as running:
        yield running


def test_pass_forwards_path_query_and_body_and_returns_the_exact_bytes(
        proxy: FaultProxy, upstream: _Upstream) -> None:
    got = requests.get(f"{proxy.url}/api/v1/query", params={"query": "up", "time": "1"},
                       timeout=5)
    assert got.status_code == 200 and got.content == VECTOR
    posted = requests.post(f"{proxy.url}/api/v1/query_range", data={"query": "up"}, timeout=5)
    assert posted.content == MATRIX
    assert upstream.seen == [("GET", "/api/v1/query?query=up&time=1", b""),
                             ("POST", "/api/v1/query_range", b"query=up")]
    assert proxy.injected == {"pass": 2}


def test_refuse_closes_the_listener_and_pass_reopens_it_on_the_same_port(
        proxy: FaultProxy) -> None:
    url = proxy.url
    proxy.set_mode("refuse")
    with pytest.raises(requests.ConnectionError, match="Connection refused"):
        requests.get(f"{url}/api/v1/query", timeout=2)
    proxy.set_mode("pass")
    assert proxy.url == url
    assert requests.get(f"{url}/api/v1/query", timeout=5).content == VECTOR


def test_error_is_a_503_with_prometheus_error_json(proxy: FaultProxy,
                                                   upstream: _Upstream) -> None:
    proxy.set_mode("error")
    got = requests.get(f"{proxy.url}/api/v1/query", timeout=5)
    assert got.status_code == 503 and got.content == ERROR_BODY
    assert got.json() == {"status": "error", "errorType": "unavailable",
                          "error": "injected fault: Prometheus is unavailable"}
    assert upstream.seen == []   # a fault never reaches Prometheus


def test_nan_keeps_the_answer_and_replaces_every_sample_value(proxy: FaultProxy) -> None:
    proxy.set_mode("nan")
    vector = requests.get(f"{proxy.url}/api/v1/query", timeout=5)
    assert vector.status_code == 200
    assert vector.content == (
        b'{"status":"success","data":{"resultType":"vector","result":['
        b'{"metric":{"rollwise_group":"0","revision":"r1"},"value":[1700000000,"NaN"]},'
        b'{"metric":{"rollwise_group":"0","revision":"r2"},"value":[1700000000,"NaN"]}]}}')
    matrix = requests.get(f"{proxy.url}/api/v1/query_range", timeout=5)
    assert matrix.content == (
        b'{"status":"success","data":{"resultType":"matrix","result":['
        b'{"metric":{"revision":"r1"},"values":[[1700000000,"NaN"],[1700000003,"NaN"]]}]}}')


def test_nan_answer_of_a_scalar_and_of_something_else() -> None:
    scalar = b'{"status":"success","data":{"resultType":"scalar","result":[17,"3"]}}'
    assert nan_answer(scalar) == (
        b'{"status":"success","data":{"resultType":"scalar","result":[17,"NaN"]}}')
    for other in (b"not json", b'{"status":"error"}', b"[1, 2]"):
        assert nan_answer(other) == other


def test_garbage_is_a_200_that_is_not_json(proxy: FaultProxy) -> None:
    proxy.set_mode("garbage")
    got = requests.get(f"{proxy.url}/api/v1/query", timeout=5)
    assert got.status_code == 200 and got.content == GARBAGE_BODY
    with pytest.raises(ValueError):
        got.json()


def test_slow_answers_after_slow_seconds_and_a_shorter_deadline_times_out(
        proxy: FaultProxy) -> None:
    proxy.set_mode("slow")
    with pytest.raises(requests.ReadTimeout):
        requests.get(f"{proxy.url}/api/v1/query", timeout=0.3)
    started = time.monotonic()
    got = requests.get(f"{proxy.url}/api/v1/query", timeout=5)
    assert got.content == VECTOR and 1.0 <= time.monotonic() - started < 3.0


def test_stop_ends_slow_answers_at_once(upstream: _Upstream) -> None:
    proxy = FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}", slow_seconds=30)
    proxy.start()
    proxy.set_mode("slow")
    failed: list[BaseException] = []

    def ask() -> None:
        try:
            requests.get(f"{proxy.url}/api/v1/query", timeout=20)
        except requests.RequestException as err:
            failed.append(err)

    client = threading.Thread(target=ask)
    client.start()
    time.sleep(0.3)
    started = time.monotonic()
    proxy.stop()
    client.join(timeout=5)
    assert not client.is_alive() and time.monotonic() - started < 3
    assert len(failed) == 1   # cut, never answered late
    with pytest.raises(RuntimeError, match="stopped"):
        proxy.set_mode("pass")


def test_connections_beyond_the_limit_are_cut(upstream: _Upstream) -> None:
    with FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}", slow_seconds=1.5,
                    max_connections=1) as proxy:
        proxy.set_mode("slow")
        first = threading.Thread(target=requests.get, args=(f"{proxy.url}/api/v1/query",),
                                 kwargs={"timeout": 5})
        first.start()
        time.sleep(0.3)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{proxy.url}/api/v1/query", timeout=5)
        first.join(timeout=5)
        assert proxy.cut == 1 and proxy.injected == {"slow": 1}


def test_it_stops_by_itself_after_max_seconds(upstream: _Upstream) -> None:
    proxy = FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}", max_seconds=0.3)
    proxy.start()
    assert requests.get(f"{proxy.url}/api/v1/query", timeout=5).content == VECTOR
    time.sleep(0.8)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{proxy.url}/api/v1/query", timeout=2)


def test_counts_and_seconds_per_mode(proxy: FaultProxy) -> None:
    proxy.set_mode("error")
    for _ in range(3):
        requests.get(f"{proxy.url}/api/v1/query", timeout=5)
    time.sleep(0.2)
    proxy.set_mode("pass")
    assert proxy.injected == {"error": 3}
    assert 0.2 <= proxy.seconds["error"] < 5


def test_unknown_mode_and_bad_upstream_are_refused(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        proxy.set_mode("flaky")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="http://"):
        FaultProxy("ftp://127.0.0.1:1")


# What the controller's provider reports for each fault: missing data naming the cause.
CAUSES = {"refuse": "cannot connect to Prometheus", "error": "too many 503 error responses",
          "nan": "query returned NaN or Inf", "garbage": "not Prometheus JSON",
          "slow": "timed out"}


@pytest.mark.parametrize("mode", FAULTS)
def test_the_controller_provider_reports_each_fault_as_an_error_naming_it(
        proxy: FaultProxy, mode: Any) -> None:
    assert set(CAUSES) == set(FAULTS)
    provider = PrometheusProvider(PrometheusSettings(url=proxy.url), timeout_seconds=0.5)
    template = Template("sum by (revision) (x)", "revision", False)
    part = Part("0", "ns", "svc", ("r1", "r2"), 60, 3)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert provider.fetch(template, [part], now)["0"].quality == Quality.OK
    proxy.set_mode(mode)
    result = provider.fetch(template, [part], now)["0"]
    assert result.quality == Quality.ERROR
    assert CAUSES[mode] in result.detail and "/api/v1/query" not in result.detail, result.detail
    proxy.set_mode("pass")
    assert provider.fetch(template, [part], now)["0"].quality == Quality.OK
    assert json.loads(ERROR_BODY)["status"] == "error"


def test_the_blackhole_accepts_and_never_answers_then_closes_everything() -> None:
    with Blackhole(max_connections=1) as hole:
        held = socket.create_connection(("127.0.0.1", hole.port), timeout=2)
        held.sendall(b"GET / HTTP/1.1\r\n\r\n")
        with pytest.raises(TimeoutError):
            held.settimeout(0.5)
            held.recv(1)
        extra = socket.create_connection(("127.0.0.1", hole.port), timeout=2)
        assert extra.recv(1) == b""   # beyond the limit: closed at once
        assert hole.accepted == 2
    with contextlib.suppress(ConnectionResetError):   # reset: it had unread bytes
        assert held.recv(1) == b""    # closed on exit
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", hole.port), timeout=2)
