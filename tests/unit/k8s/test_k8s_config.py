"""Kubeconfig and in-cluster settings."""

from __future__ import annotations

import base64
import ssl
import subprocess
from pathlib import Path

import pytest

from kuryr_k8s.k8s import KubeSettings, load_incluster, load_kubeconfig
from kuryr_k8s.model.errors import ConfigError

pytestmark = pytest.mark.unit


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    d = tmp_path_factory.mktemp("pki")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test",
            "-keyout",
            str(d / "k.pem"),
            "-out",
            str(d / "c.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return (d / "c.pem").read_bytes(), (d / "k.pem").read_bytes()


def test_current_context_with_files_relative_to_kubeconfig(
    tmp_path: Path, cert_pair: tuple[bytes, bytes]
) -> None:
    cert, key = cert_pair
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_bytes(cert)
    (tmp_path / "pki" / "user.crt").write_bytes(cert)
    (tmp_path / "pki" / "user.key").write_bytes(key)
    kc = write(
        tmp_path / "config",
        """
apiVersion: v1
kind: Config
current-context: dev
contexts:
- name: other
  context: {cluster: c2, user: u2}
- name: dev
  context: {cluster: c1, user: u1, namespace: kuryr}
clusters:
- name: c1
  cluster: {server: "https://10.0.0.1:6443/", certificate-authority: pki/ca.crt}
- name: c2
  cluster: {server: "https://other:6443", insecure-skip-tls-verify: true}
users:
- name: u1
  user: {client-certificate: pki/user.crt, client-key: pki/user.key}
- name: u2
  user: {token: abc}
""",
    )
    s = load_kubeconfig(kc)
    assert s.server == "https://10.0.0.1:6443"
    assert s.namespace == "kuryr"
    assert s.ca_data == cert and s.client_cert_data == cert and s.client_key_data == key
    assert isinstance(s.ssl_context(), ssl.SSLContext)
    other = load_kubeconfig(kc, context="other")
    assert other.insecure_skip_tls_verify and other.bearer_token() == "abc"
    assert other.ssl_context().verify_mode == ssl.CERT_NONE


def test_inline_base64_data_and_token_file(tmp_path: Path, cert_pair: tuple[bytes, bytes]) -> None:
    cert, key = cert_pair
    b64 = {n: base64.b64encode(v).decode() for n, v in (("c", cert), ("k", key))}
    write(tmp_path / "tok", "s3cret\n")
    kc = write(
        tmp_path / "config",
        f"""
current-context: x
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
clusters: [{{name: c, cluster: {{server: "https://h", certificate-authority-data: {b64["c"]}}}}}]
users:
- name: u
  user: {{tokenFile: tok, client-certificate-data: {b64["c"]}, client-key-data: {b64["k"]}}}
""",
    )
    s = load_kubeconfig(kc)
    assert s.ca_data == cert and s.client_key_data == key
    assert s.bearer_token() == "s3cret"
    s.ssl_context()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("current-context: nope\ncontexts: []\n", "no context named 'nope'"),
        ("contexts: []\n", "no current-context"),
        ("- a list\n", "not a YAML mapping"),
        (
            "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
            "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
            "users: [{name: u, user: {exec: {command: aws}}}]\n",
            "exec/auth-provider",
        ),
        (
            "current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
            "clusters: [{name: c, cluster: {server: 'https://h', "
            "certificate-authority-data: '!!notbase64'}}]\n",
            "not valid base64",
        ),
    ],
)
def test_bad_kubeconfig_names_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_kubeconfig(write(tmp_path / "config", text))


def test_incluster(tmp_path: Path) -> None:
    write(tmp_path / "token", "tkn")
    write(tmp_path / "namespace", "kube-system\n")
    (tmp_path / "ca.crt").write_bytes(b"CA")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    s = load_incluster(env, sa_dir=tmp_path)
    assert s == KubeSettings(
        server="https://[fd00::1]:443",
        namespace="kube-system",
        token_file=tmp_path / "token",
        ca_data=b"CA",
    )
    assert s.bearer_token() == "tkn"
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST"):
        load_incluster({}, sa_dir=tmp_path)
