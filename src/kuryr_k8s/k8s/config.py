"""Where the API server is and how to authenticate: kubeconfig files and in-cluster config.

Settings are built once by the composition root (``load_kubeconfig`` or ``load_incluster``)
and passed to :meth:`kuryr_k8s.k8s.client.KubeClient.from_settings`. Nothing here is global.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kuryr_k8s.model.errors import ConfigError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class KubeSettings:
    """How to reach and authenticate to one Kubernetes API server."""

    server: str
    """Base URL, e.g. ``https://10.0.0.1:6443`` (no trailing slash)."""
    namespace: str = "default"
    """Namespace of the current context: where namespaced work goes when none is given."""
    token: str | None = None
    """Bearer token given inline."""
    token_file: Path | None = None
    """Bearer token file, re-read when it changes (projected service-account tokens rotate)."""
    ca_data: bytes | None = None
    """PEM bundle of the CA(s) that sign the server certificate; system CAs when None."""
    client_cert_data: bytes | None = None
    """PEM client certificate for mutual TLS."""
    client_key_data: bytes | None = None
    """PEM key of ``client_cert_data``."""
    insecure_skip_tls_verify: bool = False
    """Do not verify the server certificate (test clusters only)."""

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context these settings describe."""
        ctx = ssl.create_default_context()
        if self.insecure_skip_tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_data is not None:
            ctx = ssl.create_default_context(cadata=self.ca_data.decode())
        if self.client_cert_data is not None:
            _load_cert_chain(ctx, self.client_cert_data, self.client_key_data)
        return ctx

    def bearer_token(self) -> str | None:
        """The token to send now (the file wins over the inline value, as in client-go)."""
        if self.token_file is not None:
            try:
                return self.token_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read token file {self.token_file}: {exc}") from exc
        return self.token


def _load_cert_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes | None) -> None:
    # ssl only loads certificates from files: write them to a private temporary directory
    # that exists for the duration of this call.
    with tempfile.TemporaryDirectory(prefix="kuryr-kube-") as tmp:
        cert_path = Path(tmp) / "client.crt"
        cert_path.write_bytes(cert)
        key_path = None
        if key is not None:
            key_path = Path(tmp) / "client.key"
            key_path.touch(mode=0o600)
            key_path.write_bytes(key)
        try:
            ctx.load_cert_chain(cert_path, key_path)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"invalid client certificate or key: {exc}") from exc


def load_kubeconfig(path: Path, *, context: str | None = None) -> KubeSettings:
    """Read a kubeconfig file and resolve its current (or the named) context.

    Relative file paths in the kubeconfig are relative to the file's directory, as kubectl
    resolves them.
    """
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read kubeconfig {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"kubeconfig {path} is not a YAML mapping")
    ctx_name = context or doc.get("current-context")
    if not ctx_name:
        raise ConfigError(f"kubeconfig {path} has no current-context; name one with --context")
    ctx = _named(doc, "contexts", "context", ctx_name, path)
    cluster = _named(doc, "clusters", "cluster", str(ctx.get("cluster", "")), path)
    user: Mapping[str, Any] = {}
    if ctx.get("user"):
        user = _named(doc, "users", "user", str(ctx["user"]), path)
    base = path.parent
    server = str(cluster.get("server") or "").rstrip("/")
    if not server:
        raise ConfigError(f"kubeconfig {path}: cluster of context {ctx_name!r} has no server")
    if "exec" in user or "auth-provider" in user:
        raise ConfigError(
            f"kubeconfig {path}: user {ctx.get('user')!r} uses exec/auth-provider plugins, "
            "which are not supported; use a token or a client certificate"
        )
    token_file = user.get("tokenFile")
    return KubeSettings(
        server=server,
        namespace=str(ctx.get("namespace") or "default"),
        token=user.get("token"),
        token_file=_path(base, token_file) if token_file else None,
        ca_data=_data_or_file(cluster, "certificate-authority", base),
        client_cert_data=_data_or_file(user, "client-certificate", base),
        client_key_data=_data_or_file(user, "client-key", base),
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
    )


def load_incluster(
    env: Mapping[str, str] | None = None, *, sa_dir: Path = SERVICE_ACCOUNT_DIR
) -> KubeSettings:
    """Settings of a pod: service-account token and CA, ``KUBERNETES_SERVICE_HOST/PORT``."""
    env = os.environ if env is None else env
    host = env.get("KUBERNETES_SERVICE_HOST")
    port = env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ConfigError(
            "not running in a pod: KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are unset; "
            "pass a kubeconfig instead"
        )
    token_file = sa_dir / "token"
    if not token_file.is_file():
        raise ConfigError(f"service-account token {token_file} is missing")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    ns_file = sa_dir / "namespace"
    ca_file = sa_dir / "ca.crt"
    return KubeSettings(
        server=f"https://{host}:{port}",
        namespace=ns_file.read_text().strip() if ns_file.is_file() else "default",
        token_file=token_file,
        ca_data=ca_file.read_bytes() if ca_file.is_file() else None,
    )


def _named(
    doc: Mapping[str, Any], section: str, field: str, name: str, path: Path
) -> Mapping[str, Any]:
    for entry in doc.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(field)
            return body if isinstance(body, dict) else {}
    raise ConfigError(f"kubeconfig {path}: no {field} named {name!r} in {section}")


def _path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _data_or_file(section: Mapping[str, Any], key: str, base: Path) -> bytes | None:
    data = section.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(str(data), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(f"kubeconfig {key}-data is not valid base64: {exc}") from exc
    file = section.get(key)
    if file:
        p = _path(base, str(file))
        try:
            return p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"kubeconfig {key} {p}: {exc}") from exc
    return None
