"""The load model: what each simulated pod reports for each metric of its workload."""

from __future__ import annotations

import time

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


def pod_counter_values(pod: SimPod, now: float | None = None) -> dict[str, float]:
    """Each counter series of the workload on this pod. Every counter grows by its total rate
    per second (`Sandbox.set_counter_rate`) shared evenly by the Ready pods: on each read all
    the workload's pods are brought up to now together, so the pods' increases always add up
    to rate × elapsed time. A pod starts from 0, and again after `Sandbox.reset_counter`."""
    wl = pod.workload
    if not wl.counter_rates:
        return {}
    now = time.monotonic() if now is None else now
    ready = [p for p in wl.ready_pods() if not p.terminating]
    last = wl.counters_at if wl.counters_at is not None else now
    elapsed = max(0.0, now - last)
    wl.counters_at = now
    for series, total_rate in wl.counter_rates.items():
        for p in wl.pods.values():
            value = wl.counters.get((p.name, series), 0.0)
            if ready and p in ready:
                value += total_rate / len(ready) * elapsed
            wl.counters[(p.name, series)] = value
    return {series: wl.counters[(pod.name, series)] for series in wl.counter_rates}


def metrics_page(pod: SimPod) -> str:
    """The pod's whole metrics page: the workload's filler around the load's series."""
    wl = pod.workload
    series = render_series(pod_metric_values(pod))
    counters = pod_counter_values(pod)
    if counters:
        series += render_series(counters, kind="counter")
    return wl._head + series + wl._tail
