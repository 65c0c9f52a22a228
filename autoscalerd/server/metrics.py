"""The daemon's own Prometheus metrics (prometheus-client), on a registry of its own.

Each daemon instance gets a fresh `CollectorRegistry`, so tests never share state through the
global default registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

__all__ = ["DaemonMetrics"]

_SCRAPE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class DaemonMetrics:
    """Every metric the daemon exports; label names are part of the public contract."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.scrapes_total = Counter(
            "autoscalerd_scrapes_total",
            "Pod metric scrapes by outcome (ok, or the failure kind: timeout, tls_verify, forbidden, …).",
            ["namespace", "autoscaler", "result"],
            registry=r,
        )
        self.scrape_duration_seconds = Histogram(
            "autoscalerd_scrape_duration_seconds",
            "Time to fetch and parse one pod's metrics page.",
            buckets=_SCRAPE_BUCKETS,
            registry=r,
        )
        self.metric_value = Gauge(
            "autoscalerd_metric_value",
            "Last total of a policy's metric over its counted pods (absent while there is no data).",
            ["namespace", "autoscaler", "metric"],
            registry=r,
        )
        self.desired_replicas = Gauge(
            "autoscalerd_desired_replicas",
            "Replica count the policy last decided on.",
            ["namespace", "autoscaler"],
            registry=r,
        )
        self.current_replicas = Gauge(
            "autoscalerd_current_replicas",
            "spec.replicas of the scale target as last read.",
            ["namespace", "autoscaler"],
            registry=r,
        )
        self.ready_pods = Gauge(
            "autoscalerd_ready_pods",
            "Pods of the target that count: Running, Ready, with an IP, not being deleted.",
            ["namespace", "autoscaler"],
            registry=r,
        )
        self.scale_operations_total = Counter(
            "autoscalerd_scale_operations_total",
            "Writes to the /scale subresource by direction (up, down) and result (ok, error, dry_run).",
            ["namespace", "autoscaler", "direction", "result"],
            registry=r,
        )
        self.panic_mode = Gauge(
            "autoscalerd_panic_mode",
            "1 while a KPA policy is in panic mode, else 0.",
            ["namespace", "autoscaler"],
            registry=r,
        )
        self.decisions_total = Counter(
            "autoscalerd_decisions_total",
            "Decisions by reason (stable, panic, no-data, rate-limited, …).",
            ["namespace", "autoscaler", "reason"],
            registry=r,
        )
        self.tick_lag_seconds = Histogram(
            "autoscalerd_tick_lag_seconds",
            "How late a policy's tick started relative to its schedule.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.config_reloads_total = Counter(
            "autoscalerd_config_reloads_total",
            "Configuration reloads by result (ok, error).",
            ["result"],
            registry=r,
        )
        self.leader = Gauge(
            "autoscalerd_leader",
            "1 while this instance may write (leader, or leader election off), else 0.",
            registry=r,
        )
        # For dashboards and alert rules (issue 15): the target line, "without data for
        # 5 minutes" and "tick lag above one interval" need these.
        self.target_value = Gauge(
            "autoscalerd_target_value",
            "A metric source's targetValue (per pod; the policy aims at target x ready pods).",
            ["namespace", "autoscaler", "metric"],
            registry=r,
        )
        self.last_data_timestamp_seconds = Gauge(
            "autoscalerd_last_data_timestamp_seconds",
            "Unix time of the policy's last tick with data (its start, until it has had any).",
            ["namespace", "autoscaler"],
            registry=r,
        )
        # The scraper counts these itself (plain ints on its hot path); read at collection.
        self._connection_totals: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 0)
        r.register(
            _ReadCounter(
                "autoscalerd_scrape_connections",
                "Connections opened to metric endpoints: each a TCP connect and, over https, a "
                "TLS handshake. Flat in steady state (connections are kept alive); a steady "
                "rise means endpoints close them or scrapes keep failing.",
                (),
                lambda: [((), self._connection_totals()[0])],
            )
        )
        r.register(
            _ReadCounter(
                "autoscalerd_scrape_late_answers",
                "Scrapes past their deadline (counted as timeouts) by what became of their "
                "connection: kept (the answer came within one more timeout, read and dropped) "
                "or closed.",
                ("connection",),
                self._late_answers,
            )
        )
        self.scrape_interval_seconds = Gauge(
            "autoscalerd_scrape_interval_seconds",
            "The scrape interval in force (one tick per policy per interval).",
            registry=r,
        )

    def observe_connections(self, totals: Callable[[], tuple[int, int, int]]) -> None:
        """Where `autoscalerd_scrape_connections_total` and `_late_answers_total` come from:
        `totals()` gives (connections opened, late answers whose connection was kept, late
        scrapes whose connection was closed), read when /metrics is scraped."""
        self._connection_totals = totals

    def _late_answers(self) -> list[tuple[tuple[str, ...], float]]:
        _, kept, closed = self._connection_totals()  # one read for both samples
        return [(("kept",), kept), (("closed",), closed)]

    def policy_started(
        self, namespace: str, name: str, sources: Iterable[Any], wall_now: float
    ) -> None:
        """Set a new policy's targets, and its data timestamp to its start (so a policy that
        never gets data shows as "no data since it started")."""
        for source in sources:
            self.target_value.labels(namespace, name, source.target_metric).set(source.target_value)
        self.last_data_timestamp_seconds.labels(namespace, name).set(wall_now)

    def forget_policy(self, namespace: str, name: str) -> None:
        """Drop the series of a policy that was removed by a reload."""
        for metric in (
            self.desired_replicas,
            self.current_replicas,
            self.ready_pods,
            self.panic_mode,
            self.last_data_timestamp_seconds,
        ):
            try:
                metric.remove(namespace, name)
            except KeyError:
                pass
        for labelled in (
            self.metric_value,
            self.target_value,
            self.scrapes_total,
            self.scale_operations_total,
            self.decisions_total,
        ):
            for labels in list(labelled._metrics):  # no public API to list children
                if labels[:2] == (namespace, name):
                    labelled.remove(*labels)


class _ReadCounter(Collector):
    """A counter kept elsewhere as plain numbers, read when the registry is collected."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        read: Callable[[], list[tuple[tuple[str, ...], float]]],
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = labelnames
        self._read = read

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labels, value in self._read():
            family.add_metric(list(labels), value)
        yield family
