"""A small Kubernetes-API-compatible sandbox cluster with simulated pods, on loopback only.

Used by ``autoscalerd demo`` and by the integration and end-to-end tests. Everything
runs in the current event loop; nothing listens beyond 127.0.0.0/8.

Quick start::

    from autoscalerd.sandbox import MetricsEndpoint, Sandbox

    async with Sandbox(workdir=tmp_path, ip_base="127.0.42") as sb:
        wl = await sb.add_deployment(
            "kube-system", "metrics-server", replicas=1,
            labels={"k8s-app": "metrics-server"},
            metrics=MetricsEndpoint(port=10250, path="/metrics", tls="self-signed",
                                    metric="go_threads", page_size_bytes=20_000),
            startup_seconds=0,
        )
        sb.set_load("kube-system", "metrics-server", "go_threads", total=70)
        # run the daemon with --kubeconfig sb.kubeconfig_path ...
        await sb.wait_for_spec_replicas("kube-system", "metrics-server", 4, timeout=10)
        sb.replicas("kube-system", "metrics-server"); sb.scale_writes(); sb.events

Sandbox(workdir, *, ip_base=None, api_host="127.0.0.1", api_port=0, token=None,
        deletion_grace_seconds=0.2, watch_timeout_seconds=1800, bookmark_interval_seconds=5,
        history_size=2000)
    ``ip_base`` is "127.X" or "127.X.Y" (default: a random "127.X"); pods get the
    addresses under it in order (127.X.0.2, 127.X.0.3, ...), skipping any whose metrics
    port is already taken. ``history_size`` is how many events per resource a watch can
    resume from before answering 410 Gone.

Files (under ``workdir``): ``kubeconfig_path`` (context ``sandbox``, the current one:
bearer ``token``; ``sandbox-cert``: a client certificate; ``sandbox-exec``: an exec
credential plugin printing the token of ``token_file``), ``token_file``,
``serviceaccount_dir`` (``token``, ``ca.crt``, ``namespace`` as mounted in a pod; with
``sb.incluster_env()`` for KUBERNETES_SERVICE_HOST/PORT), ``api_ca_file``,
``metrics_ca_file`` (signs ``ca``/``mtls`` pod certificates and the client certificate),
``metrics_client_cert_file``/``metrics_client_key_file``; ``api_url``.

Workloads (each returns a ``Workload``; ``wait_ready`` waits for the pods to be Ready)::

    await sb.add_deployment(ns, name, replicas=1, *, labels=None, metrics=None,
                            startup_seconds=0.0, wait_ready=True)
    await sb.add_statefulset(...), sb.add_replicaset(...), sb.add_widget(...)  # same args
    # Widget: custom resource widgets.example.com/v1 with a /scale subresource

``Workload`` has ``selector`` (the /scale status.selector string), ``server_name``,
``ca_file``, ``client_cert_file``/``client_key_file`` (mtls), ``token``/``token_file``
(token_required), ``self_signed_cert_file``; ``MetricsEndpoint`` documents the TLS modes.
A Deployment owns a ReplicaSet ``<name>-<hash>`` that owns the pods; a StatefulSet's
pods are ``<name>-<ordinal>``.

Pods: created Pending (no IP), then Running with an IP and their endpoint started (Ready
at once, or after ``startup_seconds``). Scaling down marks victims (not Ready first, then
newest; highest ordinal for StatefulSets) with ``deletionTimestamp`` and Ready False,
stops their endpoint, and removes them after ``deletion_grace_seconds``.
``sb.pods(ns, name)`` lists ``SimPod`` (``name``, ``ip``, ``url``, ``ready``, ``phase``,
``requests`` = scrapes served).

Load and values::

    sb.set_load(ns, name, metric, total)      # each Ready pod reports total / ready pods
    sb.set_pod_value(ns, pod, metric, value)  # override one pod (None to clear)

State for assertions: ``sb.replicas(ns, name)`` (spec.replicas), ``sb.ready_replicas``,
``sb.replica_history(ns, name)``, ``sb.writes`` (every POST/PUT/PATCH/DELETE as
``WriteRecord(time, method, path, query, content_type, body, status)``, including those
answered by a fault), ``sb.scale_writes(ns=None, name=None)``, ``sb.events``,
``sb.event_reasons(ns, name)``, ``sb.leases``, ``sb.lease(ns, name)``, ``sb.store``,
``sb.requests`` (the last 20,000 API requests as ``RequestRecord(time, method, path,
query, status)``), ``sb.api_request_count``, ``sb.open_watches`` (open watch streams);
``await sb.scale(ns, name, n)`` (like kubectl scale), ``await sb.wait_for_replicas(...)``,
``await sb.wait_for_spec_replicas(...)``; ``sb.rotate_token(grace_seconds=0.0)`` issues a
new token (files and kubeconfig rewritten) and expires the old one after the grace.

Faults (``sb.faults``)::

    sb.faults.add(method="*", path=".*", *, status=500, count=1, retry_after=None,
                  delay=0.0, message=None) -> ApiFault
        # the next ``count`` API requests whose method matches and whose "path?query"
        # matches the regex answer a Status with ``status`` (429/503 carry Retry-After,
        # default 1 s); status=None only delays; count=None: every request
    sb.faults.drop_watches(abrupt=False)   # end open watches (clean end, or TCP reset)
    sb.faults.expire_watches()             # 410 Gone: ERROR event to open watches, and
                                           # every older resourceVersion is too old
    sb.faults.pod(ns, pod, mode, *, delay=0.0, status=500) -> PodFault
    sb.faults.workload(ns, name, mode, ...)  # every pod of the workload, also future ones
        # mode: "slow" (answer after delay), "error" (HTTP status), "garbage" (200, not
        # Prometheus text), "reset" (TCP RST after the request), "refuse" (not listening)
    sb.faults.remove(fault); sb.faults.clear()

Layout: ``sandbox`` (the ``Sandbox`` facade) composes ``credentials`` (CAs, tokens,
service-account files, kubeconfig), ``apiserver`` over ``store``, ``workloads`` (the
controller: pods and their lifecycle), ``endpoints`` (each pod's metrics server),
``faults``, ``load`` (what each pod reports), ``objects`` (the Kubernetes JSON of
workloads and pods), ``model`` (the dataclasses), ``tasks`` and ``waiting``.

Command line: ``python -m autoscalerd.sandbox --workdir DIR [--duration S]`` starts the
seed scenario (metrics-server in kube-system, self-signed TLS on 10250, go_threads) and
prints the kubeconfig path.
"""

from .apiserver import RequestRecord, WriteRecord
from .faults import ApiFault, Faults, PodFault
from .model import MetricsEndpoint, SimPod, Workload
from .sandbox import Sandbox

__all__ = [
    "ApiFault",
    "Faults",
    "MetricsEndpoint",
    "PodFault",
    "RequestRecord",
    "Sandbox",
    "SimPod",
    "Workload",
    "WriteRecord",
]
