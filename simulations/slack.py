"""A local Slack: the slice of the Web API Rollwise calls, and interactions signed as Slack
signs them.

Purpose
-------
There is no mature Slack emulator on the registries, and slack_sdk's own tests do what
this does: a ``ThreadingHTTPServer`` on loopback that ``WebClient(base_url=...)`` is
pointed at, with behaviours (429, 5xx, dropped connections) chosen per test. The server
records every call so that tests can assert what was posted, updated and replied.

I/O
---
* ``POST|GET /api/<method>`` with a form, JSON or query-string body, like Slack. Token in
  ``Authorization: Bearer`` (what slack_sdk sends) or a ``token`` field. Answers HTTP 200
  with ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}`` (``not_authed``,
  ``invalid_auth``, ``token_revoked``, ``channel_not_found``, ``message_not_found``,
  ``no_such_subteam``, ``invalid_arguments``, ``unknown_method``); HTTP 429 with
  ``Retry-After`` when rate limited; any status when told to fail; nothing at all (the
  connection is closed) when unreachable.
* Methods: ``auth.test``, ``chat.postMessage`` (channel names become stable ``C...`` ids,
  returned as Slack does; ``thread_ts`` makes a reply), ``chat.update`` (channel id only,
  as Slack), ``chat.postEphemeral``, ``usergroups.users.list``.
* ``POST /response/<key>``: a ``response_url`` (JSON body), recorded.
* Socket Mode: ``apps.connections.open`` (app-level token) answers a ``ws://`` URL on
  this server; the websocket there says ``hello``, pushes the envelopes given to
  ``socket_send`` and records the client's acknowledgements in ``socket_acks``
  (RFC 6455 text, ping/pong and close frames; enough for slack_sdk's builtin client).
* ``block_actions_payload`` / ``signed_interaction``: an interactivity request body
  (``payload=<urlencoded JSON>``) and its ``X-Slack-Signature`` /
  ``X-Slack-Request-Timestamp`` headers (v0 HMAC-SHA256 of ``v0:{timestamp}:{body}``
  over the raw bytes).

Binds 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import queue
import socket
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlsplit

MAX_REQUEST = 1 << 20
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass(frozen=True)
class ApiCall:
    """One request the server received (response_url posts are recorded as ``response``)."""

    method: str
    params: Mapping[str, Any]
    token: str | None
    at: float                              # time.monotonic() when it arrived
    status: int                            # the HTTP status answered
    error: str | None = None               # Slack's error code when ok was false


@dataclass
class Message:
    """A message as it stands now (after every update)."""

    channel: str
    ts: str
    text: str
    blocks: list[Any]
    thread_ts: str | None = None
    updates: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)   # earlier versions


@dataclass
class _RateLimit:
    remaining: int
    retry_after: int


class SlackSim:
    """The server and its state. Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(self, *, bot_token: str = "xoxb-sim-bot-token", team_id: str = "T0SIM0001",
                 usergroups: Mapping[str, list[str]] | None = None,
                 app_token: str = "xapp-sim-app-token") -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.usergroups = dict(usergroups or {})
        self.revoked = False
        self.unreachable = False
        self.fail_status: int | None = None
        self.calls: list[ApiCall] = []
        self.messages: dict[tuple[str, str], Message] = {}
        self.ephemeral: list[dict[str, Any]] = []
        self.responses: list[tuple[str, dict[str, Any]]] = []
        self.socket_acks: list[dict[str, Any]] = []
        self._socket_outbox: queue.Queue[str] = queue.Queue()
        self._stopped = threading.Event()
        self._channels: dict[str, str] = {}
        self._limits: dict[str, _RateLimit] = {}
        self._ts = itertools.count(1)
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> SlackSim:
        self._server = _Server(("127.0.0.1", 0), self)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name="slack-sim")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> SlackSim:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the simulator first"
        return int(self._server.server_address[1])

    @property
    def api_url(self) -> str:
        """What ``WebClient(base_url=...)`` takes."""
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self, key: str = "r1") -> str:
        return f"http://127.0.0.1:{self.port}/response/{key}"

    # -- behaviours ---------------------------------------------------------------------

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer 429 with ``Retry-After``."""
        with self._lock:
            self._limits[method] = _RateLimit(times, retry_after)

    def fail(self, status: int | None = 503) -> None:
        """Answer every API call with this HTTP status (None: back to normal)."""
        self.fail_status = status

    def socket_send(self, envelope: Mapping[str, Any]) -> None:
        """Push a Socket Mode envelope (``type``, ``envelope_id``, ``payload``) to the
        connected client."""
        self._socket_outbox.put(json.dumps(envelope))

    def revoke_token(self) -> None:
        self.revoked = True

    def channel_id(self, name: str) -> str:
        """The stable id a channel name (``#ml-rollouts``) maps to; ids map to themselves."""
        with self._lock:
            return self._channel(name)

    # -- what happened ------------------------------------------------------------------

    def calls_to(self, method: str) -> list[ApiCall]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def top_level(self, channel: str | None = None) -> list[Message]:
        """Messages that are not thread replies, oldest first."""
        with self._lock:
            return [m for m in self.messages.values() if m.thread_ts is None
                    and (channel is None or m.channel == channel)]

    def replies(self, ts: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages.values() if m.thread_ts == ts]

    # -- the API ----------------------------------------------------------------------

    def _channel(self, name: str) -> str:
        if name[:1] in ("C", "G") and name[1:].isalnum():
            return name
        if name not in self._channels:
            digest = hashlib.sha256(name.encode()).hexdigest()[:8].upper()
            self._channels[name] = f"C{digest}"
        return self._channels[name]

    def answer(self, method: str, params: Mapping[str, Any],
               token: str | None) -> tuple[int, dict[str, str], dict[str, Any]]:
        """(status, headers, JSON body) for one API call; records it."""
        with self._lock:
            status, headers, body = self._answer(method, params, token)
            self.calls.append(ApiCall(method, dict(params), token, time.monotonic(), status,
                                      None if body.get("ok", True) else body.get("error")))
            return status, headers, body

    def _answer(self, method: str, params: Mapping[str, Any],
                token: str | None) -> tuple[int, dict[str, str], dict[str, Any]]:
        if self.fail_status is not None:
            return self.fail_status, {}, {"ok": False, "error": "service_unavailable"}
        limit = self._limits.get(method)
        if limit is not None and limit.remaining > 0:
            limit.remaining -= 1
            return 429, {"Retry-After": str(limit.retry_after)}, {"ok": False,
                                                                 "error": "ratelimited"}
        if not token:
            return 200, {}, _error("not_authed")
        if method == "apps.connections.open":
            if token != self.app_token:
                return 200, {}, _error("invalid_auth")
            return 200, {}, {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link/?ticket=sim"}
        if token != self.bot_token:
            return 200, {}, _error("invalid_auth")
        if self.revoked:
            return 200, {}, _error("token_revoked")
        handler = _METHODS.get(method)
        if handler is None:
            return 404, {}, _error("unknown_method")
        return 200, {}, handler(self, params)

    def _auth_test(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": "https://sim.slack.test/", "team": "Sim",
                "user": "rollwise", "team_id": self.team_id, "user_id": "UBOT00001",
                "bot_id": "BBOT00001"}

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _post(self, params: Mapping[str, Any]) -> dict[str, Any]:
        channel_name = params.get("channel")
        if not isinstance(channel_name, str) or not channel_name:
            return _error("channel_not_found")
        if not params.get("text") and not params.get("blocks"):
            return _error("no_text")
        channel = self._channel(channel_name)
        thread_ts = params.get("thread_ts")
        if thread_ts is not None and (channel, thread_ts) not in self.messages:
            return _error("thread_not_found")
        ts = self._next_ts()
        self.messages[(channel, ts)] = Message(channel, ts, str(params.get("text", "")),
                                               _blocks(params.get("blocks")), thread_ts)
        return {"ok": True, "channel": channel, "ts": ts,
                "message": {"text": params.get("text", ""), "ts": ts}}

    def _update(self, params: Mapping[str, Any]) -> dict[str, Any]:
        channel, ts = params.get("channel"), params.get("ts")
        if not isinstance(channel, str) or channel != self._channel(channel):
            return _error("channel_not_found")           # chat.update wants the id
        message = self.messages.get((channel, str(ts)))
        if message is None:
            return _error("message_not_found")
        message.history.append({"text": message.text, "blocks": message.blocks})
        message.text = str(params.get("text", ""))
        message.blocks = _blocks(params.get("blocks"))
        message.updates += 1
        return {"ok": True, "channel": channel, "ts": ts, "text": message.text}

    def _ephemeral(self, params: Mapping[str, Any]) -> dict[str, Any]:
        if not params.get("channel") or not params.get("user"):
            return _error("invalid_arguments")
        self.ephemeral.append(dict(params))
        return {"ok": True, "message_ts": self._next_ts()}

    def _group_members(self, params: Mapping[str, Any]) -> dict[str, Any]:
        group = params.get("usergroup")
        if group not in self.usergroups:
            return _error("no_such_subteam")
        return {"ok": True, "users": list(self.usergroups[str(group)])}

    def record_ack(self, message: dict[str, Any]) -> None:
        with self._lock:
            self.socket_acks.append(message)

    def record_response(self, key: str, body: dict[str, Any]) -> None:
        with self._lock:
            self.responses.append((key, body))
            self.calls.append(ApiCall("response", body, None, time.monotonic(), 200))


_METHODS = {
    "auth.test": SlackSim._auth_test,
    "chat.postMessage": SlackSim._post,
    "chat.update": SlackSim._update,
    "chat.postEphemeral": SlackSim._ephemeral,
    "usergroups.users.list": SlackSim._group_members,
}


def _error(code: str) -> dict[str, Any]:
    return {"ok": False, "error": code}


def _blocks(value: Any) -> list[Any]:
    """Blocks arrive as a JSON list (JSON bodies) or a JSON string (form bodies)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return list(value) if isinstance(value, list) else []


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        sim = self.server.sim
        if sim.unreachable:
            self.close_connection = True   # answer nothing: the client sees a dropped line
            return
        url = urlsplit(self.path)
        if url.path.startswith("/link"):
            self._websocket()
            return
        length = min(int(self.headers.get("Content-Length") or 0), MAX_REQUEST)
        raw = self.rfile.read(length) if length else b""
        if url.path.startswith("/response/"):
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._send(400, {}, {"ok": False, "error": "invalid_json"})
                return
            sim.record_response(url.path.removeprefix("/response/"), body)
            self._send(200, {}, {"ok": True})
            return
        if not url.path.startswith("/api/"):
            self._send(404, {}, _error("unknown_method"))
            return
        params: dict[str, Any] = dict(parse_qsl(url.query))
        if "json" in (self.headers.get("Content-Type") or ""):
            try:
                loaded = json.loads(raw or b"{}")
            except ValueError:
                self._send(200, {}, _error("invalid_json"))
                return
            params.update(loaded if isinstance(loaded, dict) else {})
        else:
            params.update(parse_qsl(raw.decode("utf-8", "replace")))
        token = params.pop("token", None)
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            token = auth.removeprefix("Bearer ")
        status, headers, body = sim.answer(url.path.removeprefix("/api/"), params, token)
        self._send(status, headers, body)

    do_GET = _serve
    do_POST = _serve

    def _websocket(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key")
        if (self.headers.get("Upgrade") or "").lower() != "websocket" or not key:
            self._send(400, {}, _error("not_a_websocket"))
            return
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
                         .encode())
        self.close_connection = True
        _SocketSession(self.connection, self.server.sim).run()

    def _send(self, status: int, headers: Mapping[str, str], body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return


class _SocketSession:
    """One websocket client: ``hello``, then envelopes out and acknowledgements in. The
    client's frames are read only after it saw the 101 answer, so nothing of them sits in
    the HTTP handler's read buffer."""

    TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA

    def __init__(self, sock: socket.socket, sim: SlackSim) -> None:
        self.sock = sock
        self.sim = sim

    def run(self) -> None:
        self._frame(self.TEXT, json.dumps({"type": "hello", "num_connections": 1,
                                           "connection_info": {"app_id": "A0SIM0001"}})
                    .encode())
        while not self.sim._stopped.is_set():          # bounded: stop() ends every session
            try:
                while True:
                    self._frame(self.TEXT, self.sim._socket_outbox.get_nowait().encode())
            except queue.Empty:
                pass
            try:
                frame = self._read(poll=0.05)
            except (OSError, ValueError):
                return
            if frame is None:
                continue
            opcode, data = frame
            if opcode == self.CLOSE:
                self._frame(self.CLOSE, data[:2])
                return
            if opcode == self.PING:
                self._frame(self.PONG, data)
            elif opcode == self.TEXT:
                message = json.loads(data)
                self.sim.record_ack(message if isinstance(message, dict) else {"raw": message})

    def _frame(self, opcode: int, data: bytes) -> None:
        size = len(data)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 126, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 127, size)
        self.sock.sendall(header + data)

    def _exact(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ValueError("connection closed")
            data += chunk
        return data

    def _read(self, poll: float) -> tuple[int, bytes] | None:
        """One client frame (masked, as RFC 6455 requires), or None when none came."""
        self.sock.settimeout(poll)
        try:
            first = self.sock.recv(1)
        except TimeoutError:
            return None
        if not first:
            raise ValueError("connection closed")
        self.sock.settimeout(5)
        second = self._exact(1)[0]
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", self._exact(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", self._exact(8))[0]
        if size > MAX_REQUEST:
            raise ValueError("frame too large")
        mask = self._exact(4) if second & 0x80 else b"\0\0\0\0"
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(self._exact(size)))
        return first[0] & 0x0F, data


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], sim: SlackSim) -> None:
        self.sim = sim
        super().__init__(address, _Handler)


# --- interactions, signed as Slack signs them ---------------------------------------------


def block_actions_payload(
    *,
    action_id: str,
    value: str,
    response_url: str,
    user_id: str = "U012AB3CD",
    user_name: str = "alice",
    team_id: str = "T0SIM0001",
    action_ts: str = "1767225600.000100",
    channel_id: str = "C0SIM0001",
    message_ts: str = "1767225000.000001",
    trigger_id: str = "1234567890.1234567890.abcdef",
) -> dict[str, Any]:
    """A ``block_actions`` payload with the fields Slack sends for a button click."""
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": "A0SIM0001",
        "team": {"id": team_id, "domain": "sim"},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id,
                      "is_ephemeral": False},
        "channel": {"id": channel_id, "name": "ml-rollouts"},
        "message": {"ts": message_ts, "type": "message"},
        "response_url": response_url,
        "trigger_id": trigger_id,
        "actions": [{"type": "button", "action_id": action_id, "block_id": "rollwise-approval",
                     "value": value, "action_ts": action_ts}],
    }


def interaction_body(payload: Mapping[str, Any] | str) -> bytes:
    """The form body Slack posts: ``payload=<urlencoded JSON>``."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return f"payload={quote_plus(text)}".encode()


def signature(signing_secret: str, body: bytes, timestamp: int) -> str:
    """Slack's v0 signature over the raw bytes (slack_sdk's ``generate_signature`` gives
    the same for UTF-8 bodies, and cannot sign any other)."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


def signature_headers(signing_secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """``X-Slack-Request-Timestamp`` and ``X-Slack-Signature`` for this body."""
    return {"Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": str(timestamp),
            "X-Slack-Signature": signature(signing_secret, body, timestamp)}


def signed_interaction(signing_secret: str, payload: Mapping[str, Any] | str,
                       timestamp: int) -> tuple[bytes, dict[str, str]]:
    """Body and headers of an interactivity request exactly as Slack would send it."""
    body = interaction_body(payload)
    return body, signature_headers(signing_secret, body, timestamp)
