"""The webhook's TLS listener picks up a renewed certificate without a restart."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from controller.server import HttpServer, Request, Response
from simulations.kube.certs import write_serving_pair


def _ok(_: Request) -> Response:
    return Response(200, b"ok\n")


def _served_certificate(port: int, ca_pem: bytes) -> x509.Certificate:
    client = ssl.create_default_context(cadata=ca_pem.decode())
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert tls.recv(64).startswith(b"HTTP/1.1 200")
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _mount(pair_dir: Path, mount: Path) -> None:
    """Swap the "mounted Secret" to ``pair_dir`` the way the kubelet does: one symlink flip."""
    link = mount / "..data"
    tmp = mount / "..data_tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(pair_dir)
    os.replace(tmp, link)
    for name in ("tls.crt", "tls.key"):
        if not (mount / name).is_symlink():
            (mount / name).symlink_to(Path("..data") / name)


@pytest.fixture
def mount(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """A mounted Secret with the pair in ``first``; ``second`` is its renewal."""
    secret = tmp_path / "mount"
    secret.mkdir()
    cas = [write_serving_pair(tmp_path / name, ["127.0.0.1"])[2] for name in ("first", "second")]
    _mount(tmp_path / "first", secret)
    return secret, cas


@pytest.fixture
def server(mount: tuple[Path, list[bytes]]) -> Iterator[HttpServer]:
    secret, _ = mount
    server = HttpServer("127.0.0.1:0", {("GET", "/healthz"): _ok}, secret / "tls.crt",
                        secret / "tls.key", tls_check_seconds=0.0)
    server.start()
    yield server
    server.stop()


def test_a_renewed_certificate_is_served_without_a_restart(
        server: HttpServer, mount: tuple[Path, list[bytes]], tmp_path: Path) -> None:
    secret, (first_ca, second_ca) = mount
    before = _served_certificate(server.port, first_ca)
    _mount(tmp_path / "second", secret)
    after = _served_certificate(server.port, second_ca)
    assert after.serial_number != before.serial_number
    # The old CA no longer verifies: the listener really serves the new pair.
    with pytest.raises(ssl.SSLCertVerificationError):
        _served_certificate(server.port, first_ca)


def test_a_broken_renewal_keeps_the_current_certificate(
        server: HttpServer, mount: tuple[Path, list[bytes]], tmp_path: Path) -> None:
    secret, (first_ca, _) = mount
    before = _served_certificate(server.port, first_ca)
    # A half-written renewal: the new certificate with the old key.
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(tmp_path / "second" / "tls.crt", broken / "tls.crt")
    shutil.copy(tmp_path / "first" / "tls.key", broken / "tls.key")
    _mount(broken, secret)
    assert _served_certificate(server.port, first_ca).serial_number == before.serial_number
    # Once the pair is whole again, it is loaded.
    _mount(tmp_path / "second", secret)
    with pytest.raises(ssl.SSLCertVerificationError):
        _served_certificate(server.port, first_ca)


def test_an_unloadable_certificate_at_start_is_an_error(tmp_path: Path) -> None:
    cert, _, _ = write_serving_pair(tmp_path / "a", ["127.0.0.1"])
    _, other_key, _ = write_serving_pair(tmp_path / "b", ["127.0.0.1"])
    server = HttpServer("127.0.0.1:0", {("GET", "/healthz"): _ok}, cert, other_key)
    with pytest.raises(ssl.SSLError):
        server.start()
