"""KServe payload-logger CloudEvents -> the predictions they carry.

Pure: headers and body in, a ``LoggedEvent`` or ``EventUnreadable`` out; no I/O.

What the KServe agent sends (kserve/kserve ``pkg/logger/handler.go``, ``worker.go``,
``types.go``; ``pkg/webhook/admission/pod/agent_injector.go``): one CloudEvent 1.0 per
logged request (type ``org.kubeflow.serving.inference.request``) and, when the model
answered 200, one per response (``org.kubeflow.serving.inference.response``), both with
the same ``id`` (the request's ``Ce-Id`` header, else a fresh UUID), in *binary* mode
(``ce-*`` headers, the payload as the body, ``Content-Type`` the request's). ``source`` is
the pod's name (the injector passes ``--source-uri <pod name>``); the extensions
``inferenceservicename``, ``namespace``, ``component`` and ``endpoint`` come from the
pod's labels and namespace. Structured mode (``application/cloudevents+json``, with
``data`` or ``data_base64``) is accepted as well: a relay (Knative Eventing, a broker) may
re-encode the event.

Predictions are read from response bodies only (``bodies``: v1 ``predictions``, Open
Inference Protocol v2 ``outputs[].data``).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cloudevents.exceptions import GenericException
from cloudevents.http import from_http

from controller.sink.bodies import (
    MAX_PREDICTIONS,
    Cause,
    EventUnreadable,
    Prediction,
    predictions_of,
)

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
KIND_OF_TYPE: Mapping[str, Literal["request", "response"]] = {
    REQUEST_TYPE: "request", RESPONSE_TYPE: "response"}
#: The extensions the KServe agent sets (lowercase alphanumeric, as CloudEvents requires).
EXTENSIONS = ("inferenceservicename", "namespace", "component", "endpoint")
@dataclass(frozen=True)
class LoggedEvent:
    """One logger event: who sent it and, for a response, its predictions."""

    id: str
    kind: Literal["request", "response"]
    pod: str
    namespace: str
    inferenceservice: str
    component: str
    endpoint: str
    predictions: tuple[Prediction, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.id} from {self.namespace}/{self.pod}"


def parse(headers: Mapping[str, str], body: bytes, *, output: str | None = None,
          max_predictions: int = MAX_PREDICTIONS) -> LoggedEvent:
    """The event an HTTP request carries (binary or structured mode)."""
    try:
        event = from_http(dict(headers), body, data_unmarshaller=_identity)
    except GenericException as err:
        raise EventUnreadable(Cause.NOT_A_CLOUDEVENT, _first_line(str(err))) from err
    attributes = event.get_attributes()
    name = f"{attributes.get('id', '')} from {attributes.get('source', '')}".strip()
    kind = KIND_OF_TYPE.get(str(attributes.get("type", "")))
    if kind is None:
        raise EventUnreadable(Cause.UNKNOWN_TYPE,
                              f"type {str(attributes.get('type'))[:80]!r} is not a KServe "
                              f"inference request or response", name)
    values = {key: str(attributes.get(key) or "") for key in ("id", "source", *EXTENSIONS)}
    absent = [key for key in ("id", "source", "namespace") if not values[key]]
    if absent:
        raise EventUnreadable(Cause.MISSING_ATTRIBUTE, f"no {', '.join(absent)}", name)
    predictions: tuple[Prediction, ...] = ()
    if kind == "response":
        try:
            predictions = predictions_of(_json(event.data), output=output,
                                         limit=max_predictions)
        except EventUnreadable as err:
            raise EventUnreadable(err.cause, err.detail, name) from None
    return LoggedEvent(values["id"], kind, values["source"], values["namespace"],
                       values["inferenceservicename"], values["component"],
                       values["endpoint"], predictions)


def _json(data: object) -> object:
    """The event's data as JSON: the body (binary mode), the bytes of ``data_base64``, or
    ``data`` re-encoded as JSON text by the SDK (structured mode)."""
    if isinstance(data, dict | list):
        return data
    if data is None:
        raise EventUnreadable(Cause.BAD_JSON, "the response event has no data")
    if isinstance(data, str):
        data = data.encode()
    if not isinstance(data, bytes | bytearray):
        raise EventUnreadable(Cause.BAD_JSON, f"data is a {type(data).__name__}")
    try:
        value = json.loads(data)
        # Structured mode: the SDK hands ``data`` back as JSON text; a relay that put the
        # payload in as a string (not conformant, but seen) is decoded once more.
        return json.loads(value) if isinstance(value, str) else value
    except (UnicodeDecodeError, ValueError) as err:
        raise EventUnreadable(Cause.BAD_JSON, _first_line(str(err))) from err


def _identity(data: Any) -> Any:
    # The SDK decodes data_base64 itself; a binary body stays bytes.
    return data


def _first_line(text: str) -> str:
    return text.splitlines()[0][:200] if text else ""


class Pairing:
    """Responses paired with their requests by (pod, id), in a bounded table.

    The agent sends events from several workers, so a response may arrive before its
    request: whichever comes first waits for the other, at most ``timeout`` seconds, and
    the table holds at most ``capacity`` of them (the oldest go first). A request that
    leaves unpaired was answered with an error (KServe logs responses of status 200 only)
    or its response event was lost: counted, never silent. A response that leaves unpaired
    is not a loss (the logger's mode may be ``response``). Pure: the caller gives ``now``.
    """

    def __init__(self, capacity: int = 100_000, timeout: float = 60.0) -> None:
        if capacity < 1 or timeout <= 0:
            raise ValueError("capacity must be >= 1 and timeout > 0")
        self.capacity, self.timeout = capacity, timeout
        self._waiting: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._waiting)

    def request(self, event: LoggedEvent, now: float) -> int:
        """Pair or remember a request; returns how many requests left unanswered."""
        self._meet(event, now)
        return self.expire(now)

    def response(self, event: LoggedEvent, now: float) -> tuple[bool, int]:
        """(was its request seen, how many requests left unanswered meanwhile)."""
        return self._meet(event, now), self.expire(now)

    def _meet(self, event: LoggedEvent, now: float) -> bool:
        key = (f"{event.namespace}/{event.pod}", event.id)
        other = self._waiting.get(key)
        if other is not None and other[1] != event.kind:
            del self._waiting[key]
            return True
        self._waiting[key] = (now, event.kind)
        self._waiting.move_to_end(key)
        return False

    def expire(self, now: float) -> int:
        unanswered = 0
        while self._waiting and (len(self._waiting) > self.capacity or next(
                iter(self._waiting.values()))[0] < now - self.timeout):
            _, (_, kind) = self._waiting.popitem(last=False)
            unanswered += kind == "request"
        return unanswered


__all__ = ["MAX_PREDICTIONS", "Cause", "EventUnreadable", "LoggedEvent", "Pairing",
           "Prediction", "parse", "predictions_of"]
