"""The sink reads KServe payload-logger CloudEvents as the agent sends them.

The binary-mode requests below are written out header by header as the KServe agent's Go
CloudEvents client puts them on the wire (``pkg/logger/worker.go``: ``Ce-*`` headers in
Go's canonical case, the model's payload as the body, ``Content-Type`` the request's);
the structured ones as a relay re-encodes them (``application/cloudevents+json``, with
``data`` or ``data_base64``)."""

from __future__ import annotations

import base64
import json

import pytest

from controller.errors import RollwiseError
from controller.sink.events import (
    REQUEST_TYPE,
    RESPONSE_TYPE,
    Cause,
    EventUnreadable,
    LoggedEvent,
    Pairing,
    parse,
)

POD = "iris-predictor-00002-deployment-7c9f8d6b5-x2k4q"


def agent_headers(kind: str = RESPONSE_TYPE, event_id: str = "5f0a7d2e-1b7c-4c55-9d9e-0e1",
                  **extra: str) -> dict[str, str]:
    headers = {
        "Ce-Specversion": "1.0",
        "Ce-Id": event_id,
        "Ce-Source": POD,
        "Ce-Type": kind,
        "Ce-Time": "2026-12-04T18:46:07.066554Z",
        "Ce-Recordedtime": "2026-12-04T18:46:07.068113Z",
        "Ce-Inferenceservicename": "iris",
        "Ce-Namespace": "models",
        "Ce-Component": "predictor",
        "Ce-Endpoint": "default",
        "Ce-Metadata": "{}",
        "Content-Type": "application/json",
        "User-Agent": "Go-http-client/1.1",
    }
    headers.update(extra)
    return headers


V1_RESPONSE = b'{"predictions": [0.12, 0.93, 1]}'
V2_RESPONSE = json.dumps({
    "model_name": "iris", "model_version": None, "id": "5f0a7d2e",
    "parameters": None,
    "outputs": [{"name": "output-0", "shape": [3], "datatype": "FP32",
                 "parameters": None, "data": [0.25, 0.5, 0.75]}]}).encode()


def structured(body: bytes, *, base64_data: bool, kind: str = RESPONSE_TYPE) -> bytes:
    event: dict[str, object] = {
        "specversion": "1.0", "id": "e-1", "source": POD, "type": kind,
        "time": "2026-12-04T18:46:07.066554Z", "datacontenttype": "application/json",
        "inferenceservicename": "iris", "namespace": "models", "component": "predictor",
        "endpoint": "canary"}
    if base64_data:
        event["data_base64"] = base64.b64encode(body).decode()
    else:
        event["data"] = json.loads(body)
    return json.dumps(event).encode()


STRUCTURED = {"Content-Type": "application/cloudevents+json; charset=utf-8"}


def test_a_binary_v1_response_carries_its_pod_and_predictions() -> None:
    event = parse(agent_headers(), V1_RESPONSE)
    assert event == LoggedEvent("5f0a7d2e-1b7c-4c55-9d9e-0e1", "response", POD, "models",
                                "iris", "predictor", "default", (0.12, 0.93, 1.0))


def test_a_binary_v2_response_gives_the_first_output() -> None:
    assert parse(agent_headers(), V2_RESPONSE).predictions == (0.25, 0.5, 0.75)


def test_a_v2_output_is_chosen_by_name_and_rows_may_be_nested() -> None:
    body = json.dumps({"outputs": [
        {"name": "probabilities", "shape": [2, 3], "datatype": "FP32", "data": [0.0] * 6},
        {"name": "label", "shape": [2, 1], "datatype": "BYTES",
         "data": [["setosa"], ["virginica"]]}]}).encode()
    assert parse(agent_headers(), body, output="label").predictions == ("setosa", "virginica")
    with pytest.raises(EventUnreadable) as err:
        parse(agent_headers(), body)          # the first output has 3 values per row
    assert err.value.cause == Cause.NOT_SCALAR
    assert "shape [2, 3]" in str(err.value)


@pytest.mark.parametrize("base64_data", [False, True])
@pytest.mark.parametrize("body", [V1_RESPONSE, V2_RESPONSE], ids=["v1", "v2"])
def test_structured_mode_reads_the_same(body: bytes, base64_data: bool) -> None:
    event = parse(STRUCTURED, structured(body, base64_data=base64_data))
    assert (event.id, event.pod, event.endpoint) == ("e-1", POD, "canary")
    assert event.predictions == parse(agent_headers(), body).predictions


def test_a_request_is_read_without_its_body() -> None:
    event = parse(agent_headers(REQUEST_TYPE), b'{"instances": [[6.8, 2.8, 4.8, 1.4]]}')
    assert (event.kind, event.predictions) == ("request", ())
    # a request body is not needed: even an unreadable one is a request to pair
    assert parse(agent_headers(REQUEST_TYPE), b"\x00not json").kind == "request"


def test_class_labels_and_booleans_are_categories() -> None:
    body = b'{"predictions": ["cat", "dog", true, false]}'
    assert parse(agent_headers(), body).predictions == ("cat", "dog", "true", "false")


@pytest.mark.parametrize(("headers", "body", "cause"), [
    ({"Content-Type": "application/json"}, V1_RESPONSE, Cause.NOT_A_CLOUDEVENT),
    (STRUCTURED, b'{"specversion": "1.0", "id": ', Cause.NOT_A_CLOUDEVENT),
    (agent_headers(kind="com.example.other"), V1_RESPONSE, Cause.UNKNOWN_TYPE),
    (agent_headers(**{"Ce-Namespace": ""}), V1_RESPONSE, Cause.MISSING_ATTRIBUTE),
    (agent_headers(), b'{"predictions": [0.1', Cause.BAD_JSON),
    (agent_headers(), b"\xff\xfe", Cause.BAD_JSON),
    (agent_headers(), b"", Cause.BAD_JSON),
    (agent_headers(), b'{"result": 1}', Cause.NO_PREDICTIONS),
    (agent_headers(), b'[0.1, 0.2]', Cause.NO_PREDICTIONS),
    (agent_headers(), b'{"predictions": 0.5}', Cause.NO_PREDICTIONS),
    (agent_headers(), b'{"outputs": []}', Cause.NO_PREDICTIONS),
    (agent_headers(), b'{"outputs": [{"name": "o"}]}', Cause.NO_PREDICTIONS),
    (agent_headers(), b'{"predictions": [[0.1, 0.9]]}', Cause.NOT_SCALAR),
    (agent_headers(), b'{"predictions": [{"score": 1}]}', Cause.NOT_SCALAR),
    (agent_headers(), b'{"predictions": [NaN]}', Cause.NOT_SCALAR),
    (agent_headers(), b'{"predictions": [null]}', Cause.NOT_SCALAR),
], ids=lambda v: v.value if isinstance(v, Cause) else "")
def test_a_malformed_event_is_a_typed_error_naming_its_cause(
        headers: dict[str, str], body: bytes, cause: Cause) -> None:
    with pytest.raises(EventUnreadable) as err:
        parse(headers, body)
    assert err.value.cause == cause
    assert isinstance(err.value, RollwiseError)
    assert cause.value in str(err.value)


def test_the_error_names_the_event() -> None:
    with pytest.raises(EventUnreadable, match=f"event abc from {POD}: bad-json"):
        parse(agent_headers(event_id="abc"), b"{")


def test_too_many_predictions_are_refused() -> None:
    body = json.dumps({"predictions": [0.5] * 11}).encode()
    with pytest.raises(EventUnreadable) as err:
        parse(agent_headers(), body, max_predictions=10)
    assert err.value.cause == Cause.TOO_MANY


def test_pairing_counts_requests_that_never_got_a_response() -> None:
    pairing = Pairing(capacity=2, timeout=10)
    request = parse(agent_headers(REQUEST_TYPE, "r1"), b"{}")
    response = parse(agent_headers(RESPONSE_TYPE, "r1"), V1_RESPONSE)
    assert pairing.request(request, now=0) == 0
    assert pairing.response(response, now=1) == (True, 0)
    assert pairing.response(response, now=1) == (False, 0)   # logged responses only
    assert len(pairing) == 1                                  # (response-only logging)
    assert pairing.expire(now=100) == 0                       # not a loss
    for i in range(3):                                        # capacity 2: the oldest goes
        pairing.request(parse(agent_headers(REQUEST_TYPE, f"q{i}"), b"{}"), now=200)
    assert len(pairing) == 2
    assert pairing.expire(now=213) == 2                       # answered by a 5xx, or lost


def test_a_response_may_arrive_before_its_request() -> None:
    """The agent's workers send concurrently: order is not guaranteed."""
    pairing = Pairing(timeout=10)
    response = parse(agent_headers(RESPONSE_TYPE, "r1"), V1_RESPONSE)
    assert pairing.response(response, now=0) == (False, 0)
    assert pairing.request(parse(agent_headers(REQUEST_TYPE, "r1"), b"{}"), now=1) == 0
    assert len(pairing) == 0 and pairing.expire(now=100) == 0
