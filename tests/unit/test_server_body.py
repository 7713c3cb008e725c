"""A body up to the route's limit is served, however much larger than the head's 64 KiB.

Found by the fault chaos (tests/chaos/test_faults_chaos.py): the request's read budget was
armed once, for the request line and headers (64 KiB), and never for the body, so every
body over ~64 KiB was refused as "request line and headers longer than 65536 bytes" (431),
whatever ``max_body`` said (1 MiB). The admission webhook got AdmissionReviews of objects
with large annotations (object and oldObject together) that way, and the API server told
the writer only "failed calling webhook ... 431"."""

from __future__ import annotations

import pytest

from controller.server import MAX_BODY, MAX_HEAD
from tests.unit.test_server_limits import Face, exchange, face, post, read_answer

__all__ = ["face"]


@pytest.mark.parametrize("size", [MAX_HEAD + 1, 300_000, MAX_BODY])
def test_a_body_larger_than_the_head_budget_is_served(face: Face, size: int) -> None:
    body = bytes(i % 251 for i in range(size))
    answer = exchange(face, post("/echo", f"Content-Length: {size}\r\n", body))
    assert answer is not None and answer.status == 200, answer
    assert answer.body == body
    assert face.errors == []


def test_keep_alive_after_a_large_body_still_limits_the_next_head(face: Face) -> None:
    body = b"x" * 200_000
    with face.connect() as sock:
        sock.sendall(post("/echo", f"Content-Length: {len(body)}\r\n", body))
        first = read_answer(sock)
        assert first is not None and first.status == 200 and first.body == body
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD + 10)
                     + b"\r\n\r\n")
        second = read_answer(sock)
        assert second is not None and second.status == 431
