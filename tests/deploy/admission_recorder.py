"""An admission-webhook endpoint on 127.0.0.1 that admits everything and records which
requests the API server sent it: how the deploy checks see, on the real kube-apiserver,
which writes the shipped webhook configuration (rules, selectors, CEL match conditions)
lets through to the controller.

Served by the controller's own TLS listener (controller.server.HttpServer) with a
throwaway certificate. I/O: a listening socket and its thread, both closed on exit.
Callers: tests/deploy/test_deploy_server_side.py.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from controller.server import HttpServer, Request, Response
from simulations.kube.certs import write_serving_pair


@dataclass(frozen=True)
class Call:
    """One AdmissionReview the API server sent."""

    path: str
    operation: str
    namespace: str
    name: str


class AdmissionRecorder:
    """``with AdmissionRecorder(workdir, shipped) as recorder:`` — answering, at each path
    the shipped MutatingWebhookConfiguration names, until the block ends."""

    def __init__(self, workdir: Path, shipped: dict[str, Any]) -> None:
        self._shipped = shipped
        cert, key, self._ca_bundle = write_serving_pair(workdir, ["127.0.0.1"])
        paths = {hook["clientConfig"]["service"]["path"] for hook in shipped["webhooks"]}
        self._server = HttpServer("127.0.0.1:0", {("POST", p): self._admit(p) for p in paths},
                                  cert, key)
        self._calls: list[Call] = []
        self._lock = threading.Lock()

    def __enter__(self) -> AdmissionRecorder:
        self._server.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.stop()

    def take(self) -> list[Call]:
        """The calls since the last take, oldest first."""
        with self._lock:
            calls, self._calls = self._calls, []
        return calls

    def configuration(self, name: str) -> dict[str, Any]:
        """The shipped configuration under another name, each webhook calling this
        recorder at its own path; everything else (rules, selectors, match conditions,
        failure policy) as shipped."""
        config = copy.deepcopy(self._shipped)
        config["metadata"] = {"name": name, "labels": self._shipped["metadata"].get("labels", {})}
        ca = base64.b64encode(self._ca_bundle).decode()
        for hook in config["webhooks"]:
            url = f"https://127.0.0.1:{self._server.port}{hook['clientConfig']['service']['path']}"
            hook["clientConfig"] = {"url": url, "caBundle": ca}
        return config

    def _admit(self, path: str) -> Callable[[Request], Response]:
        def admit(http: Request) -> Response:
            request = json.loads(http.body)["request"]
            with self._lock:
                self._calls.append(Call(path, request["operation"],
                                        request.get("namespace", ""), request.get("name", "")))
            return Response.json(200, {"apiVersion": "admission.k8s.io/v1",
                                       "kind": "AdmissionReview",
                                       "response": {"uid": request["uid"], "allowed": True}})

        return admit
