"""`autoscalerd demo`: the seed scenario, live, on this machine.

Starts the sandbox cluster with a `metrics-server` Deployment in `kube-system` whose pods serve
`go_threads` over HTTPS with self-signed certificates (as metrics-server does), runs the real
`autoscalerd run` process against it with the seed's KPA policy, varies the load, and prints
one line per second: load, ready pods, the daemon's decision and the replicas. Prints the
address of the daemon's `/ui` page, which is up for as long as the demo runs. Ends by itself
with a summary.

`--source` picks the metric source the same story runs on (issue 12): `pod` (the seed, above),
`cpu` (a `resource` source: HPA cpu utilization of the pods' requests, read from the sandbox's
metrics.k8s.io) or `prometheus` (a `prometheus` source: the real Prometheus server, started
here, scrapes a demand page and the policy queries `sum(demo_requests_in_flight)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from autoscalerd.logconfig import configure_logging

__all__ = ["DEMO_POLICY", "SCENARIOS", "load_at", "run_demo"]

NAMESPACE = "kube-system"
NAME = "metrics-server"
METRIC = "go_threads"

DEMO_POLICY = """\
# The seed's PodAutoscaler, with shorter windows so the demo shows a full cycle in a minute.
apiVersion: autoscaling.aibrix.ai/v1alpha1
kind: PodAutoscaler
metadata:
  name: metric-server-autoscaler
  namespace: kube-system
  annotations:
    kpa.autoscaling.aibrix.ai/stable-window: "12s"
    kpa.autoscaling.aibrix.ai/panic-window: "4s"
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: metrics-server
  minReplicas: 1
  maxReplicas: 4
  metricsSources:
    - metricSourceType: "pod"
      protocolType: "https"
      port: "10250"
      path: "/metrics"
      targetMetric: "go_threads"
      targetValue: "20"
      # metrics-server's certificate is self-signed: the bypass is explicit, per source,
      # and logged. With a CA-signed certificate, set caFile (and serverName) instead.
      tlsConfig:
        insecureSkipVerify: true
  scalingStrategy: "KPA"
"""

CPU_POLICY = """\
# A resource source: cpu from metrics.k8s.io. With HPA, cpu is utilization: the percent of the
# pods' summed cpu requests (each sandbox pod requests 500m), targetValue a percent.
apiVersion: autoscaling.aibrix.ai/v1alpha1
kind: PodAutoscaler
metadata: {name: web-cpu, namespace: default}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 4
  scalingStrategy: HPA
  behavior:
    scaleDown: {stabilizationWindowSeconds: 8}
  metricsSources:
    - metricSourceType: resource
      targetMetric: cpu
      targetValue: "50"
"""

PROMETHEUS_POLICY = """\
# A prometheus source: one instant query per tick against a Prometheus server.
apiVersion: autoscaling.aibrix.ai/v1alpha1
kind: PodAutoscaler
metadata:
  name: web-inflight
  namespace: default
  annotations:
    kpa.autoscaling.aibrix.ai/stable-window: "12s"
    kpa.autoscaling.aibrix.ai/panic-window: "4s"
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 4
  scalingStrategy: KPA
  metricsSources:
    - metricSourceType: prometheus
      endpoint: PROMETHEUS_URL
      query: sum(demo_requests_in_flight)
      targetMetric: requests_in_flight
      targetValue: "20"
"""


@dataclass(frozen=True)
class Scenario:
    """What `--source` changes: the target, the policy, what the load drives."""

    namespace: str
    name: str
    policy: str
    file: str
    describe: str
    load_scale: float = 1.0
    """The load profile (total go_threads-like demand) times this is what is set."""


SCENARIOS = {
    "pod": Scenario(NAMESPACE, NAME, DEMO_POLICY, "metrics-server-kpa.yaml",
                    f"pods serve {METRIC} over HTTPS (self-signed); KPA, targetValue 20 per pod"),
    "cpu": Scenario("default", "web", CPU_POLICY, "resource-cpu-hpa.yaml",
                    "cpu from metrics.k8s.io, pods request 500m; HPA at 50 % utilization",
                    load_scale=12.5),
    "prometheus": Scenario("default", "web", PROMETHEUS_POLICY, "prometheus-query-kpa.yaml",
                           "Prometheus query sum(demo_requests_in_flight); KPA, 20 per pod"),
}  # fmt: skip

# (start as a fraction of the run, total go_threads over all pods)
LOAD_PROFILE = ((0.0, 18.0), (0.12, 45.0), (0.3, 75.0), (0.55, 30.0), (0.75, 12.0))


def load_at(fraction: float) -> float:
    """The total demand at a point of the run (a step profile: calm, rise, peak, fall)."""
    value = LOAD_PROFILE[0][1]
    for start, total in LOAD_PROFILE:
        if fraction >= start:
            value = total
    return value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_demo(
    *,
    source: str = "pod",
    duration: float = 60.0,
    workdir: str | None = None,
    log_format: str | None = None,
    log_level: str = "info",
    podautoscalers: bool = False,
) -> int:
    configure_logging("console", "warning")
    try:
        from autoscalerd.sandbox import MetricsEndpoint, Sandbox  # noqa: F401
    except ImportError as exc:  # trustme missing
        print(
            f"autoscalerd demo needs the sandbox extra: pip install 'autoscalerd[sandbox]' ({exc})",
            file=sys.stderr,
        )
        return 2
    try:
        return asyncio.run(
            _demo(SCENARIOS[source], duration, workdir, log_format, log_level, podautoscalers)
        )
    except KeyboardInterrupt:
        return 130


async def _demo(
    sc: Scenario,
    duration: float,
    workdir: str | None,
    log_format: str | None,
    log_level: str,
    podautoscalers: bool = False,
) -> int:
    from autoscalerd.sandbox import MetricsEndpoint, Sandbox

    out = sys.stdout
    prometheus = _prometheus_binary() if sc is SCENARIOS["prometheus"] else None
    if sc is SCENARIOS["prometheus"] and prometheus is None:
        print("autoscalerd demo --source prometheus needs the Prometheus server on PATH "
              "(Debian/Ubuntu: apt-get install prometheus)", file=sys.stderr)  # fmt: skip
        return 2
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="autoscalerd-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    policy_file = root / sc.file
    log_file = root / "autoscalerd.log"
    port = _free_port()

    async with Sandbox(workdir=root / "sandbox") as sb, _Demand(sc, sb, root, prometheus) as demand:
        policy_file.write_text(sc.policy.replace("PROMETHEUS_URL", demand.prometheus_url))
        if sc is SCENARIOS["pod"]:
            await sb.add_deployment(
                NAMESPACE,
                NAME,
                replicas=1,
                labels={"k8s-app": "metrics-server"},
                metrics=MetricsEndpoint(
                    port=10250,
                    path="/metrics",
                    tls="self-signed",
                    metric=METRIC,
                    page_size_bytes=20_000,
                ),
                startup_seconds=1.0,
            )
        else:
            await sb.add_deployment(
                sc.namespace, sc.name, replicas=1, startup_seconds=1.0, requests={"cpu": "500m"}
            )
        demand.set(load_at(0.0))
        await demand.ready()
        print(
            textwrap.dedent(
                f"""\
                autoscalerd demo --source {next(k for k, v in SCENARIOS.items() if v is sc)}: a sandbox cluster (loopback only)
                  target   Deployment {sc.namespace}/{sc.name}
                  policy   {sc.describe}, 1..4 replicas   ({policy_file})
                  daemon   autoscalerd run --kubeconfig {sb.kubeconfig_path}
                  logs     {log_file}
                  ui       http://127.0.0.1:{port}/ui   (live while the demo runs; also: autoscalerd status --watch --url 127.0.0.1:{port})
                """
            ),
            file=out,
        )
        policy_args = ["-c", str(policy_file)]
        pa_key: tuple[str, str] | None = None
        if podautoscalers:  # issue 14: the policy as a PodAutoscaler object, status written
            from autoscalerd.sandbox import podautoscalers as pa

            policy_args = ["--podautoscalers"]
            obj = _demo_object(policy_file.read_text())
            pa.create(sb.store, obj)
            pa_key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
            print(
                f"  cluster mode: the policy is the PodAutoscaler object {pa_key[0]}/{pa_key[1]}"
                " (annotated autoscalerd.io/managed); its status is shown below\n",
                file=out,
            )
        cmd = [
            sys.executable,
            "-m",
            "autoscalerd",
            "run",
            *policy_args,
            "--kubeconfig",
            str(sb.kubeconfig_path),
            "--listen",
            f"127.0.0.1:{port}",
            "--log-format",
            log_format or "json",
            "--log-level",
            log_level,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALERD_")}
        with open(log_file, "wb") as log_fh:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=log_fh, stderr=log_fh, stdin=asyncio.subprocess.DEVNULL, env=env
            )
            try:
                await _watch(sb, demand, port, duration, out, pa_key)
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(proc.wait(), 8)
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()
        _summary(sb, sc, proc.returncode, log_file, out)
        if pa_key is not None:
            from autoscalerd.sandbox import podautoscalers as pa

            held = pa.get(sb.store, *pa_key)
            print("\nkubectl describe podautoscaler (as the sandbox holds it):", file=out)
            print(textwrap.indent(pa.describe(held or {}), "  "), file=out)
        return 0 if proc.returncode == 0 else 1


def _demo_object(policy: str) -> dict[str, Any]:
    """The demo's policy as an API object that this daemon claims."""
    import yaml

    obj: dict[str, Any] = yaml.safe_load(policy)
    obj["metadata"].setdefault("annotations", {})["autoscalerd.io/managed"] = "true"
    return obj


def _pa_status(sb: Any, pa_key: tuple[str, str]) -> str:
    from autoscalerd.sandbox import podautoscalers as pa

    status = (pa.get(sb.store, *pa_key) or {}).get("status") or {}
    ready: dict[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    return (
        f"status desired={status.get('desiredScale', '-')} actual={status.get('actualScale', '-')}"
        f" Ready={ready.get('status', '-')} ({ready.get('reason', '-')})"
    )


async def _watch(
    sb: Any,
    demand: _Demand,
    port: int,
    duration: float,
    out: Any,
    pa_key: tuple[str, str] | None = None,
) -> None:
    sc = demand.sc
    url = f"http://127.0.0.1:{port}/status"
    header = f"{'time':>5}  {'load':>5}  {'ready':>5}  {'desired':>7}  {'replicas':>8}  {'mode':<6}  decision"
    print(header, file=out)
    print("-" * len(header), file=out)
    start = time.monotonic()
    last_load = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        second = 0
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= duration:
                break
            load = load_at(elapsed / duration)
            if load != last_load:
                demand.set(load)
                last_load = load
            policy: dict[str, Any] = {}
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with http.get(url) as resp:
                    doc = json.loads(await resp.text())
                    policy = (doc.get("policies") or [{}])[0]
            ready = sb.ready_replicas(sc.namespace, sc.name)
            replicas = sb.replicas(sc.namespace, sc.name)
            desired = policy.get("desired_replicas")
            mode = policy.get("mode") or "-"
            decision = policy.get("last_error") or policy.get("detail") or "waiting for the daemon"
            if pa_key is not None:
                decision = _pa_status(sb, pa_key)
            print(
                f"{int(elapsed):>4}s  {demand.value:>5g}  {ready:>5}  {desired if desired is not None else '-':>7}  "
                f"{replicas:>8}  {mode:<6}  {_clip(str(decision), 70)}",
                file=out,
                flush=True,
            )
            second += 1
            await asyncio.sleep(max(0.0, start + second - time.monotonic()))


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _summary(sb: Any, sc: Scenario, returncode: int | None, log_file: Path, out: Any) -> None:
    history = sb.replica_history(sc.namespace, sc.name)
    changes = [n for _, n in history]
    writes = sb.scale_writes(sc.namespace, sc.name)
    print("", file=out)
    print("summary", file=out)
    print(f"  replicas over time: {' -> '.join(str(n) for n in changes) or 'unchanged'}", file=out)
    print(
        f"  scale writes: {len(writes)}; never above maxReplicas: {max(changes or [1]) <= 4}",
        file=out,
    )
    reasons = sb.event_reasons(sc.namespace, sc.name)
    if reasons:
        print(f"  events: {', '.join(sorted(set(reasons)))}", file=out)
    print(
        f"  daemon exit code: {returncode} (0 = clean stop on SIGTERM); log: {log_file}", file=out
    )


# -- issue 12: what the load drives, per --source ----------------------------------------------


def _prometheus_binary() -> str | None:
    found = shutil.which("prometheus")
    if found is None and Path("/usr/bin/prometheus").exists():
        found = "/usr/bin/prometheus"
    return found


class _Demand:
    """Sets the demand: the sandbox's load model (`pod`: go_threads; `cpu`: millicores), or a
    page on 127.0.0.1 that a Prometheus server started here scrapes every 500 ms."""

    def __init__(self, sc: Scenario, sb: Any, root: Path, prometheus: str | None) -> None:
        self.sc = sc
        self.sb = sb
        self.root = root
        self.binary = prometheus
        self.value = 0.0
        self.prometheus_url = ""
        self._runner: web.AppRunner | None = None
        self._proc: asyncio.subprocess.Process | None = None

    def set(self, load: float) -> None:
        self.value = load * self.sc.load_scale
        if self.sc is SCENARIOS["pod"]:
            self.sb.set_load(self.sc.namespace, self.sc.name, METRIC, self.value)
        elif self.sc is SCENARIOS["cpu"]:
            self.sb.set_load(self.sc.namespace, self.sc.name, "cpu", self.value)

    async def _page(self, request: web.Request) -> web.Response:
        text = f"# TYPE demo_requests_in_flight gauge\ndemo_requests_in_flight {self.value}\n"
        return web.Response(text=text, content_type="text/plain")

    async def __aenter__(self) -> _Demand:
        if self.binary is None:
            return self
        app = web.Application()
        app.router.add_get("/metrics", self._page)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        page_port = _free_port()
        await web.TCPSite(self._runner, "127.0.0.1", page_port).start()
        prom_port = _free_port()
        config = self.root / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 500ms, scrape_timeout: 400ms}\n"
            "scrape_configs:\n  - job_name: demand\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{page_port}']}}]\n"
        )
        self.prometheus_url = f"http://127.0.0.1:{prom_port}"
        self._proc = await asyncio.create_subprocess_exec(
            self.binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{prom_port}",
            f"--storage.tsdb.path={self.root / 'prometheus-data'}", "--log.level=warn",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return self

    async def ready(self, timeout: float = 30.0) -> None:
        """Until Prometheus answers the demo's query (at once for the other sources)."""
        if self._proc is None:
            return
        url = f"{self.prometheus_url}/api/v1/query"
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    params = {"query": "sum(demo_requests_in_flight)"}
                    async with http.get(url, params=params) as resp:
                        if json.loads(await resp.text())["data"]["result"]:
                            return
                await asyncio.sleep(0.2)
        raise RuntimeError(
            f"Prometheus at {self.prometheus_url} did not answer within {timeout:g}s"
        )

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 10)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        if self._runner is not None:
            await self._runner.cleanup()
