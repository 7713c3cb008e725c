"""The controller's HTTP faces: /healthz, /readyz and /metrics on plain HTTP, and the
admission webhook (/mutate) on TLS, as the API server only calls webhooks over HTTPS.

I/O, thin: each route is a function from (method, path, headers, body) to a response;
the logic lives in the modules the routes call (``webhook``, ``telemetry``).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)
MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: object) -> Response:
        return cls(status, json.dumps(payload).encode(), "application/json")


Route = Callable[[Request], Response]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        path = self.path.split("?", 1)[0]
        route = self.server.routes.get((self.command, path))
        if route is None:
            known = {p for _, p in self.server.routes}
            self._send(Response(405 if path in known else 404, b"not found\n"))
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(Response(413, b"request body too large\n"))
            return
        body = self.rfile.read(length) if length else b""
        try:
            response = route(Request(self.command, path, dict(self.headers.items()), body))
        except Exception as err:  # one bad request must not take the server down
            log.error("request failed", path=path, error=str(err))
            response = Response(500, b"internal error\n")
        self._send(response)

    do_GET = _serve
    do_POST = _serve

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: object) -> None:
        return  # access logs would drown the controller's own lines


class TlsCertificate:
    """The serving certificate, reloaded when its files change.

    cert-manager renews the webhook certificate in its Secret and the kubelet swaps the
    mounted files (a symlink flip), so a long-running controller must pick the new pair
    up without a restart. Every new connection asks for ``context()``; at most every
    ``check_seconds`` the files are stat'ed, and a changed pair is loaded into a *fresh*
    context, so a pair caught half-written fails to load, is logged, and the current
    certificate keeps serving until the next check.
    """

    def __init__(self, cert_file: Path, key_file: Path, *, check_seconds: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self.check_seconds = check_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._context = self._load()          # a bad pair at start is a startup error
        self._checked = clock()

    def _file_stamp(self) -> tuple[tuple[int, int, int], ...]:
        stats = (os.stat(self.cert_file), os.stat(self.key_file))
        return tuple((st.st_ino, st.st_mtime_ns, st.st_size) for st in stats)

    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context

    def context(self) -> ssl.SSLContext:
        with self._lock:
            now = self._clock()
            if now - self._checked >= self.check_seconds:
                self._checked = now
                self._reload_if_changed()
            return self._context

    def _reload_if_changed(self) -> None:
        try:
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return
            self._context = self._load()
            self._stamp = stamp
            log.info("reloaded TLS certificate", cert_file=str(self.cert_file))
        except (OSError, ssl.SSLError) as err:
            log.warning("cannot load the renewed TLS certificate; serving the current one",
                        cert_file=str(self.cert_file), error=str(err))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], routes: Mapping[tuple[str, str], Route],
                 tls: TlsCertificate | None = None) -> None:
        self.routes = dict(routes)
        self.tls = tls
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        sock, address = self.socket.accept()
        if self.tls is None:
            return sock, address
        # The handshake happens on first read, in the request's own thread: a client that
        # connects and says nothing must not stall accept() for everyone.
        return self.tls.context().wrap_socket(sock, server_side=True,
                                              do_handshake_on_connect=False), address


@dataclass
class HttpServer:
    """One listener with its routes; TLS when a certificate is given."""

    address: str
    routes: Mapping[tuple[str, str], Route]
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_check_seconds: float = 10.0
    _server: _Server | None = None
    _thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> None:
        host, _, port = self.address.rpartition(":")
        tls = (TlsCertificate(self.cert_file, self.key_file, check_seconds=self.tls_check_seconds)
               if self.cert_file is not None and self.key_file is not None else None)
        self._server = _Server((host, int(port)), self.routes, tls)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"http-{self.address}")
        self._thread.start()
        log.info("listening", address=f"{host}:{self.port}",
                 tls=self.cert_file is not None, routes=sorted(p for _, p in self.routes))

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
