"""The test helpers' kubeconfig reader (what lets the suites run against real clusters)."""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.kubeapi import KubeConfig, resource_path

pytestmark = pytest.mark.unit


def _write(tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "contexts": [
            {"name": "c", "context": {"cluster": "k", "user": "u"}},
            {"name": "other", "context": {"cluster": "k", "user": "u2"}},
        ],
        "clusters": [{"name": "k", "cluster": cluster}],
        "users": [{"name": "u", "user": user}, {"name": "u2", "user": {"token": "two"}}],
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
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
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_plain_http_without_credentials(tmp_path: Path) -> None:
    cfg = KubeConfig.load(_write(tmp_path, {"server": "http://127.0.0.1:1234/"}, {}))
    assert cfg.server == "http://127.0.0.1:1234"
    assert cfg.headers == {} and cfg.auth is None


def test_token_file_and_context(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("secret-token\n")
    path = _write(
        tmp_path,
        {"server": "https://k:6443", "insecure-skip-tls-verify": True},
        {"tokenFile": "token"},
    )
    cfg = KubeConfig.load(path)
    assert cfg.headers["Authorization"] == "Bearer secret-token"
    assert isinstance(cfg.verify, ssl.SSLContext)
    assert cfg.verify.verify_mode == ssl.CERT_NONE
    assert KubeConfig.load(path, "other").headers["Authorization"] == "Bearer two"


def test_basic_auth(tmp_path: Path) -> None:
    cfg = KubeConfig.load(
        _write(tmp_path, {"server": "http://k"}, {"username": "admin", "password": "pw"})
    )
    assert cfg.auth == ("admin", "pw")


def test_exec_plugin(tmp_path: Path) -> None:
    script = tmp_path / "cred.py"
    script.write_text(
        "import json, os\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', "
        "'kind': 'ExecCredential', 'status': {'token': os.environ['TOKEN_FROM_ENV']}}))\n"
    )
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(script)],
            "env": [{"name": "TOKEN_FROM_ENV", "value": "from-exec"}],
        }
    }
    cfg = KubeConfig.load(_write(tmp_path, {"server": "http://k"}, user))
    assert cfg.headers["Authorization"] == "Bearer from-exec"


def test_certificates_as_data_and_files(tmp_path: Path, pki: tuple[Path, Path]) -> None:
    cert, key = pki
    as_data = {
        "client-certificate-data": base64.b64encode(cert.read_bytes()).decode(),
        "client-key-data": base64.b64encode(key.read_bytes()).decode(),
    }
    cluster = {
        "server": "https://k:6443",
        "certificate-authority-data": base64.b64encode(cert.read_bytes()).decode(),
    }
    cfg = KubeConfig.load(_write(tmp_path, cluster, as_data))
    assert isinstance(cfg.verify, ssl.SSLContext)
    assert cfg.verify.cert_store_stats()["x509_ca"] == 1
    files = {"client-certificate": str(cert), "client-key": "key.pem"}
    cluster = {"server": "https://k:6443", "certificate-authority": "cert.pem"}
    assert isinstance(KubeConfig.load(_write(tmp_path, cluster, files)).verify, ssl.SSLContext)


def test_missing_context_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no context named"):
        KubeConfig.load(_write(tmp_path, {"server": "http://k"}, {}), "nope")


def test_resource_path() -> None:
    assert (
        resource_path("", "v1", "pods", "ns", "p", "status")
        == "/api/v1/namespaces/ns/pods/p/status"
    )
    assert resource_path("g.io", "v1", "things") == "/apis/g.io/v1/things"
