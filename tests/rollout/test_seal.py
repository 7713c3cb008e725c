"""Seals (controller/rollout/seal.py) and seal keys (controller/sealkey.py), directly."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.kube.sealkey import SealKeyError, from_file, parse_keys
from controller.rollout.seal import SEAL_FIELD, Sealer, Unsealed

KEY_A, KEY_B = b"A" * 32, b"B" * 32

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                          allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children,
                                                                      max_size=4),
    max_leaves=20)


@given(st.dictionaries(st.text().filter(lambda k: k != SEAL_FIELD), json_values, max_size=6))
def test_a_sealed_value_survives_the_trip_through_an_annotation(payload: dict[str, object]
                                                                ) -> None:
    sealer = Sealer([KEY_A])
    text = sealer.seal_text("rollout", "uid-1", payload)
    reread = json.loads(json.dumps(json.loads(text)))           # as the API server returns it
    assert sealer.open("rollout", "uid-1", json.dumps(reread), what="v") == payload


@pytest.mark.parametrize(("purpose", "uid", "key"), [
    ("command", "uid-1", KEY_A),     # sealed for another purpose
    ("rollout", "uid-2", KEY_A),     # for another object
    ("rollout", "uid-1", KEY_B),     # with another key
])
def test_a_seal_binds_purpose_object_and_key(purpose: str, uid: str, key: bytes) -> None:
    text = Sealer([key]).seal_text(purpose, uid, {"step": 1})
    with pytest.raises(Unsealed, match="does not verify"):
        Sealer([KEY_A]).open("rollout", "uid-1", text, what="state")


def test_any_change_breaks_the_seal_and_key_order_does_not_matter() -> None:
    sealer = Sealer([KEY_A])
    sealed = sealer.seal("rollout", "u", {"a": 1, "b": [1, 2]})
    assert sealer.verify("rollout", "u", dict(reversed(list(sealed.items()))))
    assert not sealer.verify("rollout", "u", {**sealed, "b": [1, 2, 3]})
    assert not sealer.verify("rollout", "u", {**sealed, "extra": None})


def test_rotation_verifies_old_seals_and_seals_with_the_new_key() -> None:
    old = Sealer([KEY_A]).seal_text("rollout", "u", {"x": 1})
    rotated = Sealer([KEY_B, KEY_A])
    assert rotated.open("rollout", "u", old, what="v") == {"x": 1}
    fresh = rotated.seal_text("rollout", "u", {"x": 1})
    assert Sealer([KEY_B]).open("rollout", "u", fresh, what="v") == {"x": 1}
    with pytest.raises(Unsealed):
        Sealer([KEY_A]).open("rollout", "u", fresh, what="v")


@pytest.mark.parametrize(("text", "why"), [
    ("not json", "not JSON"), ("[1, 2]", "not a JSON object"), ('{"x": 1}', "no seal"),
    ('{"x": NaN, "seal": "abc"}', "does not verify"),
])
def test_what_is_not_a_sealed_object_says_why(text: str, why: str) -> None:
    with pytest.raises(Unsealed, match=why):
        Sealer([KEY_A]).open("rollout", "u", text, what="v")


def test_short_keys_and_missing_uids_are_refused() -> None:
    with pytest.raises(ValueError, match="shorter than 32 bytes"):
        Sealer([b"short"])
    with pytest.raises(ValueError, match="without a uid"):
        Sealer([KEY_A]).seal("rollout", "", {})
    assert not Sealer([KEY_A]).verify("rollout", "", {"seal": "x"})


def test_key_files_hold_base64_keys_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(f"# current first\n{base64.b64encode(KEY_B).decode()}\n\n"
                    f"{base64.b64encode(KEY_A).decode()}\n")
    sealer = from_file(path)
    assert Sealer([KEY_A]).verify("p", "u", sealer.seal("p", "u", {})) is False
    assert sealer.verify("p", "u", Sealer([KEY_A]).seal("p", "u", {}))
    for text, why in (("", "no key"), ("!!!\n", "not base64"),
                      (base64.b64encode(b"tiny").decode(), "at least 32 bytes")):
        with pytest.raises(SealKeyError, match=why):
            parse_keys(text, "f")
    with pytest.raises(SealKeyError, match="cannot read"):
        from_file(tmp_path / "missing")
