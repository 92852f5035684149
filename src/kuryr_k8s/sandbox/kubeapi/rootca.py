"""The ``kube-root-ca.crt`` ConfigMap a real cluster publishes in every namespace.

kube-controller-manager's root-ca-cert-publisher writes the cluster CA bundle there, and the
projected ``kube-api-access-*`` volume of every pod refers to it. The emulator serves plain
HTTP, so its CA signs nothing: it is a self-signed certificate made once per state (kept in
``kube-system/kube-root-ca.crt`` and reused after a restart), so the ConfigMap has the real
shape and content type.
"""

from __future__ import annotations

import datetime

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


def new_ca_pem() -> str:
    """A self-signed CA certificate (EC P-256, ten years), PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kuryr-kubeapi-emulator-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def configmap(ca_pem: str) -> dict[str, object]:
    return {
        "metadata": {"name": NAME, "annotations": {"kubernetes.io/description": DESCRIPTION}},
        "data": {"ca.crt": ca_pem},
    }
