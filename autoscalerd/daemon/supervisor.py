"""The supervisor: owns every task, handles signals, reloads, and stops cleanly.

- SIGTERM/SIGINT: stop within `SHUTDOWN_SECONDS` (release the Lease, close sessions), exit 0.
- SIGHUP, or a change of a configuration file on disk: reload. A configuration that fails
  validation is logged with every problem and the running one stays in force. Policies that
  did not change keep their reconcilers, and with them their windows and panic state.
- Root tasks are eternal: one that ends (or fails) unexpectedly stops the daemon with exit 1.

It reaches the world through the ports in `ports.py`: the Kubernetes API (`connect_kube`),
the scraper (`make_scraper`), the clock and systemd's notify socket are handed in, with the
real ones as defaults, so tests drive it with fakes and step time by hand.

About 500 lines: start-up, the API check, leader election, reload, the file watch, cluster
mode's wiring and shutdown of one daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from autoscalerd import __version__
from autoscalerd.config.load import ConfigErrors, expand_paths, load_config
from autoscalerd.config.model import Config, DaemonConfig, Policy
from autoscalerd.daemon.cluster_policies import ClusterPolicies
from autoscalerd.daemon.eventloop import new_event_loop
from autoscalerd.daemon.notify import Notifier
from autoscalerd.daemon.options import RunOptions
from autoscalerd.daemon.ports import LOOP_CLOCK, Clock, Cluster, Elector, Scrape, SystemdNotify
from autoscalerd.daemon.reconciler import DaemonContext, PolicyReconciler
from autoscalerd.daemon.status_writer import StatusWriter
from autoscalerd.kube.client import connect
from autoscalerd.kube.errors import KubeError
from autoscalerd.logconfig import configure_logging
from autoscalerd.scrape.client import Scraper, ScrapeStats
from autoscalerd.scrape.prometheus_query import PrometheusQuery
from autoscalerd.server.app import HttpServer, parse_listen
from autoscalerd.server.history import HistoryStore
from autoscalerd.server.metrics import DaemonMetrics

__all__ = ["ConnectKube", "Supervisor", "connect_cluster", "new_scraper", "run_daemon"]

log = structlog.get_logger(__name__)

SHUTDOWN_SECONDS = 4.0
"""Budget for a clean stop (below the 5 s promised, and below systemd's TimeoutStopSec)."""
CONFIG_POLL_SECONDS = 2.0
"""How often the configuration files are checked for changes."""
API_RETRY_SECONDS = 2.0

ConnectKube = Callable[[RunOptions, DaemonConfig], Awaitable[Cluster]]
"""Opens the Kubernetes API for `--kubeconfig`/`--context`/`--in-cluster`; raises KubeError."""


async def connect_cluster(options: RunOptions, daemon: DaemonConfig) -> Cluster:
    """The real `ConnectKube` (a `KubeClient`)."""
    return await connect(
        options.kubeconfig,
        options.context,
        options.in_cluster,
        api_timeout=daemon.api_timeout_seconds,
    )


def new_scraper(daemon: DaemonConfig) -> Scrape:
    """The real scraper for a DaemonConfig (a new one on every change of it)."""
    return Scraper(daemon=daemon)


def run_daemon(options: RunOptions) -> int:
    """Entry point of `autoscalerd run`: returns the process exit code."""
    configure_logging(options.log_format, options.log_level)
    try:
        parse_listen(options.listen)
    except ValueError as exc:
        print(f"autoscalerd: {exc}", file=sys.stderr)
        return 2
    try:
        config = _load(options)
    except ConfigErrors as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        log.error("invalid configuration; not starting", problems=len(exc.problems))
        return 2
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(Supervisor(options, config).run())


def _load(options: RunOptions) -> Config:
    """The files' configuration; none at all is fine with --podautoscalers (issue 14)."""
    if options.podautoscalers and not options.config_paths:
        return Config()
    return load_config(list(options.config_paths))


def settle_heap() -> None:
    """Once, after start-up: move what exists now out of the cyclic collector's sight.

    `gc.freeze()` puts every object alive now (modules, the configuration, the clients) in a
    permanent generation that later collections no longer traverse. They live as long as the
    process, and the imported libraries alone bring ~90,000 of them: at 100 policies the
    collector's passes over them were ~5 % of the daemon's CPU. It runs before the first tick,
    so no connection or pod cache is frozen: those form reference cycles (protocol and
    transport) that must stay collectable when a pod goes away. Not after a reload, for the
    same reason. (Raising the collection thresholds was measured too: more RSS, no less CPU.)
    """
    gc.collect()
    gc.freeze()


class _FatalError(Exception):
    pass


class Supervisor:
    """Runs the daemon (`run()`) until stopped; the keyword arguments are its ports.

    `handle_signals=False` leaves the process's signal handlers alone (tests call
    `request_stop()`/`request_reload()` instead); `settle` runs once after start-up.
    """

    def __init__(
        self,
        options: RunOptions,
        config: Config,
        *,
        connect_kube: ConnectKube = connect_cluster,
        make_scraper: Callable[[DaemonConfig], Scrape] = new_scraper,
        clock: Clock = LOOP_CLOCK,
        notifier: SystemdNotify | None = None,
        handle_signals: bool = True,
        settle: Callable[[], None] = settle_heap,
    ) -> None:
        self.options = options
        self.config = config
        self.metrics = DaemonMetrics()
        self._closing_scrapers: list[Scrape] = []
        self._retired_stats = ScrapeStats()
        """What the scrapers replaced by reloads counted before they closed."""
        self.metrics.observe_connections(self._connection_totals)
        self.notifier: SystemdNotify = Notifier() if notifier is None else notifier
        self.clock = clock
        self._connect_kube = connect_kube
        self._make_scraper = make_scraper
        self._handle_signals = handle_signals
        self._settle = settle
        self.reconcilers: dict[str, tuple[PolicyReconciler, asyncio.Task[None]]] = {}
        self.ctx: DaemonContext | None = None
        self.kube: Cluster | None = None
        self.elector: Elector | None = None
        self._api_ok = False
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._exit_code = 0
        self._file_stamps = self._stamp_files()
        self._background: set[asyncio.Task[Any]] = set()
        # issue 15: the buffers behind /history and /ui (None: --history-seconds 0)
        self.history = HistoryStore(options.history_seconds) if options.history_seconds else None
        self.cluster_policies: ClusterPolicies | None = None
        """Issue 14 (`--podautoscalers`): the policies of PodAutoscaler objects."""

    def _connection_totals(self) -> tuple[int, int, int]:
        """`autoscalerd_scrape_connections` and `_late_answers`, over every scraper so far."""
        stats = [self._retired_stats, *(s.stats for s in self._closing_scrapers)]
        if self.ctx is not None:
            stats.append(self.ctx.scraper.stats)
        return (
            sum(s.connections_created for s in stats),
            sum(s.late_kept for s in stats),
            sum(s.late_dropped for s in stats),
        )

    # -- StatusSource for the HTTP server ---------------------------------------------------

    def is_ready(self) -> tuple[bool, str]:
        if not self._api_ok:
            return False, "the Kubernetes API has not answered yet"
        rejected = None if self.kube is None else self.kube.credentials_rejected
        if rejected is not None:
            lease = self.config.daemon.leader_election.lease_duration_seconds
            if asyncio.get_running_loop().time() - rejected.since > lease:
                return False, f"{rejected.problem}: {rejected.message}"
        if self.cluster_policies is not None and not self.cluster_policies.feed.synced:
            return False, "the PodAutoscaler objects have not been listed yet"  # issue 14
        return True, ""

    def _problems(self) -> list[dict[str, Any]]:
        """Daemon-level problems for `/status` (today: the API rejects our credentials)."""
        rejected = None if self.kube is None else self.kube.credentials_rejected
        # issue 14: the PodAutoscaler watch's failure
        watch = self.cluster_policies.problem if self.cluster_policies is not None else None
        extra = [watch] if watch is not None else []
        if rejected is None:
            return extra
        return [
            {
                "problem": rejected.problem,
                "message": rejected.message,
                "since": rejected.since_wall,
                "rejected_calls": rejected.calls,
            },
            *extra,
        ]

    def status(self) -> Mapping[str, Any]:
        leader = None if self.elector is None else self.elector.is_leader
        return {
            "version": __version__,
            "leader": leader,
            "dry_run": self.options.dry_run,
            "config_files": list(self.config.files),
            "scrape_interval_seconds": self.config.daemon.scrape_interval_seconds,
            "problems": self._problems(),
            "policies": [r.status() for r, _ in self.reconcilers.values()],
        }

    # -- main ---------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        if self._handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_stop_signal, sig)
            loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        server: HttpServer | None = None
        try:
            try:
                self.kube = await self._connect_kube(self.options, self.config.daemon)
            except KubeError as exc:
                log.error("cannot load Kubernetes credentials", error=str(exc))
                return 1
            server = HttpServer(self, self.metrics, self.options.listen, history=self.history)
            try:
                await server.start()
            except OSError as exc:
                log.error("cannot listen", listen=self.options.listen, error=str(exc))
                return 1
            self.ctx = DaemonContext(
                kube=self.kube,
                scraper=self._make_scraper(self.config.daemon),
                query=PrometheusQuery(),  # issue 12: prometheus sources (session made on use)
                metrics=self.metrics,
                daemon=self.config.daemon,
                dry_run=self.options.dry_run,
                insecure_default=self.options.insecure_skip_tls_verify,
                clock=self.clock,
                history=self.history,
            )
            self.metrics.scrape_interval_seconds.set(self.config.daemon.scrape_interval_seconds)
            if self.options.insecure_skip_tls_verify:
                log.warning(
                    "--insecure-skip-tls-verify: metric sources that do not set "
                    "tlsConfig.insecureSkipVerify will not verify certificates"
                )
            if self.options.leader_elect:
                self.elector = self.kube.leader_elector(self.config.daemon.leader_election)
                self.elector.on_change(self._on_leadership)
                self.ctx.write_permission = self._leader_permission
                self.elector.start()
                self.metrics.leader.set(0)
            else:
                self.metrics.leader.set(1)
            log.info(
                "autoscalerd started",
                version=__version__,
                server=self.kube.server,
                credentials=self.kube.source,
                listen=server.bound or self.options.listen,
                policies=len(self.config.policies),
                dry_run=self.options.dry_run or None,
                leader_election=self.options.leader_elect or None,
            )
            if self.options.podautoscalers:
                self._start_cluster_mode()
            self._spawn(self._wait_for_api(), "api-check")
            self._spawn(self._watch_files(), "config-watch")
            self._spawn(self._reload_loop(), "reload")
            if self.notifier.watchdog_interval:
                self._spawn(self._watchdog(), "watchdog")
            self._apply_policies(self.config)
            self._settle()
            self.notifier.ready(f"{len(self.config.policies)} policies")
            await self._stop.wait()
            return self._exit_code
        finally:
            self.notifier.stopping()
            await self._shutdown(server)
            if self._handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)

    def request_stop(self) -> None:
        """Stop as SIGTERM does: `run()` returns once everything is closed."""
        self._stop.set()

    def request_reload(self) -> None:
        """Reload as SIGHUP does."""
        self._reload.set()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(self._guard(coro, name), name=name)
        self._background.add(task)

    async def _guard(self, coro: Any, name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("root task failed; stopping", task=name)
            self._exit_code = 1
            self._stop.set()
            return
        if not self._stop.is_set():
            log.error("root task finished unexpectedly; stopping", task=name)
            self._exit_code = 1
            self._stop.set()

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if not self._stop.is_set():
            log.info("stopping", signal=sig.name)
        self._stop.set()

    def _on_hup(self) -> None:
        log.info("reload requested", signal="SIGHUP")
        self._reload.set()

    def _on_leadership(self, leading: bool) -> None:
        self.metrics.leader.set(1 if leading else 0)
        log.info("leadership acquired" if leading else "leadership lost; not writing")
        self.notifier.status("leader" if leading else "follower")

    def _leader_permission(self) -> tuple[bool, float | None]:
        assert self.elector is not None
        return self.elector.is_leader, self.elector.leader_deadline

    async def _wait_for_api(self) -> None:
        assert self.kube is not None
        failures = 0
        while True:
            try:
                version = await self.kube.server_version()
            except KubeError as exc:
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    log.warning(
                        "the Kubernetes API does not answer yet", error=str(exc), attempts=failures
                    )
                await self.clock.sleep(API_RETRY_SECONDS)
                continue
            self._api_ok = True
            log.info("connected to the Kubernetes API", version=version)
            await asyncio.Event().wait()  # eternal, as root tasks are

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval or 1.0
        while True:
            self.notifier.watchdog()
            await self.clock.sleep(interval)

    # -- policies and reload -------------------------------------------------------------

    def _scheduled_bounds(self, policy: Policy) -> Mapping[str, Any] | None:
        """`status.scheduledBounds` of a policy's object: from its reconciler's last decision."""
        entry = self.reconcilers.get(policy.key)
        return entry[0].scheduled_bounds() if entry is not None else None

    def _start_cluster_mode(self) -> None:
        """Issue 14: PodAutoscaler objects as policies, their status written back."""
        assert self.kube is not None and self.ctx is not None
        settings = self.config.daemon.pod_autoscalers
        feed = self.kube.pod_autoscalers(settings.namespaces, settings.label_selector)
        self.cluster_policies = ClusterPolicies(
            feed, settings, lambda: self._apply_policies(self.config)
        )
        writer = StatusWriter(
            self.kube,
            self.cluster_policies,
            lambda key: self.reconcilers[key][0] if key in self.reconcilers else None,
            self.clock,
            lambda: self.config.daemon.scrape_interval_seconds,
            lambda: self.ctx.write_permission() if self.ctx else (False, None),
            dry_run=self.options.dry_run,
            scheduled_bounds=self._scheduled_bounds,
        )
        self._spawn(self.cluster_policies.run(), "podautoscalers")
        self._spawn(writer.run(), "podautoscaler-status")
        log.info(
            "cluster mode: taking policies from PodAutoscaler objects",
            namespaces=list(settings.namespaces) or "all",
            label_selector=settings.label_selector or None,
            claim=settings.claim,
        )

    def _apply_policies(self, config: Config) -> None:
        assert self.ctx is not None
        policies = list(config.policies)
        if self.cluster_policies is not None:  # issue 14: files and objects together
            policies += self.cluster_policies.policies(config.policies)
        wanted = {p.key: p for p in policies}
        for key in list(self.reconcilers):
            reconciler, task = self.reconcilers[key]
            new = wanted.get(key)
            if new is not None and (new == reconciler.policy or reconciler.retune(new)):
                continue
            task.cancel()
            del self.reconcilers[key]
            self.metrics.forget_policy(reconciler.policy.namespace, reconciler.policy.name)
            log.info(
                "policy removed" if new is None else "policy changed; restarting it", policy=key
            )
        for key, policy in wanted.items():
            if key in self.reconcilers:
                continue
            reconciler = PolicyReconciler(policy, self.ctx)
            task = asyncio.get_running_loop().create_task(reconciler.run(), name=f"policy {key}")
            self.reconcilers[key] = (reconciler, task)
        # keep file order for /status
        self.reconcilers = {k: self.reconcilers[k] for k in wanted}
        if self.history is not None:  # issue 15: same keys keep their history, gone ones freed
            self.history.sync(wanted)

    async def _reload_loop(self) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            await self._do_reload()

    async def _do_reload(self) -> None:
        assert self.ctx is not None
        self.notifier.reloading()
        self._file_stamps = self._stamp_files()
        try:
            config = _load(self.options)
        except ConfigErrors as exc:
            self.metrics.config_reloads_total.labels("error").inc()
            log.error(
                "reload failed; the running configuration stays in force",
                problems=[str(p) for p in exc.problems],
            )
            self.notifier.ready("reload failed; previous configuration in force")
            return
        old_daemon = self.config.daemon
        self.config = config
        if self.cluster_policies is not None:  # issue 14
            self.cluster_policies.reconfigure(config.daemon.pod_autoscalers)
        if config.daemon != old_daemon:
            old_scraper = self.ctx.scraper
            self.ctx.scraper = self._make_scraper(config.daemon)
            self.ctx.daemon = config.daemon
            self._spawn_close_later(old_scraper)
            self.metrics.scrape_interval_seconds.set(config.daemon.scrape_interval_seconds)
        self._apply_policies(config)
        self.metrics.config_reloads_total.labels("ok").inc()
        log.info("configuration reloaded", policies=len(config.policies))
        self.notifier.ready(f"{len(config.policies)} policies")

    def _spawn_close_later(self, scraper: Scrape) -> None:
        """Close the replaced scraper once the ticks that may still use it are over."""

        self._closing_scrapers.append(scraper)

        async def close_later() -> None:
            try:
                await self.clock.sleep(self.config.daemon.scrape_interval_seconds * 2)
                await scraper.close()
            finally:
                self._closing_scrapers.remove(scraper)
                retired, stats = self._retired_stats, scraper.stats
                retired.connections_created += stats.connections_created
                retired.late_kept += stats.late_kept
                retired.late_dropped += stats.late_dropped

        task = asyncio.get_running_loop().create_task(close_later())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _stamp_files(self) -> dict[str, tuple[float, int] | None]:
        stamps: dict[str, tuple[float, int] | None] = {}
        files, _ = expand_paths(self.options.config_paths)
        for path in (*self.options.config_paths, *files):
            try:
                st = os.stat(path)
                stamps[path] = (st.st_mtime, st.st_size)
            except OSError:
                stamps[path] = None
        return stamps

    async def _watch_files(self) -> None:
        while True:
            await self.clock.sleep(CONFIG_POLL_SECONDS)
            stamps = await asyncio.to_thread(self._stamp_files)
            if stamps != self._file_stamps:
                self._file_stamps = stamps
                log.info("configuration files changed; reloading")
                self._reload.set()

    # -- shutdown ------------------------------------------------------------------------

    async def _shutdown(self, server: HttpServer | None) -> None:
        # The budget is real time, not `self.clock`'s: it bounds waits on real tasks and I/O.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_SECONDS
        tasks = [t for _, t in self.reconcilers.values()] + list(self._background)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(0.1, deadline - loop.time() - 2.0))
            for task in pending:
                log.warning("task did not stop in time", task=task.get_name())
        if self.kube is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(max(0.1, deadline - loop.time() - 0.5)):
                    await self.kube.close()  # releases the Lease, stops watches, flushes events
        if self.ctx is not None:
            with contextlib.suppress(Exception):
                await self.ctx.scraper.close()
                if self.ctx.query is not None:  # issue 12: prometheus sources' session
                    await self.ctx.query.close()
        if server is not None:
            with contextlib.suppress(Exception):
                await server.stop()
        log.info("stopped")
