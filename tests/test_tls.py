"""HTTPS upstreams: verified against the system trust store plus a route's ``ca_file``."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support import make_config, proxy_url, start_service
from treq.client import HTTPClient
from twisted.internet import reactor, ssl

from logproxy.mockllm import build_site


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca_and_leaf(tmp_path: Any) -> tuple[str, bytes]:
    """A private CA (written to ``ca.pem``) and a leaf for localhost/127.0.0.1 (PEM key+cert)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("logproxy test CA"))
        .issuer_name(_name("logproxy test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = tmp_path / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + leaf.public_bytes(serialization.Encoding.PEM)
    return str(ca_path), pem


@pytest.fixture
def tls_upstream(tmp_path: Any) -> Generator[tuple[str, str], None, None]:
    """The mock LLM over HTTPS with a certificate from a private CA: (base URL, ca path)."""
    ca_path, pem = make_ca_and_leaf(tmp_path)
    options = ssl.PrivateCertificate.loadPEM(pem).options()
    port = reactor.listenSSL(0, build_site(reactor), options, interface="127.0.0.1")
    yield f"https://localhost:{port.getHost().port}", ca_path
    pytest_twisted.blockon(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_private_ca_is_trusted_only_by_its_route(
    tmp_path: Any, tls_upstream: tuple[str, str], http: HTTPClient, services: list[Any]
) -> None:
    base, ca_path = tls_upstream
    routes = {
        "private": {"pattern": "/private/", "destination": f"{base}/v1/", "ca_file": ca_path},
        "public": {"pattern": "/public/", "destination": f"{base}/v1/"},
    }
    service = start_service(make_config(tmp_path, routes))
    services.append(service)

    response = await http.get(proxy_url(service, "/private/models"))
    assert response.code == 200
    assert (await response.json())["data"]

    response = await http.get(proxy_url(service, "/public/models"))
    assert response.code == 502
    message = (await response.json())["error"]["message"]
    assert "certificate" in message.lower(), message


@pytest_twisted.ensureDeferred
async def test_ssl_cert_file_is_honoured(
    tmp_path: Any,
    tls_upstream: tuple[str, str],
    http: HTTPClient,
    services: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, ca_path = tls_upstream
    monkeypatch.setenv("SSL_CERT_FILE", ca_path)
    routes = {"public": {"pattern": "/public/", "destination": f"{base}/v1/"}}
    service = start_service(make_config(tmp_path, routes))
    services.append(service)
    response = await http.get(proxy_url(service, "/public/models"))
    assert response.code == 200
    await response.content()


@pytest_twisted.ensureDeferred
async def test_hostname_must_match_the_certificate(
    tmp_path: Any, tls_upstream: tuple[str, str], http: HTTPClient, services: list[Any]
) -> None:
    base, ca_path = tls_upstream
    port = base.rsplit(":", 1)[1]
    wrong = f"https://127.0.0.2:{port}/v1/"  # not in the certificate's names
    routes = {"wrong": {"pattern": "/wrong/", "destination": wrong, "ca_file": ca_path}}
    service = start_service(make_config(tmp_path, routes))
    services.append(service)
    response = await http.get(proxy_url(service, "/wrong/models"))
    assert response.code == 502
    await response.content()
