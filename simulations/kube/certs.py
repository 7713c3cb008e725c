"""Certificates and keys for the simulated control plane.

Generates, with the `cryptography` package, a throwaway certificate authority, a
serving certificate for kube-apiserver valid for 127.0.0.1 and localhost, and the
key pair kube-apiserver signs service-account tokens with. Every run gets fresh
material, so nothing secret is ever stored or shared between runs.

I/O: `write_control_plane_pki` writes PEM files into the control plane's workdir.
Caller: simulations.kube.controlplane.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Short-lived on purpose: a control plane lives for one test session.
_VALIDITY = datetime.timedelta(days=2)
# Tolerates a small clock skew between this process and the servers it starts.
_BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class ControlPlanePki:
    """Paths of the PEM files kube-apiserver and its clients need."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    service_account_key: Path
    service_account_public_key: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: fast to generate (RSA-2048 takes ~100x longer) and accepted by
    # Go's TLS stack and by kube-apiserver for service-account token signing.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rollwise-simulation"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             now: datetime.datetime) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
    )


def _ca(now: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    name = _name("rollwise-simulation-ca")
    cert = (
        _builder(name, name, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


# Loopback names for clients on this machine; the in-cluster names so that a client
# built from in-cluster defaults would still verify the API server's certificate.
_APISERVER_HOSTS = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                    "127.0.0.1")


def _serving(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
             now: datetime.datetime, hosts: Sequence[str] = _APISERVER_HOSTS,
             common_name: str = "kube-apiserver",
             ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = (
        _builder(_name(common_name), ca_cert.subject, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def write_control_plane_pki(directory: Path) -> ControlPlanePki:
    """Generate a CA, a loopback serving certificate and a token-signing key into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_cert = _ca(now)
    serving_key, serving_cert = _serving(ca_key, ca_cert, now)
    sa_key = _new_key()
    pki = ControlPlanePki(
        ca_cert=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        service_account_key=directory / "service-account.key",
        service_account_public_key=directory / "service-account.pub",
    )
    pki.ca_cert.write_bytes(_cert_pem(ca_cert))
    pki.serving_cert.write_bytes(_cert_pem(serving_cert))
    _write_private(pki.serving_key, _key_pem(serving_key))
    _write_private(pki.service_account_key, _key_pem(sa_key))
    pki.service_account_public_key.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def write_serving_pair(directory: Path, hosts: Sequence[str],
                       common_name: str = "rollwise-webhook") -> tuple[Path, Path, bytes]:
    """A fresh CA and a serving certificate for ``hosts`` (e.g. the admission webhook on
    127.0.0.1): returns the certificate and key paths and the CA bundle (PEM) that the
    API server must trust."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_cert = _ca(now)
    key, cert = _serving(ca_key, ca_cert, now, hosts, common_name)
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(_cert_pem(cert))
    _write_private(key_path, _key_pem(key))
    return cert_path, key_path, _cert_pem(ca_cert)


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600)
    path.write_bytes(data)
