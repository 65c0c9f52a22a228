"""The simulated pods' metrics endpoints: a loopback address per pod, the serving
certificates of each TLS mode, one aiohttp server per pod, and the pod faults applied
to what it answers (or to whether it listens at all)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import secrets
import socket
import ssl
import struct
import time
from collections.abc import Iterator, Mapping

import structlog
import trustme
from aiohttp import web

from . import certs
from .credentials import Credentials
from .faults import Faults, PodFault
from .load import metrics_page
from .model import MetricsEndpoint, SimPod, Workload
from .tasks import TaskSet

log = structlog.get_logger("autoscalerd.sandbox")


class PodEndpoints:
    """Starts and stops the pods' metrics servers. ``workloads`` is the sandbox's own
    mapping (read when pod faults change)."""

    def __init__(
        self,
        ip_base: str,
        api_host: str,
        credentials: Credentials,
        faults: Faults,
        workloads: Mapping[tuple[str, str], Workload],
        tasks: TaskSet,
    ) -> None:
        self.ip_base = ip_base
        self.api_host = api_host
        self._creds = credentials
        self._faults = faults
        self._workloads = workloads
        self._tasks = tasks
        self._ips = self._ip_candidates()
        self._ips_in_use: set[str] = set()

    # -- addresses ---------------------------------------------------------------------
    def _ip_candidates(self) -> Iterator[str]:
        octets = self.ip_base.split(".")
        while True:
            if len(octets) == 3:
                for last in range(2, 255):
                    yield f"{self.ip_base}.{last}"
            else:
                for third in range(256):
                    for last in range(2, 255):
                        yield f"{self.ip_base}.{third}.{last}"

    def _next_ip(self) -> str:
        for _ in range(70000):
            ip = next(self._ips)
            if ip not in self._ips_in_use and ip != self.api_host:
                self._ips_in_use.add(ip)
                return ip
        raise RuntimeError(f"no free loopback address under {self.ip_base}")

    def release_ip(self, ip: str) -> None:
        self._ips_in_use.discard(ip)

    @staticmethod
    def _port_free(ip: str, port: int) -> bool:
        with socket.socket() as s:
            try:
                s.bind((ip, port))
            except OSError:
                return False
        return True

    # -- certificates ------------------------------------------------------------------
    def prepare_tls(self, wl: Workload) -> None:
        """The workload's serving certificate (or, with ``ip_sans``, its directory for
        one per pod), its token, and the files a client needs to scrape its pods."""
        ep = wl.metrics
        if ep is None:
            return
        d = self._creds.pki / f"{wl.namespace}_{wl.name}"
        d.mkdir(parents=True, exist_ok=True)
        wl._cert_dir = d
        if ep.token_required:
            wl.token = secrets.token_urlsafe(24)
            wl.token_file = d / "token"
            wl.token_file.write_text(wl.token)
        if ep.tls == "self-signed":
            own_ca = trustme.CA(organization_name=f"{wl.name}-ca@{int(time.time())}")
            files = certs.issue(
                own_ca, d, "serving", "localhost", "127.0.0.1",
                common_name=f"localhost@{int(time.time())}", include_root=True,
            )  # fmt: skip
            wl.self_signed_cert_file = files.cert_file
            wl._ssl = certs.server_context(files)
        elif ep.tls in ("ca", "mtls"):
            wl.server_name = ep.server_name or f"{wl.name}.{wl.namespace}.svc"
            wl.ca_file = self._creds.metrics_ca_file
            if ep.tls == "mtls":
                wl.client_cert_file = self._creds.metrics_client_cert_file
                wl.client_key_file = self._creds.metrics_client_key_file
            if not ep.ip_sans:
                files = certs.issue(self._metrics_ca(), d, "serving", wl.server_name)
                wl._ssl = self._ca_context(files, ep)

    def _metrics_ca(self) -> trustme.CA:
        ca = self._creds.metrics_ca
        if ca is None:
            raise RuntimeError("the sandbox is not started")
        return ca

    def _ca_context(self, files: certs.CertFiles, ep: MetricsEndpoint) -> ssl.SSLContext:
        if ep.tls == "mtls":
            return certs.server_context(
                files, self._creds.metrics_ca_file, require_client_cert=True
            )
        return certs.server_context(files)

    def _pod_ssl(self, pod: SimPod, ip: str) -> ssl.SSLContext | None:
        wl, ep = pod.workload, pod.workload.metrics
        if ep is None or ep.tls == "plain":
            return None
        if wl._ssl is not None:
            return wl._ssl
        assert wl._cert_dir is not None and wl.server_name is not None
        files = certs.issue(self._metrics_ca(), wl._cert_dir, f"serving-{ip}", wl.server_name, ip)
        return self._ca_context(files, ep)

    # -- listening ---------------------------------------------------------------------
    async def start(self, pod: SimPod) -> str:
        """Allocate the pod's loopback IP and start its metrics server there, skipping
        addresses whose port is taken."""
        ep = pod.workload.metrics
        for _ in range(8000):  # another sandbox may hold thousands of addresses of this base
            ip = self._next_ip()
            if ep is None:
                return ip
            pod.ip = ip
            pod._ssl = self._pod_ssl(pod, ip)
            fault = self._faults.for_pod(pod.namespace, pod.name, pod.workload.name)
            if fault is not None and fault.mode == "refuse":
                if self._port_free(ip, ep.port):
                    return ip
                continue
            try:
                await self._listen(pod)
                return ip
            except OSError as exc:
                if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
                    raise
                log.debug("sandbox address taken, skipping", ip=ip, port=ep.port)
        raise RuntimeError("could not find a free loopback address for a pod")

    async def _listen(self, pod: SimPod) -> None:
        ep = pod.workload.metrics
        assert ep is not None and pod.ip is not None
        if pod._runner is None:
            server = web.Server(
                lambda request: self._serve(pod, request),
                handler_cancellation=True,  # a gone client cancels its handler (no leak)
            )
            runner = web.ServerRunner(
                server, access_log=None, shutdown_timeout=0.2, handle_signals=False
            )
            await runner.setup()
            pod._runner = runner
        site = web.TCPSite(pod._runner, pod.ip, ep.port, ssl_context=pod._ssl, backlog=512)
        try:
            await site.start()
        except OSError:
            await pod._runner.cleanup()
            pod._runner = None
            raise
        pod._site = site

    async def _relisten(self, pod: SimPod) -> None:
        try:
            await self._listen(pod)
        except OSError as exc:
            log.warning("sandbox pod cannot listen again", pod=pod.name, ip=pod.ip, error=str(exc))

    async def _unlisten(self, pod: SimPod) -> None:
        if pod._site is not None:
            site, pod._site = pod._site, None
            await site.stop()

    async def stop(self, pod: SimPod) -> None:
        await self._unlisten(pod)
        if pod._runner is not None:
            runner, pod._runner = pod._runner, None
            await runner.cleanup()

    def faults_changed(self) -> None:
        """Start or stop listening where a ``refuse`` fault appeared or went away."""
        for wl in self._workloads.values():
            if wl.metrics is None:
                continue
            for pod in wl.live_pods():
                if pod.ip is None or pod.phase != "Running":
                    continue
                fault = self._faults.for_pod(pod.namespace, pod.name, wl.name)
                refuse = fault is not None and fault.mode == "refuse"
                if refuse and pod.listening:
                    self._tasks.spawn(self.stop(pod))
                elif not refuse and not pod.listening:
                    self._tasks.spawn(self._relisten(pod))

    # -- serving -----------------------------------------------------------------------
    async def _serve(self, pod: SimPod, request: web.BaseRequest) -> web.StreamResponse:
        pod.requests += 1
        ep = pod.workload.metrics
        assert ep is not None
        fault: PodFault | None = self._faults.for_pod(pod.namespace, pod.name, pod.workload.name)
        if fault is not None:
            fault.hits += 1
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.mode == "error":
                return web.Response(status=fault.status, text=f"injected error {fault.status}\n")
            if fault.mode == "garbage":
                return web.Response(
                    body=b"<html><body>502 Bad Gateway</body></html>\n\x00\xfe{{{ not prometheus\n",
                    content_type="text/plain",
                )
            if fault.mode == "reset":
                transport = request.transport
                if transport is not None:
                    sock = transport.get_extra_info("socket")
                    if sock is not None:
                        with contextlib.suppress(OSError):
                            sock.setsockopt(
                                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                            )
                    transport.abort()
                raise asyncio.CancelledError
        if request.path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if request.path != ep.path:
            return web.Response(status=404, text="404 page not found\n")
        if ep.token_required:
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                return web.Response(status=401, text="Unauthorized\n")
            if auth != f"Bearer {pod.workload.token}":
                return web.Response(
                    status=403,
                    text=f'forbidden: User "system:anonymous" cannot get path "{ep.path}"\n',
                )
        return web.Response(
            body=metrics_page(pod).encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )
