"""Predictions in a KServe response body (v1 and Open Inference Protocol v2), and the
typed error of a body or event that cannot be read.

Pure, standard library only (``controller.errors`` is too): shared by the sink's event
parser (``events``) and by ``model_helper``, which runs inside a model server.

- KServe v1: ``{"predictions": [...]}``, one scalar per instance.
- Open Inference Protocol v2: ``{"outputs": [{"name", "datatype", "shape", "data"}]}``;
  the output named by ``output`` (else the first), one scalar per row (``shape`` ``[n]`` or
  ``[n, 1]``; ``data`` flat or nested by row).

A number is a numeric prediction (a score, a regression value); a string or a boolean is a
class label (``BYTES``/``BOOL`` outputs). A prediction that is itself a vector (class
probabilities) is refused (``not-scalar``): export the score you want to watch.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

from controller.errors import RollwiseError

MAX_PREDICTIONS = 10_000
MAX_LABEL = 64     # longest class label kept as a label value

Prediction = float | str


class Cause(StrEnum):
    """Why an event could not be read; a label value of the sink's counters."""

    NOT_A_CLOUDEVENT = "not-a-cloudevent"
    UNKNOWN_TYPE = "unknown-type"
    MISSING_ATTRIBUTE = "missing-attribute"
    BAD_JSON = "bad-json"
    NO_PREDICTIONS = "no-predictions"
    NOT_SCALAR = "not-scalar"
    TOO_MANY = "too-many-predictions"


class EventUnreadable(RollwiseError):
    """A request to the sink that is not a readable KServe logger event. ``cause`` says
    why (a ``Cause``), the message names the event (its id and source, when known)."""

    def __init__(self, cause: Cause, detail: str, event: str = "") -> None:
        super().__init__(f"event {event or '<unnamed>'}: {cause.value}: {detail}")
        self.cause = cause
        self.detail = detail


def predictions_of(payload: object, *, output: str | None = None,
                   limit: int = MAX_PREDICTIONS) -> tuple[Prediction, ...]:
    """The scalar predictions of a v1 or v2 response body (already JSON-decoded)."""
    if not isinstance(payload, dict):
        raise EventUnreadable(Cause.NO_PREDICTIONS, "the body is not a JSON object")
    if "predictions" in payload:
        rows = payload["predictions"]
        if not isinstance(rows, list):
            raise EventUnreadable(Cause.NO_PREDICTIONS, "predictions is not a list")
    elif "outputs" in payload:
        rows = _v2_rows(payload["outputs"], output)
    else:
        raise EventUnreadable(Cause.NO_PREDICTIONS, "neither predictions (v1) nor outputs (v2)")
    if len(rows) > limit:
        raise EventUnreadable(Cause.TOO_MANY, f"{len(rows)} predictions, at most {limit}")
    return tuple(_scalar(row) for row in rows)


def _v2_rows(outputs: object, wanted: str | None) -> list[Any]:
    if not isinstance(outputs, list) or not outputs or not all(
            isinstance(o, dict) for o in outputs):
        raise EventUnreadable(Cause.NO_PREDICTIONS, "outputs is not a list of tensors")
    chosen = outputs[0] if wanted is None else next(
        (o for o in outputs if o.get("name") == wanted), None)
    if chosen is None:
        names = [str(o.get("name"))[:40] for o in outputs[:5]]
        raise EventUnreadable(Cause.NO_PREDICTIONS, f"no output named {wanted!r} in {names}")
    data, shape = chosen.get("data"), chosen.get("shape")
    if not isinstance(data, list):
        raise EventUnreadable(Cause.NO_PREDICTIONS, f"output {chosen.get('name')!r} has no data")
    if isinstance(shape, list) and len(shape) > 1 and any(
            not isinstance(d, int) or d != 1 for d in shape[1:]):
        raise EventUnreadable(Cause.NOT_SCALAR, f"output {chosen.get('name')!r} has shape "
                                                f"{shape[:4]}: more than one value per row")
    # Some servers nest data by row ([[0.1], [0.9]]): one value per row unwraps.
    return [row[0] if isinstance(row, list) and len(row) == 1 else row for row in data]


def _scalar(value: object) -> Prediction:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            raise EventUnreadable(Cause.NOT_SCALAR, f"prediction {value!r} is not finite")
        return number
    if isinstance(value, str):
        return value[:MAX_LABEL]
    raise EventUnreadable(Cause.NOT_SCALAR,
                          f"a prediction is a {type(value).__name__}, not a number or a label")


