"""A TLS admission-webhook endpoint on 127.0.0.1 that admits everything and records which
requests the API server sent it: how the deploy checks see, on the real kube-apiserver,
which writes the shipped webhook configuration (rules, selectors, CEL match conditions)
lets through to the controller.

I/O: a listening socket and a server thread, both closed on exit. Callers:
tests/deploy/test_deploy_server_side.py.
"""

from __future__ import annotations

import base64
import copy
import json
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from simulations.kube.certs import write_serving_pair

# The API server sends one AdmissionReview per request; no honest one is this large.
MAX_REVIEW_BYTES = 4 * 1024 * 1024
READ_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Call:
    """One AdmissionReview the API server sent."""

    path: str
    operation: str
    namespace: str
    name: str


class AdmissionRecorder:
    """``with AdmissionRecorder(workdir) as recorder:`` — serving until the block ends."""

    def __init__(self, workdir: Path) -> None:
        cert, key, self.ca_bundle = write_serving_pair(workdir, ["127.0.0.1"])
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._calls: list[Call] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.socket = self._context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="admission-recorder", daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> AdmissionRecorder:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=READ_TIMEOUT_S)

    def take(self) -> list[Call]:
        """The calls since the last take, oldest first."""
        with self._lock:
            calls, self._calls = self._calls, []
        return calls

    def webhook_configuration(self, shipped: dict[str, Any], name: str) -> dict[str, Any]:
        """The shipped MutatingWebhookConfiguration with every webhook calling this
        recorder at its own path, everything else (rules, selectors, match conditions,
        failure policy) as shipped."""
        config = copy.deepcopy(shipped)
        config["metadata"] = {"name": name, "labels": shipped["metadata"].get("labels", {})}
        ca = base64.b64encode(self.ca_bundle).decode()
        for hook in config["webhooks"]:
            path = hook["clientConfig"]["service"].get("path", "/")
            hook["clientConfig"] = {"url": f"{self.url}{path}", "caBundle": ca}
        return config

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            timeout = READ_TIMEOUT_S

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 < length <= MAX_REVIEW_BYTES:
                    self.send_error(400, "bad Content-Length")
                    return
                request = json.loads(self.rfile.read(length))["request"]
                with recorder._lock:
                    # The API server adds ?timeout=<timeoutSeconds>s to the path.
                    recorder._calls.append(Call(urlsplit(self.path).path, request["operation"],
                                                request.get("namespace", ""),
                                                request.get("name", "")))
                body = json.dumps({"apiVersion": "admission.k8s.io/v1",
                                   "kind": "AdmissionReview",
                                   "response": {"uid": request["uid"], "allowed": True}})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass   # the calls are the record; access lines would only be noise

        return Handler
