"""A fault-injecting reverse proxy in front of Prometheus' HTTP API, for the chaos tests.

``FaultProxy(upstream)`` listens on ``127.0.0.1:<port>`` and forwards every GET and POST to
``upstream`` (the world's real Prometheus) while ``mode`` is ``pass``; the mode can be
switched at any moment, from any thread:

=========  ======================================================================
mode       what a client sees
=========  ======================================================================
pass       Prometheus' own answer, byte for byte
refuse     connection refused: the listening socket is closed (and a request on a
           connection accepted just before is cut without an answer)
error      HTTP 503 with Prometheus' error JSON (``ERROR_BODY``)
nan        Prometheus' answer with every sample value replaced by ``"NaN"``
garbage    HTTP 200 whose body is not JSON (``GARBAGE_BODY``)
slow       Prometheus' answer after ``slow_seconds`` (longer than the controller's
           query deadline), or nothing if the proxy stops first
=========  ======================================================================

``injected`` counts the requests answered (or refused) in each mode and ``seconds`` how
long each mode was in force, for the test's figures. Bounded: at most
``max_connections`` requests are served at once (more are cut), every socket has a
timeout, a slow answer waits on an Event that ``stop`` sets, and after ``max_seconds``
the proxy stops by itself. A context manager; thread-based (``ThreadingHTTPServer``).

I/O. Never imported by the controller.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, get_args

Mode = Literal["pass", "refuse", "error", "nan", "garbage", "slow"]
MODES: tuple[Mode, ...] = get_args(Mode)
FAULTS: tuple[Mode, ...] = tuple(m for m in MODES if m != "pass")
ERROR_BODY = (b'{"status":"error","errorType":"unavailable",'
              b'"error":"injected fault: Prometheus is unavailable"}')
GARBAGE_BODY = b"<html><body><h1>502 Bad Gateway</h1>injected fault</body></html>\n"
_SOCKET_TIMEOUT_S = 10.0


def nan_answer(body: bytes) -> bytes:
    """Prometheus' JSON answer with every sample value replaced by "NaN" (vector, matrix
    and scalar results); a body that is not such an answer is returned unchanged."""
    try:
        answer = json.loads(body)
        data = answer["data"]
        result = data["result"]
    except (ValueError, KeyError, TypeError):
        return body
    if not isinstance(result, list):
        return body
    if data.get("resultType") == "scalar":
        if result:
            data["result"] = [result[0], "NaN"]
    else:
        for series in result:
            if not isinstance(series, dict):
                continue
            if isinstance(series.get("value"), list) and series["value"]:
                series["value"] = [series["value"][0], "NaN"]
            if isinstance(series.get("values"), list):
                series["values"] = [[point[0], "NaN"] for point in series["values"]
                                    if isinstance(point, list) and point]
    return json.dumps(answer, separators=(",", ":")).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = _SOCKET_TIMEOUT_S

    def do_GET(self) -> None:
        self.server.proxy.handle(self)

    def do_POST(self) -> None:
        self.server.proxy.handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        return None  # quiet: the counts say what happened


class FaultProxy:
    """``with FaultProxy(prometheus_url) as proxy:`` then ``proxy.set_mode("nan")``."""

    def __init__(self, upstream: str, *, slow_seconds: float = 3.0, max_seconds: float = 600.0,
                 max_connections: int = 32, port: int = 0) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        if slow_seconds <= 0 or max_seconds <= 0 or max_connections < 1:
            raise ValueError("slow_seconds and max_seconds must be positive, "
                             "max_connections at least 1")
        self._upstream = (parsed.hostname, parsed.port or 80)
        self.slow_seconds = slow_seconds
        self.max_seconds = max_seconds
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._mode: Mode = "pass"
        self._since = time.monotonic()
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self.injected: Counter[Mode] = Counter()
        self.seconds: dict[Mode, float] = dict.fromkeys(MODES, 0.0)
        self.cut = 0   # requests cut because max_connections were busy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> FaultProxy:
        with self._lock:
            self._listen()
        self._timer = threading.Timer(self.max_seconds, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop listening and end every slow answer; idempotent."""
        self._stopped.set()
        with self._lock:
            self._account()
            self._close()
        if self._timer is not None:
            self._timer.cancel()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def set_mode(self, mode: Mode) -> None:
        """Switch to ``mode`` (takes effect for the next request; ``refuse`` closes the
        listener at once, leaving it reopens it on the same port)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        with self._lock:
            if self._stopped.is_set():
                raise RuntimeError("the fault proxy has stopped")
            self._account()
            self._mode = mode
            if mode == "refuse":
                self._close()
            elif self._server is None:
                self._listen()

    def _account(self) -> None:
        now = time.monotonic()
        self.seconds[self._mode] += now - self._since
        self._since = now

    def _listen(self) -> None:
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.proxy = self
        self._port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={
            "poll_interval": 0.1}, name="fault-proxy", daemon=True)
        self._thread.start()

    def _close(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    # -- one request ------------------------------------------------------------------

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        if not self._slots.acquire(blocking=False):
            self.cut += 1
            request.close_connection = True
            return
        try:
            mode = self._mode
            with self._lock:
                self.injected[mode] += 1
            self._answer(request, mode)
        except OSError:
            request.close_connection = True   # the client went away: nothing to answer
        finally:
            self._slots.release()

    def _answer(self, request: BaseHTTPRequestHandler, mode: Mode) -> None:
        if mode == "refuse":
            # Accepted just before the listener closed: cut it without an answer.
            request.close_connection = True
            request.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode == "error":
            self._reply(request, 503, ERROR_BODY, "application/json")
            return
        if mode == "garbage":
            self._reply(request, 200, GARBAGE_BODY, "text/html")
            return
        if mode == "slow" and self._stopped.wait(self.slow_seconds):
            request.close_connection = True
            return
        status, body, content_type = self._forward(request)
        if mode == "nan" and status == 200:
            body = nan_answer(body)
        self._reply(request, status, body, content_type)

    def _forward(self, request: BaseHTTPRequestHandler) -> tuple[int, bytes, str]:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length > 0 else None
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("content-type", "accept", "authorization")}
        connection = http.client.HTTPConnection(*self._upstream, timeout=_SOCKET_TIMEOUT_S)
        try:
            connection.request(request.command, request.path, body=body, headers=headers)
            response = connection.getresponse()
            return (response.status, response.read(),
                    response.getheader("Content-Type", "application/json"))
        except OSError as err:
            detail = json.dumps({"status": "error", "errorType": "unavailable",
                                 "error": f"fault proxy: upstream failed: {err}"})
            return 502, detail.encode(), "application/json"
        finally:
            connection.close()

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, body: bytes,
               content_type: str) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Connection", "close")
        request.end_headers()
        request.wfile.write(body)
        request.close_connection = True


class Blackhole:
    """A TCP service that accepts connections and never answers (a partitioned or wedged
    server: MLMD's gRPC service, say): every call to it runs into its client's deadline.
    ``with Blackhole() as hole:`` then point the client at ``hole.port``. Bounded: at most
    ``max_connections`` are held (more are closed at once), all are closed on exit, and it
    stops by itself after ``max_seconds``."""

    def __init__(self, *, max_connections: int = 64, max_seconds: float = 600.0) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._max = max_connections
        self._held: list[socket.socket] = []
        self._stopped = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._thread = threading.Thread(target=self._accept, name="blackhole", daemon=True)
        self.accepted = 0

    def _accept(self) -> None:
        while not self._stopped.is_set() and time.monotonic() < self._deadline:
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            self.accepted += 1
            if len(self._held) >= self._max:
                connection.close()
            else:
                self._held.append(connection)
        self._close()

    def _close(self) -> None:
        self._listener.close()
        for connection in self._held:
            connection.close()
        self._held.clear()

    def __enter__(self) -> Blackhole:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
