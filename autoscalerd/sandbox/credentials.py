"""The sandbox's credentials and the files that hand them out: the API and metrics CAs,
the API server and client certificates, the bearer token files, the service-account
directory (as mounted in a pod) and the kubeconfig with its three users."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path
from typing import Any

import trustme
import yaml

from . import certs


class Credentials:
    """The credential files under ``workdir``: ``issue`` makes the CAs and certificates;
    the ``write_*`` methods write (and, on token rotation, rewrite) the rest."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.kubeconfig_path = workdir / "kubeconfig"
        self.token_file = workdir / "token"
        self.serviceaccount_dir = workdir / "serviceaccount"
        self.pki = workdir / "pki"
        self.api_ca_file = self.pki / "api-ca.crt"
        self.api_client_cert_file = self.pki / "api-client.crt"
        self.api_client_key_file = self.pki / "api-client.key"
        self.metrics_ca_file = self.pki / "metrics-ca.crt"
        self.metrics_client_cert_file = self.pki / "metrics-client.crt"
        self.metrics_client_key_file = self.pki / "metrics-client.key"
        self.api_ca: trustme.CA | None = None
        self.metrics_ca: trustme.CA | None = None

    def issue(self, api_host: str) -> ssl.SSLContext:
        """Create both CAs, the API server's and the clients' certificates; returns the
        API server's TLS context (client certificates from the API CA are optional)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.api_ca = trustme.CA(organization_name="autoscalerd sandbox API")
        certs.write_ca(self.api_ca, self.api_ca_file)
        server = certs.issue(
            self.api_ca, self.pki, "api-server", "127.0.0.1", "localhost", api_host
        )
        client = certs.issue(
            self.api_ca, self.pki, "api-client", "sandbox-admin", common_name="sandbox-admin"
        )
        assert client.cert_file == self.api_client_cert_file
        self.metrics_ca = trustme.CA(organization_name="autoscalerd sandbox metrics")
        certs.write_ca(self.metrics_ca, self.metrics_ca_file)
        certs.issue(
            self.metrics_ca, self.pki, "metrics-client", "autoscalerd", common_name="autoscalerd"
        )
        return certs.server_context(server, client_ca=self.api_ca_file)

    def write_serviceaccount(self) -> None:
        """``ca.crt`` and ``namespace`` of the service-account directory (the token is
        written by ``write_token_files``)."""
        self.serviceaccount_dir.mkdir(parents=True, exist_ok=True)
        (self.serviceaccount_dir / "ca.crt").write_bytes(self.api_ca_file.read_bytes())
        (self.serviceaccount_dir / "namespace").write_text("kube-system")

    def write_token_files(self, token: str) -> None:
        for path in (self.token_file, self.serviceaccount_dir / "token"):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(token)
            tmp.chmod(0o600)
            tmp.replace(path)  # atomic, like the kubelet's projected volume update

    def exec_plugin(self) -> dict[str, Any]:
        """A credential exec plugin that prints an ExecCredential with the current token
        (read from ``token_file`` at each call), valid for 10 minutes."""
        script = (
            "import datetime,json,sys;"
            "exp=(datetime.datetime.now(datetime.timezone.utc)+datetime.timedelta(minutes=10))"
            ".strftime('%Y-%m-%dT%H:%M:%SZ');"
            "print(json.dumps({'apiVersion':'client.authentication.k8s.io/v1',"
            "'kind':'ExecCredential','status':{'token':open(sys.argv[1]).read().strip(),"
            "'expirationTimestamp':exp}}))"
        )
        return {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": ["-c", script, str(self.token_file)],
            "interactiveMode": "Never",
            "provideClusterInfo": False,
        }

    def write_kubeconfig(self, api_url: str, token: str) -> None:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "sandbox",
                    "cluster": {
                        "server": api_url,
                        "certificate-authority": str(self.api_ca_file),
                    },
                }
            ],
            "users": [
                {"name": "sandbox-admin", "user": {"token": token}},
                {"name": "sandbox-exec", "user": {"exec": self.exec_plugin()}},
                {
                    "name": "sandbox-cert",
                    "user": {
                        "client-certificate": str(self.api_client_cert_file),
                        "client-key": str(self.api_client_key_file),
                    },
                },
            ],
            "contexts": [
                {"name": "sandbox", "context": {"cluster": "sandbox", "user": "sandbox-admin", "namespace": "default"}},
                {"name": "sandbox-cert", "context": {"cluster": "sandbox", "user": "sandbox-cert", "namespace": "default"}},
                {"name": "sandbox-exec", "context": {"cluster": "sandbox", "user": "sandbox-exec", "namespace": "default"}},
            ],
            "current-context": "sandbox",
            "preferences": {},
        }  # fmt: skip
        self.kubeconfig_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.kubeconfig_path.chmod(0o600)
