"""Seals: proof that an annotation value was written by Rollwise, for this object.

Anyone who may patch an InferenceService may write any annotation, so nothing Rollwise
reads back from one can be trusted because of where it sits: not the rollout state, not
the last promoted predictor spec it may restore, not a Slack message reference, not an
operator command's claimed author. Each of these is a JSON object carrying a ``seal``:
HMAC-SHA256 over (purpose, object uid, canonical JSON of every other field) with a key
only the controller holds (``controller.kube.sealkey``). A value whose seal does not verify was
not written by Rollwise for this object and is refused (``Unsealed``).

- The purpose ("rollout", "last-good", "command", ...) keeps a value sealed for one use
  from being accepted for another; the uid keeps one object's values off another object
  (a copied state or command does not verify elsewhere, and a deleted and re-created
  object has a new uid).
- Several keys verify (the first one seals), so the key can be rotated: add the new key
  first, keep the old one until every object was written again.
- What a seal does not prevent: putting back an older value Rollwise once wrote for the
  same object and purpose. For the state that means going back in time to an earlier
  point of the same rollout (the next tick re-reads KServe's status and moves on); for a
  command, its id is remembered once handled.

Pure: ``hmac``, ``hashlib`` and ``json`` from the standard library; no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any

from controller.errors import StateUnreadable

SEAL_FIELD = "seal"
MIN_KEY_BYTES = 32


class Unsealed(StateUnreadable):
    """The value carries no seal, or one that does not verify for this object."""


def canonical(payload: Mapping[str, Any]) -> str:
    """The one text a payload is sealed as: sorted keys, no spaces, without the seal."""
    return json.dumps({k: v for k, v in payload.items() if k != SEAL_FIELD}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class Sealer:
    """Seals and verifies annotation values with the controller's keys."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("a sealer needs at least one key")
        short = [i for i, k in enumerate(keys) if len(k) < MIN_KEY_BYTES]
        if short:
            raise ValueError(f"seal key {short[0] + 1} is shorter than {MIN_KEY_BYTES} bytes")
        self._keys = tuple(bytes(k) for k in keys)

    def _tag(self, key: bytes, purpose: str, uid: str, payload: Mapping[str, Any]) -> str:
        message = "\0".join((purpose, uid, canonical(payload))).encode()
        digest = hmac.new(key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def seal(self, purpose: str, uid: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``payload`` with its seal added (any seal it carried is replaced)."""
        if not uid:
            raise ValueError("cannot seal a value for an object without a uid")
        sealed = {k: v for k, v in payload.items() if k != SEAL_FIELD}
        sealed[SEAL_FIELD] = self._tag(self._keys[0], purpose, uid, sealed)
        return sealed

    def seal_text(self, purpose: str, uid: str, payload: Mapping[str, Any]) -> str:
        """The sealed payload as annotation text."""
        return canonical_with_seal(self.seal(purpose, uid, payload))

    def verify(self, purpose: str, uid: str, payload: Mapping[str, Any]) -> bool:
        tag = payload.get(SEAL_FIELD)
        if not isinstance(tag, str) or not uid:
            return False
        try:
            return any(hmac.compare_digest(self._tag(k, purpose, uid, payload), tag)
                       for k in self._keys)
        except ValueError:  # NaN or infinity in the payload: never ours
            return False

    def open(self, purpose: str, uid: str, text: str, *, what: str) -> dict[str, Any]:
        """The fields of a sealed annotation value (without the seal); ``Unsealed`` naming
        ``what`` when it is not a JSON object Rollwise sealed for this object."""
        try:
            payload = json.loads(text)
        except ValueError as err:
            raise Unsealed(f"{what} is not JSON: {err}") from err
        if not isinstance(payload, dict):
            raise Unsealed(f"{what} is not a JSON object")
        if SEAL_FIELD not in payload:
            raise Unsealed(f"{what} has no seal: it was not written by Rollwise")
        if not self.verify(purpose, uid, payload):
            raise Unsealed(f"{what} has a seal that does not verify for this object: it was "
                           "changed, copied from another object, or sealed with another key")
        return {k: v for k, v in payload.items() if k != SEAL_FIELD}


def canonical_with_seal(payload: Mapping[str, Any]) -> str:
    return json.dumps(dict(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
