"""The controller's HTTP faces: /healthz, /readyz and /metrics on plain HTTP, Slack
interactions, and the admission webhook (/mutate) on TLS, as the API server only calls
webhooks over HTTPS.

I/O, thin: each route is a function from (method, path, headers, body) to a response;
the logic lives in the modules the routes call (``webhook``, ``telemetry``, Slack's
``interactions``). Callers: ``daemon`` (every listener) and the Slack and TLS tests.

Every listener is bounded, for plain HTTP and TLS alike (keyword arguments of
``HttpServer``, defaults in brackets):

- ``read_timeout`` [10 s]: one deadline per request, armed when the server starts waiting
  for it (at accept, or when the previous answer on a keep-alive connection was sent).
  The TLS handshake, request line, headers and body must all arrive before it, however
  slowly a client drips them. A request not complete by then is answered 408 and the
  connection closed; a keep-alive connection that stays idle until then is closed
  without an answer. Writing an answer has the same bound.
- ``max_connections`` [64]: connections served at once, one thread each (so at most that
  many threads per listener, plus its accept thread). A connection beyond the limit is
  never queued: the accept thread answers it ``503`` with ``Connection: close`` at once
  (a non-blocking write of a few bytes); on a TLS listener, where an answer needs a
  handshake, it is closed at once. So under a flood a health probe fails fast instead of
  hanging, and succeeds again once the flood's connections have timed out (at most
  ``read_timeout`` later; the kubelet's default 3 failures x 10 s outlast that).
- ``max_body`` [1 MiB]: the body limit of every route, unless the route is a
  ``LimitedRoute`` with its own (Slack's interactions: 64 KiB). A larger announced body
  is answered 413 without being read.
- Request line and headers together: 64 KiB (414 when the request line alone is longer,
  else 431; the stdlib's 431 for more than 100 headers still applies).
- Framing we refuse, always answered and followed by a close (we cannot know where the
  next request would start): ``Content-Length`` that is not a non-negative decimal
  integer, or repeated with different values -> 400; ``Transfer-Encoding`` (chunked
  bodies are not accepted) -> 411, or 400 beside a ``Content-Length``. A body shorter
  than announced -> 408 at the deadline.

Every refusal is one call of the optional ``on_error(reason)`` hook and one structured
log line (``http request not served``; at most one a second per reason, the next one
telling how many were held back, so that a flood cannot flood the logs), with ``reason``
one of: ``timeout``, ``bad-length``,
``transfer-encoding``, ``too-large``, ``bad-request`` (malformed request line or headers),
``too-many-connections``, ``tls-handshake``, ``disconnected`` (the client went away
mid-request), ``route-error`` (a route raised: 500) and ``internal`` (a defect here: the
server's ``handle_error``). Nothing is printed to stderr, tracebacks included.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from email.message import Message
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = structlog.get_logger(__name__)
MAX_BODY = 1 << 20
MAX_HEAD = 64 * 1024
LINGER_SECONDS = 1.0          # how long a close waits for a client still sending a body
LINGER_BYTES = 1 << 20        # and how much of it is read and discarded meanwhile
_DIGITS = re.compile(r"[0-9]{1,18}")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


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


@dataclass(frozen=True)
class LimitedRoute:
    """A route with its own body limit: ``LimitedRoute(interactions.handle, 64 * 1024)``.

    It is a ``Route`` itself, so it goes in the same routes mapping as any other.
    """

    route: Route
    max_body: int

    def __call__(self, request: Request) -> Response:
        return self.route(request)


class Refused(Exception):
    """A request answered with an error and a close: status, one-line reason, hook reason."""

    def __init__(self, status: int, detail: str, reason: str) -> None:
        super().__init__(detail)
        self.status, self.detail, self.reason = status, detail, reason


class _OverBudget(Exception):
    """The stream read as many bytes as this phase of the request may (head or linger)."""


class _Gone(Exception):
    """An answer could not be written (the client left, or does not read): just close."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def body_length(headers: Message) -> int:
    """The body length a request announces, or ``Refused`` for framing we do not accept.

    Pure. Only ``Content-Length`` framing is accepted (RFC 9112 section 6): one decimal
    value (repeats must agree), no ``Transfer-Encoding``. A value of more than 18 digits
    is larger than any limit: it is returned as 2**62 (so answered 413), not parsed.
    """
    lengths = [value.strip(" \t") for value in headers.get_all("Content-Length") or []]
    if headers.get_all("Transfer-Encoding"):
        if lengths:
            raise Refused(400, "Transfer-Encoding and Content-Length together",
                           "transfer-encoding")
        raise Refused(411, "Transfer-Encoding is not accepted: send a Content-Length",
                       "transfer-encoding")
    if not lengths:
        return 0
    if len(set(lengths)) > 1:
        raise Refused(400, f"conflicting Content-Length values {lengths[:4]!r}", "bad-length")
    value = lengths[0]
    if re.fullmatch(r"[0-9]+", value) is None:
        raise Refused(400, f"Content-Length {value[:40]!r} is not a non-negative integer",
                       "bad-length")
    return int(value) if _DIGITS.fullmatch(value) else 1 << 62


def encode(response: Response, *, close: bool) -> bytes:
    """The bytes of an answer: status line, headers, body. Pure but for the Date header."""
    try:
        phrase = HTTPStatus(response.status).phrase
    except ValueError:
        phrase = ""
    lines = [f"HTTP/1.1 {response.status} {phrase}", f"Date: {formatdate(usegmt=True)}",
             f"Content-Type: {response.content_type}",
             f"Content-Length: {len(response.body)}"]
    lines += [f"{name}: {value}" for name, value in response.headers.items()
              if name.lower() not in ("connection", "content-length")]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


class LogThrottle:
    """At most one line per key every ``interval`` seconds. Pure but for the clock."""

    def __init__(self, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self._clock = interval, clock
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def admit(self, key: str) -> int | None:
        """None to hold this line back, else how many were held back before it."""
        with self._lock:
            now = self._clock()
            if now < self._next.get(key, -math.inf):
                self._held[key] = self._held.get(key, 0) + 1
                return None
            self._next[key] = now + self.interval
            return self._held.pop(key, 0)


class _DeadlineReader(io.RawIOBase):
    """A socket as a raw stream whose reads share one deadline and one byte budget.

    A per-read socket timeout alone lets a client that sends one byte every few seconds
    hold a connection forever; here every read waits at most until ``deadline``.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self.deadline = math.inf
        self.count = 0                 # bytes read from the socket so far
        self.budget = 0                # the total ``count`` may reach

    def arm(self, deadline: float, budget: int) -> None:
        self.deadline, self.budget = deadline, self.count + budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        room = self.budget - self.count
        if room <= 0:
            raise _OverBudget
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("read deadline passed")
        self._sock.settimeout(remaining)
        read = self._sock.recv_into(buffer, min(memoryview(buffer).nbytes, room))
        self.count += read
        return read


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    # -- the connection ------------------------------------------------------------------

    def setup(self) -> None:
        # The streams are opened in handle(), inside its error boundary: the TLS handshake
        # happens there, under the same deadline as the first request.
        self.connection = self.request
        self.close_connection = True
        self._served = 0
        self._unread = False           # the client may still be sending what we did not read
        self._deadline = time.monotonic() + self.server.read_timeout

    def handle(self) -> None:
        self.server.track(self, True)
        try:
            if self._open():
                while True:
                    self.handle_one_request()
                    if self.close_connection:
                        break
            if self._unread:
                self._linger()
        except _Gone as gone:
            self.server.report(gone.reason, self.client_address, gone.detail)
        except OSError as err:                   # reset or TLS error mid-request
            self.server.report("disconnected", self.client_address,
                               f"{type(err).__name__}: {err}"[:200])
        finally:
            self.server.track(self, False)

    def _open(self) -> bool:
        tls = self.server.tls
        if tls is not None:
            try:
                self.connection = tls.context().wrap_socket(
                    self.request, server_side=True, do_handshake_on_connect=False)
                self.connection.settimeout(max(self._deadline - time.monotonic(), 1e-3))
                self.connection.do_handshake()   # the whole handshake shares one timeout
            except (OSError, ValueError) as err:
                self.server.report("tls-handshake", self.client_address,
                                   f"{type(err).__name__}: {err}"[:200])
                return False
        self._reader = _DeadlineReader(self.connection)
        self._in = io.BufferedReader(self._reader)
        self.rfile = self._in
        return True

    def finish(self) -> None:
        if self.connection is not self.request:      # TLS: the wrapper owns the socket
            with contextlib.suppress(OSError):
                self.connection.close()

    def _linger(self) -> None:
        """After a close with the body unread: half-close, then read and discard what the
        client still sends for a moment, so that its kernel gets our FIN and answer, not a
        reset that can destroy the answer before the client reads it."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self._reader.arm(min(self._deadline, time.monotonic() + LINGER_SECONDS),
                             LINGER_BYTES)
            while self._in.read1(1 << 16):
                pass
        except (OSError, _OverBudget):
            pass

    def _write(self, data: bytes) -> None:
        try:
            self.connection.settimeout(self.server.read_timeout)
            self.connection.sendall(data)
        except TimeoutError:
            raise _Gone("timeout", "the client does not read the answer") from None
        except OSError as err:
            raise _Gone("disconnected", f"{type(err).__name__}: {err}"[:200]) from None

    # -- one request ---------------------------------------------------------------------

    def handle_one_request(self) -> None:
        self._reader.arm(self._deadline, MAX_HEAD)
        start, self._expect_continue = self._reader.count, False
        try:
            self._read_and_serve()
        except TimeoutError:
            if self._served and not self._received_since(start):
                self.close_connection = True               # an idle keep-alive: just close
                return
            self._refuse(Refused(408, "request not complete within "
                                  f"{self.server.read_timeout:g} s", "timeout"))
        except _OverBudget:
            self._refuse(Refused(431, f"request line and headers longer than {MAX_HEAD} "
                                  "bytes", "bad-request"))
        except Refused as refused:
            self._refuse(refused)
        self._served += 1
        self._deadline = time.monotonic() + self.server.read_timeout

    def _read_and_serve(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(MAX_HEAD + 1)
        except _OverBudget:
            raise Refused(414, f"request line longer than {MAX_HEAD} bytes",
                           "bad-request") from None
        if not self.raw_requestline:
            self.close_connection = True                   # the client closed: done
        elif not self.raw_requestline.endswith(b"\n"):
            raise _Gone("disconnected", "the client closed inside the request line")
        elif self.parse_request():                         # else it answered (send_error)
            self._serve()

    def _received_since(self, start: int) -> bool:
        if self._reader.count > start:
            return True
        try:       # pipelined bytes already buffered; past the deadline peek cannot block
            return bool(self._in.peek(1))
        except (OSError, _OverBudget):
            return False

    def _serve(self) -> None:
        length = body_length(self.headers)
        self._unread = length > 0
        path = self.path.split("?", 1)[0]
        route = self.server.routes.get((self.command, path))
        if route is None:
            known = {p for _, p in self.server.routes}
            self._send(Response(405 if path in known else 404, b"not found\n"))
            return
        limit = route.max_body if isinstance(route, LimitedRoute) else self.server.max_body
        if length > limit:
            raise Refused(413, f"request body over {limit} bytes", "too-large")
        if self._expect_continue and length:
            self._write(_CONTINUE)
        # The head's budget (MAX_HEAD) was armed for the request line and headers; the body
        # has its own, the length just checked against the route's limit.
        self._reader.arm(self._deadline, length)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            self.close_connection = True
            self.server.report("disconnected", self.client_address,
                               f"body ended after {len(body)} of {length} bytes")
            return
        self._unread = False
        try:
            response = route(Request(self.command, path, dict(self.headers.items()), body))
        except Exception as err:  # one bad request must not take the server down
            self.server.report("route-error", self.client_address, f"{path}: {err}"[:200])
            response = Response(500, b"internal error\n")
        self._send(response)

    def _send(self, response: Response) -> None:
        self.close_connection = self.close_connection or self._unread
        self._write(encode(response, close=self.close_connection))

    def _refuse(self, refused: Refused) -> None:
        self.close_connection = True
        # Past a timeout the client is stalled; otherwise it may still be sending.
        self._unread = refused.reason != "timeout"
        self.server.report(refused.reason, self.client_address, refused.detail)
        with contextlib.suppress(_Gone):
            self._write(encode(Response(refused.status, f"{refused.detail}\n".encode()),
                               close=True))

    # -- the stdlib's answers, through the same path -------------------------------------

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """The stdlib's errors (bad request line, bad headers, unknown method): one line."""
        detail = message or HTTPStatus(code).phrase
        self._refuse(Refused(code, detail[:200], "bad-request"))

    def handle_expect_100(self) -> bool:
        # 100 Continue is sent by _serve once the length is known to be acceptable.
        self._expect_continue = True
        return True

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


class _Server(HTTPServer):
    """The listener: one thread per connection, at most ``max_connections`` of them."""

    request_queue_size = 128           # the kernel's accept backlog, not threads

    def __init__(self, address: tuple[str, int], routes: Mapping[tuple[str, str], Route], *,
                 tls: TlsCertificate | None, read_timeout: float, max_connections: int,
                 max_body: int, on_error: Callable[[str], None] | None) -> None:
        self.routes = dict(routes)
        self.tls = tls
        self.read_timeout, self.max_body, self._on_error = read_timeout, max_body, on_error
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running = 0                  # connection threads started and not yet done
        self._handlers: set[_Handler] = set()
        self._throttle = LogThrottle()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._turn_away(request, client_address)
            return
        with self._lock:
            self._running += 1
        try:
            threading.Thread(target=self._serve_connection, args=(request, client_address),
                             daemon=True, name="http-connection").start()
        except BaseException:
            self._done()
            raise

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._done()

    def _done(self) -> None:
        self._slots.release()
        with self._idle:
            self._running -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no connection thread runs (so none logs after stop()): True if so."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout)

    def _turn_away(self, sock: socket.socket, client_address: Any) -> None:
        """On the accept thread, so nothing here may wait: a non-blocking write of the
        503, a half-close, and what the client already sent read off (a close with unread
        bytes would reset the connection under the answer)."""
        self.report("too-many-connections", client_address, "limit reached")
        try:
            sock.setblocking(False)
            if self.tls is None:
                sock.send(encode(Response(503, b"too many connections\n",
                                          headers={"Retry-After": "1"}), close=True))
                sock.shutdown(socket.SHUT_WR)
            for _ in range(4):
                if not sock.recv(1 << 16):
                    break
        except OSError:
            pass
        sock.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A defect in this module: one line and a count, never a traceback on stderr."""
        kind, err, _ = sys.exc_info()
        self.report("internal", client_address, f"{kind.__name__ if kind else '?'}: {err}")

    def report(self, reason: str, client_address: Any, detail: str) -> None:
        held = self._throttle.admit(reason)
        if held is not None:
            peer = (f"{client_address[0]}:{client_address[1]}"
                    if isinstance(client_address, tuple) else str(client_address))
            log.warning("http request not served", reason=reason, peer=peer, detail=detail,
                        port=self.server_address[1], held_back=held)
        if self._on_error is not None:
            try:
                self._on_error(reason)
            except Exception as err:
                log.error("the on_error hook failed", reason=reason, error=str(err))

    def track(self, handler: _Handler, active: bool) -> None:
        with self._lock:
            (self._handlers.add if active else self._handlers.discard)(handler)

    def close_connections(self) -> None:
        """Wake every connection's thread (its read fails), for a prompt stop."""
        with self._lock:
            connections = [handler.connection for handler in self._handlers]
        for connection in connections:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(connection, socket.SHUT_RDWR)


@dataclass
class HttpServer:
    """One listener with its routes; TLS when a certificate is given. Limits: module doc."""

    address: str
    routes: Mapping[tuple[str, str], Route]
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_check_seconds: float = 10.0
    _: KW_ONLY
    read_timeout: float = 10.0
    max_connections: int = 64
    max_body: int = MAX_BODY
    on_error: Callable[[str], None] | None = None
    _server: _Server | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        for name, value, lowest in (("read_timeout", self.read_timeout, 1e-3),
                                    ("max_connections", self.max_connections, 1),
                                    ("max_body", self.max_body, 0)):
            if not value >= lowest:
                raise ValueError(f"HttpServer {self.address}: {name} must be at least "
                                 f"{lowest:g}, got {value!r}")

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> None:
        host, _, port = self.address.rpartition(":")
        tls = (TlsCertificate(self.cert_file, self.key_file, check_seconds=self.tls_check_seconds)
               if self.cert_file is not None and self.key_file is not None else None)
        self._server = _Server((host, int(port)), self.routes, tls=tls,
                               read_timeout=self.read_timeout,
                               max_connections=self.max_connections, max_body=self.max_body,
                               on_error=self.on_error)
        # A short poll keeps stop() prompt (shutdown waits for the loop's next wake-up).
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        daemon=True, name=f"http-{self.address}")
        self._thread.start()
        log.info("listening", address=f"{host}:{self.port}",
                 tls=self.cert_file is not None, routes=sorted(p for _, p in self.routes),
                 read_timeout=self.read_timeout, max_connections=self.max_connections)

    def stop(self) -> None:
        """Stop accepting, wake every connection and wait (at most 5 s) until they are done."""
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            if not self._server.wait_idle(5.0):
                log.warning("connections still open after stop", address=self.address)
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
