"""The HTTP server stays bounded and answers cleanly, on plain HTTP and TLS alike.

Raw sockets against a real listener on 127.0.0.1 with short timeouts: bad framing, stalled
and silent clients, a flood of stalled connections, keep-alive. Every test also checks
that nothing printed a traceback (the stdlib's ``handle_error`` prints one to stderr).
Each loop is bounded in count and time; no test measures speed: a client-side socket
timeout of ``read_timeout + SLACK`` only turns "never answered" into a failure.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import structlog

from controller.server import (
    HttpServer,
    LimitedRoute,
    LogThrottle,
    Refused,
    Request,
    Response,
    Route,
    body_length,
)
from simulations.kube.certs import write_serving_pair

READ_TIMEOUT = 0.6
SLACK = 4.0          # generous: the machine is shared; only "never" must fail


def _ok(_: Request) -> Response:
    return Response(200, b"ok\n")


def _echo(request: Request) -> Response:
    return Response(200, request.body)


@dataclass
class Face:
    """A running listener and a way to open client connections to it."""

    server: HttpServer
    tls: ssl.SSLContext | None
    errors: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "tls" if self.tls is not None else "plain"

    def raw(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.server.port),
                                        timeout=READ_TIMEOUT + SLACK)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def connect(self) -> socket.socket:
        sock = self.raw()
        if self.tls is None:
            return sock
        return self.tls.wrap_socket(sock, server_hostname="127.0.0.1")


def _start(tmp_path: Path, kind: str, *, read_timeout: float = READ_TIMEOUT,
           max_connections: int = 64) -> Face:
    errors: list[str] = []
    routes: dict[tuple[str, str], Route] = {
        ("GET", "/healthz"): _ok, ("POST", "/echo"): _echo,
        ("POST", "/small"): LimitedRoute(_echo, 16)}
    tls: ssl.SSLContext | None = None
    if kind == "tls":
        cert, key, ca = write_serving_pair(tmp_path / "pair", ["127.0.0.1"])
        tls = ssl.create_default_context(cadata=ca.decode())
        server = HttpServer("127.0.0.1:0", routes, cert, key, read_timeout=read_timeout,
                            max_connections=max_connections, on_error=errors.append)
    else:
        server = HttpServer("127.0.0.1:0", routes, read_timeout=read_timeout,
                            max_connections=max_connections, on_error=errors.append)
    server.start()
    return Face(server, tls, errors)


@pytest.fixture(autouse=True)
def logs(capfd: pytest.CaptureFixture[str]) -> Iterator[list[MutableMapping[str, Any]]]:
    """The server's log entries; after the test: none carries an exception, and nothing
    reached stderr (where the stdlib's ``handle_error`` prints its tracebacks)."""
    with structlog.testing.capture_logs() as entries:
        yield entries
    _, err = capfd.readouterr()
    assert "Traceback" not in err and "Exception occurred during processing" not in err, err
    assert not [e for e in entries if "exc_info" in e or "exception" in e], entries


@pytest.fixture(params=["plain", "tls"])
def face(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Face]:
    started = _start(tmp_path, request.param)
    yield started
    started.server.stop()


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def read_answer(sock: socket.socket) -> Answer | None:
    """One HTTP answer from ``sock``, or None if the server closed without one. Reads no
    byte past the answer, so that pipelined answers are read one by one."""
    head = b""
    try:
        while not head.endswith(b"\r\n\r\n"):
            byte = sock.recv(1)
            if not byte:
                return None
            head += byte
        body = b""
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(length - len(body))
            if not chunk:
                break
            body += chunk
    except (ConnectionResetError, ssl.SSLError):
        return None
    return Answer(int(status_line.split()[1]), headers, body)


def closed(sock: socket.socket) -> bool:
    """The server closed the connection (EOF or reset) before the client's timeout."""
    try:
        return sock.recv(65536) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


def exchange(face: Face, data: bytes) -> Answer | None:
    with face.connect() as sock:
        sock.sendall(data)
        return read_answer(sock)


def get_healthz(face: Face) -> Answer | None:
    try:
        return exchange(face, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    except (ConnectionResetError, ssl.SSLError, TimeoutError):
        return None


def post(path: str, headers: str, body: bytes = b"") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode() + body


def _threads() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line in /proc/self/status")


# -- framing ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "-1", "+5", "1_0", "5, 5", "0x10", "\u0663"])
def test_a_content_length_that_is_not_a_non_negative_integer_is_400(
        face: Face, value: str) -> None:
    with face.connect() as sock:
        sock.sendall(post("/echo", f"Content-Length: {value}\r\n", b"hello"))
        answer = read_answer(sock)
        assert answer is not None and answer.status == 400
        assert b"Content-Length" in answer.body and answer.body.count(b"\n") == 1
        assert answer.headers["connection"] == "close"
        assert closed(sock)
    assert face.errors == ["bad-length"]


def test_conflicting_content_lengths_are_400(face: Face) -> None:
    answer = exchange(face, post("/echo", "Content-Length: 3\r\nContent-Length: 4\r\n", b"abcd"))
    assert answer is not None and answer.status == 400
    assert face.errors == ["bad-length"]


@pytest.mark.parametrize(("headers", "status"), [
    ("Transfer-Encoding: chunked\r\n", 411),
    ("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400),
])
def test_a_chunked_body_is_refused(face: Face, headers: str, status: int) -> None:
    with face.connect() as sock:
        sock.sendall(post("/echo", headers, b"5\r\nhello\r\n0\r\n\r\n"))
        answer = read_answer(sock)
        assert answer is not None and answer.status == status
        assert closed(sock)          # the rest of the body is never read as a request
    assert face.errors == ["transfer-encoding"]


def test_a_body_over_the_limit_is_413_without_reading_it(face: Face) -> None:
    # Only the head is sent: a server that waited for the 2 MiB would answer 408 instead.
    with face.connect() as sock:
        sock.sendall(post("/echo", f"Content-Length: {2 << 20}\r\n"))
        answer = read_answer(sock)
        assert answer is not None and answer.status == 413
    # A client that already started sending its body still reads the answer.
    with face.connect() as sock:
        sock.sendall(post("/echo", f"Content-Length: {2 << 20}\r\n", b"x" * 200_000))
        answer = read_answer(sock)
        assert answer is not None and answer.status == 413
    assert face.errors == ["too-large", "too-large"]


def test_a_route_has_its_own_body_limit(face: Face) -> None:
    assert (answer := exchange(face, post("/small", "Content-Length: 16\r\n", b"a" * 16)))
    assert answer.status == 200 and answer.body == b"a" * 16
    assert (answer := exchange(face, post("/small", "Content-Length: 17\r\n", b"a" * 17)))
    assert answer.status == 413 and b"16 bytes" in answer.body
    assert face.errors == ["too-large"]


def test_a_huge_content_length_is_413(face: Face) -> None:
    answer = exchange(face, post("/echo", "Content-Length: " + "9" * 5000 + "\r\n"))
    assert answer is not None and answer.status == 413


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /healthz HTTP/x.y\r\n\r\n", 400),
    (b"GET /healthz HTTP/2.0\r\n\r\n", 505),
    (b"POST /echo\r\n\r\n", 400),
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),
    (b"GET /healthz HTTP/1.1\r\n" + b"X-Big: " + b"b" * 40_000 + b"\r\n"
     + b"X-Big2: " + b"b" * 40_000 + b"\r\n\r\n", 431),
])
def test_a_malformed_request_is_a_clean_4xx(face: Face, request_bytes: bytes,
                                             status: int) -> None:
    answer = exchange(face, request_bytes)
    assert answer is not None and answer.status == status
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.body.count(b"\n") == 1
    assert face.errors == ["bad-request"]


def test_an_unknown_path_or_method_is_answered_and_its_body_not_taken_as_a_request(
        face: Face) -> None:
    with face.connect() as sock:
        sock.sendall(post("/nowhere", "Content-Length: 26\r\n", b"GET /healthz HTTP/1.1\r\n\r\n"))
        answer = read_answer(sock)
        assert answer is not None and answer.status == 404
        assert closed(sock)
    assert (answer := exchange(face, b"PUT /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert answer.status == 405
    assert face.errors == []


# -- timeouts -----------------------------------------------------------------------------


def test_a_body_shorter_than_announced_is_408_within_the_read_timeout(face: Face) -> None:
    with face.connect() as sock:
        started = time.monotonic()
        sock.sendall(post("/echo", "Content-Length: 100\r\n", b"only ten b"))
        answer = read_answer(sock)         # the client's timeout is READ_TIMEOUT + SLACK
        assert answer is not None and answer.status == 408
        assert time.monotonic() - started < READ_TIMEOUT + SLACK
        assert closed(sock)
    assert face.errors == ["timeout"]


def test_a_client_dripping_its_headers_is_cut_at_the_deadline(face: Face) -> None:
    """One byte at a time, each well within the timeout: only a whole-request deadline
    (not a per-read socket timeout) stops it."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 200
    with face.connect() as sock:
        started = time.monotonic()
        for byte in head:                  # at most len(head) * 0.03 s = 7 s
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                break
            if select.select([sock], [], [], 0.03)[0]:
                break
        answer = read_answer(sock)
        assert answer is not None and answer.status == 408
        assert time.monotonic() - started < READ_TIMEOUT + SLACK
    assert face.errors == ["timeout"]


def test_a_silent_client_is_closed_after_the_read_timeout(face: Face) -> None:
    # On the TLS port the raw socket never starts a handshake.
    with face.raw() as sock:
        started = time.monotonic()
        answer = read_answer(sock)
        assert time.monotonic() - started < READ_TIMEOUT + SLACK
        if face.name == "plain":
            assert answer is not None and answer.status == 408
            assert closed(sock)
        else:
            assert answer is None            # no handshake, so nothing can be answered
    assert face.errors == (["timeout"] if face.name == "plain" else ["tls-handshake"])


def test_plain_http_to_the_tls_port_is_closed_and_counted(tmp_path: Path) -> None:
    face = _start(tmp_path, "tls")
    try:
        with face.raw() as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_answer(sock) is None
        answer = get_healthz(face)           # and the listener serves the next client
        assert answer is not None and answer.status == 200
    finally:
        face.server.stop()
    assert face.errors == ["tls-handshake"]


# -- keep-alive ---------------------------------------------------------------------------


def test_keep_alive_serves_several_requests_then_closes_an_idle_connection(
        face: Face) -> None:
    with face.connect() as sock:
        for body in (b"one", b"", b"three" * 1000):
            sock.sendall(post("/echo", f"Content-Length: {len(body)}\r\n", body))
            answer = read_answer(sock)
            assert answer is not None and answer.status == 200 and answer.body == body
            assert "connection" not in answer.headers
        # Expect: 100-continue is honoured once the length is acceptable.
        sock.sendall(post("/echo", "Content-Length: 4\r\nExpect: 100-continue\r\n"))
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"four")
        answer = read_answer(sock)
        assert answer is not None and answer.body == b"four"
        # Pipelined: two requests in one write, two answers in order.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        for _ in range(2):
            answer = read_answer(sock)
            assert answer is not None and (answer.status, answer.body) == (200, b"ok\n")
        started = time.monotonic()
        assert closed(sock)                # idle: closed without an answer
        assert time.monotonic() - started < READ_TIMEOUT + SLACK
    assert face.errors == []               # an idle close is not an error


def test_a_too_large_request_with_expect_gets_413_and_no_continue(face: Face) -> None:
    with face.connect() as sock:
        sock.sendall(post("/small", "Content-Length: 100\r\nExpect: 100-continue\r\n"))
        answer = read_answer(sock)
        assert answer is not None and answer.status == 413


def test_connection_close_is_honoured(face: Face) -> None:
    with face.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = read_answer(sock)
        assert answer is not None and answer.headers["connection"] == "close"
        assert closed(sock)


# -- the connection limit -------------------------------------------------------------------


def _stall(face: Face, count: int) -> list[socket.socket]:
    """``count`` connections that never finish a request: half say nothing (on TLS: no
    handshake), half send part of a request (on TLS, after the handshake when admitted)."""
    socks = []
    for i in range(count):
        sock = face.raw()
        if i % 2:
            sock.sendall(b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345"
                         if face.tls is None else b"\x16\x03\x01")   # a TLS record begins
        socks.append(sock)
    return socks


@pytest.mark.parametrize("kind", ["plain", "tls"])
def test_300_stalled_connections_hold_bounded_threads_and_others_get_a_quick_answer(
        tmp_path: Path, kind: str, logs: list[MutableMapping[str, Any]]) -> None:
    limit, stalled = 24, 300
    before = _threads()
    # A longer timeout than the other tests': all 300 connect well within it.
    face = _start(tmp_path, kind, max_connections=limit, read_timeout=3.0)
    socks: list[socket.socket] = []
    try:
        socks = _stall(face, stalled)
        peak = _threads()
        # A client beyond the limit is answered at once (503, or closed on TLS), never
        # queued: a queued request would get its 200 once a slot frees.
        with face.raw() as sock:
            if face.tls is None:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = read_answer(sock)
                assert answer is not None and answer.status == 503
                assert answer.headers["connection"] == "close"
            else:
                with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
                    face.tls.wrap_socket(sock, server_hostname="127.0.0.1")
        turned_away = [s for s in socks if select.select([s], [], [], 0)[0]]
        assert len(turned_away) == stalled - limit
        peak = max(peak, _threads())
        assert peak - before <= limit + 3, (peak, before)
        # Once the stalled connections time out, the listener serves again.
        deadline = time.monotonic() + 3.0 + SLACK
        answer = None
        while time.monotonic() < deadline:
            answer = get_healthz(face)
            if answer is not None and answer.status == 200:
                break
            time.sleep(0.2)
        assert answer is not None and answer.status == 200
    finally:
        for sock in socks:
            sock.close()
        face.server.stop()
    assert face.errors.count("too-many-connections") >= stalled - limit + 1
    # The admitted ones time out, or see their client close above ("disconnected").
    assert set(face.errors) <= {"too-many-connections", "timeout", "tls-handshake",
                                "disconnected"}
    # Every refusal is counted, but the log holds most lines back during the flood.
    lines = [e for e in logs if e.get("reason") == "too-many-connections"]
    assert 1 <= len(lines) <= 10
    assert sum(e["held_back"] for e in lines) + len(lines) <= len(face.errors)


@pytest.mark.parametrize("kind", ["plain", "tls"])
def test_stalled_connections_under_the_limit_do_not_delay_others(
        tmp_path: Path, kind: str) -> None:
    face = _start(tmp_path, kind, max_connections=8)
    socks = _stall(face, 5)
    try:
        answer = get_healthz(face)
        assert answer is not None and answer.status == 200
    finally:
        for sock in socks:
            sock.close()
        face.server.stop()


@pytest.mark.parametrize("kind", ["plain", "tls"])
def test_stop_closes_the_connections_it_serves_and_waits_for_them(
        tmp_path: Path, kind: str) -> None:
    face = _start(tmp_path, kind, read_timeout=30.0)
    with face.raw() as silent, face.connect() as partial:
        partial.sendall(b"GET /heal")
        time.sleep(0.2)
        face.server.stop()
        # No connection thread of this listener is left: none can log after stop().
        assert not [t for t in threading.enumerate()
                    if t.name == "http-connection" and t.is_alive()]
        for sock in (silent, partial):
            sock.settimeout(5)             # well before the 30 s read timeout
            assert read_answer(sock) is None


# -- the boundaries -----------------------------------------------------------------------


def test_a_defect_in_the_handler_is_one_counted_line_not_a_traceback(
        face: Face, monkeypatch: pytest.MonkeyPatch) -> None:
    from controller import server

    def broken(self: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(server._Handler, "_serve", broken)
    with contextlib.suppress(OSError):
        assert exchange(face, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") is None
    deadline = time.monotonic() + SLACK      # reported after the connection closed
    while not face.errors and time.monotonic() < deadline:
        time.sleep(0.02)
    assert face.errors == ["internal"]


def test_a_failing_route_is_500_and_counted(tmp_path: Path) -> None:
    def boom(_: Request) -> Response:
        raise ValueError("nope")

    errors: list[str] = []
    server = HttpServer("127.0.0.1:0", {("GET", "/boom"): boom}, on_error=errors.append)
    server.start()
    try:
        face = Face(server, None, errors)
        answer = exchange(face, b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer is not None and answer.status == 500
    finally:
        server.stop()
    assert errors == ["route-error"]


def test_a_failing_on_error_hook_does_not_break_the_server(tmp_path: Path) -> None:
    def hook(_: str) -> None:
        raise RuntimeError("metrics down")

    server = HttpServer("127.0.0.1:0", {("GET", "/healthz"): _ok}, on_error=hook)
    server.start()
    try:
        face = Face(server, None)
        assert (answer := exchange(face, post("/echo", "Content-Length: x\r\n")))
        assert answer.status == 400
        assert (answer := get_healthz(face)) and answer.status == 200
    finally:
        server.stop()


@pytest.mark.parametrize(("limit", "value"), [
    ("read_timeout", 0), ("max_connections", 0), ("max_body", -1),
    ("read_timeout", float("nan")),
])
def test_a_bad_limit_is_a_clear_error(limit: str, value: float) -> None:
    with pytest.raises(ValueError, match=limit):
        HttpServer("127.0.0.1:0", {}, **{limit: value})  # type: ignore[arg-type]


# -- the pure part ------------------------------------------------------------------------


def test_the_log_throttle_lets_one_line_a_second_per_reason_and_counts_the_rest() -> None:
    now = [100.0]
    throttle = LogThrottle(1.0, clock=lambda: now[0])
    assert [throttle.admit("timeout") for _ in range(4)] == [0, None, None, None]
    assert throttle.admit("bad-length") == 0          # each reason on its own
    now[0] += 0.99
    assert throttle.admit("timeout") is None
    now[0] += 0.01
    assert throttle.admit("timeout") == 4              # and the next line tells
    assert throttle.admit("timeout") is None


def _headers(*pairs: tuple[str, str]) -> Message:
    message = Message()
    for name, value in pairs:
        message[name] = value
    return message


@pytest.mark.parametrize(("pairs", "expected"), [
    ((), 0),
    ((("Content-Length", "0"),), 0),
    ((("Content-Length", " 42 "),), 42),
    ((("Content-Length", "7"), ("Content-Length", "7")), 7),
    ((("Content-Length", "1" * 19),), 1 << 62),
])
def test_body_length_of_acceptable_framing(pairs: tuple[tuple[str, str], ...],
                                           expected: int) -> None:
    assert body_length(_headers(*pairs)) == expected


@pytest.mark.parametrize(("pairs", "status", "reason"), [
    ((("Content-Length", "-1"),), 400, "bad-length"),
    ((("Content-Length", ""),), 400, "bad-length"),
    ((("Content-Length", "1e3"),), 400, "bad-length"),
    ((("Content-Length", "3"), ("Content-Length", "4")), 400, "bad-length"),
    ((("Transfer-Encoding", "chunked"),), 411, "transfer-encoding"),
    ((("Transfer-Encoding", "identity"), ("Content-Length", "3")), 400,
     "transfer-encoding"),
])
def test_body_length_refuses_other_framing(pairs: tuple[tuple[str, str], ...], status: int,
                                           reason: str) -> None:
    with pytest.raises(Refused) as refused:
        body_length(_headers(*pairs))
    assert (refused.value.status, refused.value.reason) == (status, reason)
    assert "\n" not in refused.value.detail

