"""The ``kube-root-ca.crt`` ConfigMap a real cluster publishes in every namespace.

kube-controller-manager's root-ca-cert-publisher writes the cluster CA bundle there, and the
projected ``kube-api-access-*`` volume of every pod refers to it. The emulator serves plain
HTTP, so its CA signs nothing: it is a self-signed certificate made once per state (kept in
``kube-system/kube-root-ca.crt`` and reused after a restart), so the ConfigMap has the real
shape and content type.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
    "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
    "guaranteed across distributions of Kubernetes clusters."
)
NAME = "kube-root-ca.crt"


def _self_signed(
    common_name: str, extension: x509.ExtensionType, critical: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed certificate (EC P-256, ten years) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(extension, critical=critical)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def new_ca_pem() -> str:
    """A self-signed CA certificate (EC P-256, ten years), PEM."""
    cert, _ = _self_signed(
        "kuryr-kubeapi-emulator-ca", x509.BasicConstraints(ca=True, path_length=None), True
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def configmap(ca_pem: str) -> dict[str, object]:
    return {
        "metadata": {"name": NAME, "annotations": {"kubernetes.io/description": DESCRIPTION}},
        "data": {"ca.crt": ca_pem},
    }


def self_signed_server_context(host: str) -> ssl.SSLContext:
    """A TLS server context with a throw-away self-signed certificate for ``host`` (the
    optional HTTPS listener: clients use ``insecure-skip-tls-verify``)."""
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    cert, key = _self_signed("kuryr-kubeapi-emulator", x509.SubjectAlternativeName([alt]), False)
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert_file, key_file)
    return ctx
