"""The sources that are not `pod`: each turns this tick's counted pods into one `SourceSample`.

| type | one tick reads | sample |
|---|---|---|
| `resource` | the namespace's PodMetrics (`Kube.pod_metrics`: one list per namespace per interval, shared by every policy there) | per pod, like `pod`; HPA: cpu utilization, memory MiB |
| `custom` | `Kube.custom_pod_metric` with the target's selector | per pod |
| `external` without endpoint | `Kube.external_metric`, items summed | the tick's total |
| `external` with endpoint | one scrape through the daemon's `Scrape` | the tick's total |
| `prometheus` | one instant query (`scrape.prometheus_query`) | the tick's total |

A tick's total is handed to the algorithms as if every counted pod had answered (KPA/APA
take it as is; HPA's average-value rule then gives `ceil(total / target)`, as for an
External metric). A failure is missing data, never 0: its classified reason and fix go to the
policy's `Problems` (logged once, in `/status`) under the key `source:<index>`, and the
sample has no total (no scale-down).

HPA mapping (DESIGN §2.3): cpu utilization = 100 × Σ usage / Σ requests over the pods that
have metrics; the sample carries it as `utilization × answered` so the HPA rule's per-pod
average is the utilization. A counted pod without a cpu request makes the source fail (as in
Kubernetes: "missing request for cpu").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from autoscalerd.config.model import DaemonConfig, MetricSource, Policy, Strategy
from autoscalerd.daemon.ports import Kube, Scrape
from autoscalerd.daemon.problems import Problems
from autoscalerd.kube.errors import KubeError, KubeForbidden, KubeNotFound, KubeUnavailable
from autoscalerd.kube.pods import PodInfo
from autoscalerd.scaling.autoscaler import SourceSample
from autoscalerd.scrape.client import ScrapeOutcome, ScrapeTarget

__all__ = ["PROBLEM_PREFIX", "Query", "SamplingEnv", "SourceSampler", "explain_api_error"]

PROBLEM_PREFIX = "source:"
MIB = 1024.0 * 1024.0

_WHO = {
    "resource": ("metrics.k8s.io", "metrics-server"),
    "custom": ("custom.metrics.k8s.io", "a custom metrics adapter (prometheus-adapter, KEDA…)"),
    "external": ("external.metrics.k8s.io", "an external metrics adapter (KEDA, …)"),
}


class Query(Protocol):
    """Runs a `prometheus` source's instant query (`scrape.prometheus_query.PrometheusQuery`)."""

    async def query(
        self, source: MetricSource, *, daemon: DaemonConfig, timeout: float
    ) -> ScrapeOutcome: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SamplingEnv:
    """What one tick's sampling needs from the daemon."""

    kube: Kube
    scraper: Scrape
    query: Query | None
    daemon: DaemonConfig
    now: float
    selector: str
    """The target's `/scale` `status.selector` (custom metrics are listed with it)."""


def explain_api_error(source_type: str, exc: KubeError) -> str:
    """A metrics-API failure with its fix (403 names the rule, 404 asks who serves the API)."""
    group, server = _WHO.get(source_type, ("the metrics API", "its server"))
    if isinstance(exc, KubeForbidden):
        return (
            f"{exc}. Fix: add that rule to the daemon's ClusterRole "
            "(deploy/kubernetes/rbac.yaml has it)"
        )
    if isinstance(exc, KubeNotFound):
        return (
            f"{exc}. Is {server} installed? `kubectl get apiservice` must list {group} as "
            "Available (and the metric must exist)"
        )
    if isinstance(exc, KubeUnavailable) and exc.status == 503:
        return (
            f"{exc}. {group} is registered but its server does not answer: check {server}'s "
            "pods and `kubectl get apiservice`"
        )
    return f"{exc}"


class SourceSampler:
    """Samples the non-`pod` sources of one policy (the reconciler's `_scrape` calls it)."""

    def __init__(self, policy: Policy, problems: Problems) -> None:
        self.policy = policy
        self.problems = problems
        self.indexes = tuple(i for i, s in enumerate(policy.sources) if s.type != "pod")

    async def sample(
        self, sources: Sequence[MetricSource], counted: list[PodInfo], env: SamplingEnv
    ) -> dict[int, tuple[SourceSample, str]]:
        """{source index: (sample, result label for `scrapes_total`)} for the non-pod ones."""
        out: dict[int, tuple[SourceSample, str]] = {}
        for i in self.indexes:
            source = sources[i]
            key = f"{PROBLEM_PREFIX}{i}"
            try:
                sample, trouble = await self._one(source, counted, env)
            except KubeError as exc:
                sample = SourceSample(total=None, answered=0, missing=len(counted))
                trouble = (explain_api_error(source.type, exc), _label(exc))
            except Exception as exc:  # a bug stays inside its source (and is not zero)
                sample = SourceSample(total=None, answered=0, missing=len(counted))
                trouble = (f"internal error reading the source: {exc!r}", "error")
            if trouble is None:
                self.problems.resolved(key, metric=source.target_metric)
                out[i] = (sample, "ok")
            else:
                message, result = trouble
                # an Event only when the source has no data at all (not for new pods that
                # have no metrics yet while the others answer)
                event = "FailedGetMetrics" if sample.total is None else None
                self.problems.report(key, message, metric=source.target_metric, event=event)
                out[i] = (sample, result)
        return out

    async def _one(
        self, source: MetricSource, counted: list[PodInfo], env: SamplingEnv
    ) -> tuple[SourceSample, tuple[str, str] | None]:
        if source.type == "resource":
            return await self._resource(source, counted, env)
        if source.type == "custom":
            values = await env.kube.custom_pod_metric(
                self.policy.namespace, source.selector.metric, env.selector
            )
            return _per_pod(source, counted, values, "custom.metrics.k8s.io")
        if source.type == "external" and not source.endpoint:
            items = await env.kube.external_metric(
                self.policy.namespace, source.selector.metric, label_selector(source)
            )
            if not items:
                return _missing(counted), (
                    f"external.metrics.k8s.io {source.selector.metric} "
                    f"(labelSelector {label_selector(source) or 'none'}) returned no items: "
                    "missing data, not 0. Check the metric name and labels your adapter "
                    "serves (kubectl get --raw /apis/external.metrics.k8s.io/v1beta1)",
                    "absent",
                )
            return _total(sum(items), counted), None
        timeout = env.daemon.scrape_timeout_seconds
        if source.type == "prometheus":
            if env.query is None:  # pragma: no cover - the supervisor always wires one
                return _missing(counted), ("no query runner for prometheus sources", "error")
            outcome = await env.query.query(source, daemon=env.daemon, timeout=timeout)
        else:  # external with endpoint (and domain)
            target = ScrapeTarget(pod=source.endpoint, ip=source.endpoint, source=source)
            outcome = (await env.scraper.scrape([target], timeout=timeout))[0]
        if outcome.error is not None or outcome.value is None:
            kind = str(getattr(outcome.error, "kind", "error"))
            return _missing(counted), (str(outcome.error), kind)
        return _total(outcome.value, counted), None

    async def _resource(
        self, source: MetricSource, counted: list[PodInfo], env: SamplingEnv
    ) -> tuple[SourceSample, tuple[str, str] | None]:
        usage = await env.kube.pod_metrics(
            self.policy.namespace, now=env.now, max_age=env.daemon.scrape_interval_seconds
        )
        cpu = source.selector.metric == "cpu"
        hpa = self.policy.strategy == Strategy.HPA
        if cpu and hpa:
            no_request = [p.name for p in counted if not p.cpu_request_millis]
            if no_request:
                return _missing(counted), (
                    f"HPA cpu utilization needs a cpu request on every container; pod(s) "
                    f"{', '.join(no_request[:5])} have none. Fix: set "
                    "resources.requests.cpu in the target's pod template (or scale on cpu "
                    "millicores with KPA/APA)",
                    "missing_request",
                )
        values: dict[str, float] = {}
        for name, u in usage.items():
            values[name] = (
                u.cpu_millis if cpu else (u.memory_bytes / MIB if hpa else u.memory_bytes)
            )
        sample, trouble = _per_pod(source, counted, values, "metrics.k8s.io")
        if cpu and hpa and sample.total is not None and sample.answered:
            requests = sum(p.cpu_request_millis or 0.0 for p in counted if p.name in values)
            utilization = 100.0 * sample.total / requests
            sample = SourceSample(
                total=utilization * sample.answered,
                answered=sample.answered,
                missing=sample.missing,
            )
        return sample, trouble


def label_selector(source: MetricSource) -> str:
    """The `=`/`!=` matchers of `targetMetric` as a label selector (AIbrix lists everything
    when there are none)."""
    return ",".join(f"{m.name}{m.op.value}{m.value}" for m in source.selector.matchers)


def _per_pod(
    source: MetricSource, counted: list[PodInfo], values: dict[str, float], api: str
) -> tuple[SourceSample, tuple[str, str] | None]:
    total = 0.0
    answered = 0
    without: list[str] = []
    for pod in counted:
        value = values.get(pod.name)
        if value is None:
            without.append(pod.name)
            continue
        total += value
        answered += 1
    sample = SourceSample(
        total=total if answered else None, answered=answered, missing=len(without)
    )
    if not without:
        return sample, None
    return sample, (
        f"{len(without)} of {len(counted)} counted pod(s) have no {source.selector.metric} "
        f"in {api} yet ({', '.join(without[:5])}): missing, not 0. A new pod gets metrics "
        "after its first collection (metrics-server: one --metric-resolution, 15 s by "
        "default); if it lasts, check the server's logs",
        "absent",
    )


def _missing(counted: list[PodInfo]) -> SourceSample:
    return SourceSample(total=None, answered=0, missing=len(counted))


def _total(value: float, counted: list[PodInfo]) -> SourceSample:
    """A tick's total, handed over as if every counted pod answered (module doc)."""
    return SourceSample(total=value, answered=max(len(counted), 1), missing=0)


def _label(exc: KubeError) -> str:
    if isinstance(exc, KubeForbidden):
        return "forbidden"
    if isinstance(exc, KubeNotFound):
        return "not_found"
    if isinstance(exc, KubeUnavailable):
        return "unavailable"
    return "error"
