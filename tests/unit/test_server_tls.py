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
def pairs(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    mount = tmp_path / "mount"
    mount.mkdir()
    cas = []
    for name in ("first", "second"):
        _, _, ca = write_serving_pair(tmp_path / name, ["127.0.0.1"])
        cas.append(ca)
    _mount(tmp_path / "first", mount)
    yield mount, cas


def test_a_renewed_certificate_is_served_without_a_restart(
        pairs: tuple[Path, list[bytes]], tmp_path: Path) -> None:
    mount, (first_ca, second_ca) = pairs
    server = HttpServer("127.0.0.1:0", {("GET", "/healthz"): _ok}, mount / "tls.crt",
                        mount / "tls.key", tls_check_seconds=0.0)
    server.start()
    try:
        before = _served_certificate(server.port, first_ca)
        _mount(tmp_path / "second", mount)
        after = _served_certificate(server.port, second_ca)
        assert after.serial_number != before.serial_number
        # The old CA no longer verifies: the listener really serves the new pair.
        with pytest.raises(ssl.SSLCertVerificationError):
            _served_certificate(server.port, first_ca)
    finally:
        server.stop()


def test_a_broken_renewal_keeps_the_current_certificate(
        pairs: tuple[Path, list[bytes]], tmp_path: Path) -> None:
    mount, (first_ca, _) = pairs
    server = HttpServer("127.0.0.1:0", {("GET", "/healthz"): _ok}, mount / "tls.crt",
                        mount / "tls.key", tls_check_seconds=0.0)
    server.start()
    try:
        before = _served_certificate(server.port, first_ca)
        # A half-written renewal: the new certificate with the old key.
        broken = tmp_path / "broken"
        broken.mkdir()
        shutil.copy(tmp_path / "second" / "tls.crt", broken / "tls.crt")
        shutil.copy(tmp_path / "first" / "tls.key", broken / "tls.key")
        _mount(broken, mount)
        assert _served_certificate(server.port, first_ca).serial_number == before.serial_number
        # Once the pair is whole again, it is loaded.
        _mount(tmp_path / "second", mount)
        with pytest.raises(ssl.SSLCertVerificationError):
            _served_certificate(server.port, first_ca)
    finally:
        server.stop()


def test_an_unloadable_certificate_at_start_is_an_error(tmp_path: Path) -> None:
    cert, _, _ = write_serving_pair(tmp_path / "a", ["127.0.0.1"])
    _, other_key, _ = write_serving_pair(tmp_path / "b", ["127.0.0.1"])
    server = HttpServer("127.0.0.1:0", {("GET", "/healthz"): _ok}, cert, other_key)
    with pytest.raises(ssl.SSLError):
        server.start()
