"""Where the controller's seal key comes from (``controller.rollout.seal``). I/O.

Either a file the operator mounts (``ROLLWISE_SEAL__KEY_FILE``: one base64 key per line,
the first seals, all verify, so a key is rotated by putting the new one first), or, by
default, the Secret ``rollwise-seal`` in the controller's namespace, which the first
replica to start creates with 32 random bytes (as Argo CD generates its server secret);
every replica then reads the same key. RBAC: get on that one Secret, create on Secrets in
the controller's namespace (create cannot be limited by name). A controller without its
key cannot tell its own writes from anyone's, so failing to get one fails the start.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.rollout.seal import MIN_KEY_BYTES, Sealer

log = structlog.get_logger(__name__)
# The Secret holds text in the key file's format: `kubectl create secret generic
# rollwise-seal --from-literal=key="$(openssl rand -base64 32)"` makes a valid one.
KEY_FIELD = "key"               # the key that seals, base64
PREVIOUS_FIELD = "previous"     # older keys that still verify, one base64 key per line
ATTEMPTS = 30


class SealKeyError(Exception):
    """No usable seal key; the message says where it looked."""


def parse_keys(text: str, where: str) -> list[bytes]:
    """Base64 keys, one per line (blank lines and # comments ignored)."""
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError) as err:
            raise SealKeyError(f"{where}:{number}: not base64: {err}") from err
        if len(key) < MIN_KEY_BYTES:
            raise SealKeyError(f"{where}:{number}: a key needs at least {MIN_KEY_BYTES} bytes, "
                               f"got {len(key)} (generate one with `openssl rand -base64 32`)")
        keys.append(key)
    if not keys:
        raise SealKeyError(f"{where}: no key")
    return keys


def from_file(path: Path) -> Sealer:
    try:
        text = path.read_text()
    except OSError as err:
        raise SealKeyError(f"cannot read the seal key file {path}: {err.strerror}") from err
    return Sealer(parse_keys(text, str(path)))


def from_secret(api: client.ApiClient, namespace: str, name: str, *,
                sleep: Callable[[float], None] = time.sleep) -> Sealer:
    """Read the Secret, creating it with a fresh random key when it does not exist; retried
    while the API server is unreachable (the controller cannot start without it)."""
    core = client.CoreV1Api(api)
    where = f"Secret {namespace}/{name}"
    last: Exception | None = None
    for attempt in range(ATTEMPTS):
        try:
            return _read_or_create(core, namespace, name, where)
        except SealKeyError:
            raise
        except ApiException as err:
            if err.status in (401, 403):
                raise SealKeyError(f"{where}: not allowed ({err.status} {err.reason}); the "
                                   "controller needs get on it and create on Secrets in "
                                   f"{namespace} (deploy/rbac)") from err
            last = err
        except Exception as err:  # connection refused, timeouts: the API may be starting
            last = err
        log.warning("seal key not available yet; retrying", secret=where, error=str(last))
        sleep(min(2.0, 0.2 * (attempt + 1)))
    raise SealKeyError(f"{where}: unavailable after {ATTEMPTS} attempts: {last}")


def _read_or_create(core: client.CoreV1Api, namespace: str, name: str, where: str) -> Sealer:
    try:
        secret = core.read_namespaced_secret(name, namespace, _request_timeout=10)
    except ApiException as err:
        if err.status != 404:
            raise
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace,
                                         labels={"app.kubernetes.io/name": "rollwise"}),
            type="Opaque",
            string_data={KEY_FIELD: base64.b64encode(secrets.token_bytes(32)).decode()})
        try:
            secret = core.create_namespaced_secret(namespace, body, _request_timeout=10)
            log.info("created the seal key", secret=where)
        except ApiException as created:
            if created.status != 409:
                raise
            # Another replica created it first: use theirs.
            secret = core.read_namespaced_secret(name, namespace, _request_timeout=10)
    data = secret.data or {}
    if KEY_FIELD not in data:
        raise SealKeyError(f"{where} has no '{KEY_FIELD}' field")
    try:
        text = "\n".join(base64.b64decode(data[f]).decode() for f in (KEY_FIELD, PREVIOUS_FIELD)
                         if f in data)
    except (binascii.Error, UnicodeDecodeError) as err:
        raise SealKeyError(f"{where}: not text: {err}") from err
    return Sealer(parse_keys(text, where))
