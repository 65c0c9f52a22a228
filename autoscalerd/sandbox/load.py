"""The load model: what each simulated pod reports for each metric of its workload."""

from __future__ import annotations

from .metrics_page import render_series
from .model import SimPod


def pod_metric_values(pod: SimPod) -> dict[str, float]:
    """Each metric's total load spread evenly over the workload's Ready pods (0 on a pod
    not Ready or terminating), unless a per-pod value overrides it."""
    wl = pod.workload
    ready = len(wl.ready_pods())
    values = {}
    for metric, total in wl.loads.items():
        override = wl.pod_values.get((pod.name, metric))
        if override is not None:
            values[metric] = override
        elif pod.ready and not pod.terminating and ready:
            values[metric] = total / ready
        else:
            values[metric] = 0.0
    return values


def metrics_page(pod: SimPod) -> str:
    """The pod's whole metrics page: the workload's filler around the load's series."""
    wl = pod.workload
    return wl._head + render_series(pod_metric_values(pod)) + wl._tail
