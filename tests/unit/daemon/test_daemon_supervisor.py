"""The supervisor against fakes: reload, shutdown, leadership, the API check and the systemd
watchdog, with time stepped by hand (`tests/fakes.py`). Its HTTP server is real, on
127.0.0.1 with a port of the kernel's choice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes import FakeKube, FakeNotifier, FakeScraper, ManualClock, pod
from waiting import wait_for

from autoscalerd.config.load import load_config
from autoscalerd.config.model import DaemonConfig
from autoscalerd.daemon.options import RunOptions
from autoscalerd.daemon.ports import Cluster
from autoscalerd.daemon.reconciler import PolicyReconciler
from autoscalerd.daemon.supervisor import (
    API_RETRY_SECONDS,
    CONFIG_POLL_SECONDS,
    Supervisor,
)
from autoscalerd.kube.errors import KubeConfigError, KubeUnavailable

T0 = 1000.0


def policy(name: str, max_replicas: int = 4, target: str = "10") -> str:
    return (
        "apiVersion: autoscaling.aibrix.ai/v1alpha1\n"
        "kind: PodAutoscaler\n"
        f"metadata: {{name: {name}, namespace: default}}\n"
        "spec:\n"
        f"  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}\n"
        f"  maxReplicas: {max_replicas}\n"
        "  scalingStrategy: KPA\n"
        "  metricsSources:\n"
        "    - {metricSourceType: pod, protocolType: http, port: '8000', path: /metrics,"
        f" targetMetric: requests, targetValue: '{target}'}}\n"
    )


DAEMON_CONFIG = "apiVersion: autoscalerd.io/v1alpha1\nkind: DaemonConfig\nscrapeInterval: {}\n"


@dataclass
class Running:
    sup: Supervisor
    task: asyncio.Task[int]
    kube: FakeKube
    clock: ManualClock
    notifier: FakeNotifier
    scrapers: list[FakeScraper]
    path: Path

    def reconciler(self, name: str) -> PolicyReconciler:
        return self.sup.reconcilers[f"default/{name}"][0]

    async def stop(self) -> int:
        self.sup.request_stop()
        return await asyncio.wait_for(self.task, 10)


Start = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    started: list[Running] = []

    async def start_supervisor(
        text: str = policy("web") + "---\n" + policy("api"),
        *,
        leader_elect: bool = False,
        watchdog: float | None = None,
        kube: FakeKube | None = None,
        connect_error: Exception | None = None,
    ) -> Running:
        path = tmp_path / "policies.yaml"
        path.write_text(text)
        options = RunOptions(
            config_paths=(str(path),), listen="127.0.0.1:0", leader_elect=leader_elect
        )
        the_kube = kube or FakeKube(1, [pod("web-0")])
        clock = ManualClock(T0)
        notifier = FakeNotifier(watchdog_interval=watchdog)
        scrapers: list[FakeScraper] = []

        async def connect(opts: RunOptions, daemon: DaemonConfig) -> Cluster:
            if connect_error is not None:
                raise connect_error
            return the_kube

        def make_scraper(daemon: DaemonConfig) -> FakeScraper:
            scrapers.append(FakeScraper())
            return scrapers[-1]

        sup = Supervisor(
            options, load_config([str(path)]), connect_kube=connect, make_scraper=make_scraper,
            clock=clock, notifier=notifier, handle_signals=False, settle=lambda: None,
        )  # fmt: skip
        task = asyncio.get_running_loop().create_task(sup.run())
        running = Running(sup, task, the_kube, clock, notifier, scrapers, path)
        started.append(running)
        if connect_error is None:
            await wait_for(lambda: notifier.count("READY=1") == 1 or task.done())
        return running

    yield start_supervisor
    for running in started:
        if not running.task.done():
            running.sup.request_stop()
            await asyncio.wait_for(running.task, 10)


def reloads(running: Running, result: str) -> float:
    value = running.sup.metrics.registry.get_sample_value(
        "autoscalerd_config_reloads_total", {"result": result}
    )
    return value or 0.0


# -- start and stop --------------------------------------------------------------------------


async def test_start_then_stop_cancels_every_task_and_closes_everything(
    start: Start,
) -> None:
    running = await start()
    sup = running.sup
    assert list(sup.reconcilers) == ["default/web", "default/api"]
    assert running.notifier.sent[0] == "READY=1 2 policies"
    tasks = [t for _, t in sup.reconcilers.values()] + list(sup._background)

    assert await running.stop() == 0

    assert all(t.done() for t in tasks)
    assert running.kube.closed and running.scrapers[0].closed
    assert running.notifier.sent[-1] == "STOPPING=1"
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert others == [], f"leaked: {others}"


async def test_credentials_that_cannot_be_loaded_exit_1(start: Start) -> None:
    running = await start(connect_error=KubeConfigError("no kubeconfig"))
    assert await asyncio.wait_for(running.task, 10) == 1
    assert running.notifier.count("READY=1") == 0


async def test_ready_once_the_api_answers_retrying_on_the_clock(
    start: Start,
) -> None:
    kube = FakeKube(1)
    kube.version_errors = [KubeUnavailable("connection refused")] * 2
    running = await start(kube=kube)
    await wait_for(lambda: kube.version_calls == 1)
    assert running.sup.is_ready() == (False, "the Kubernetes API has not answered yet")
    running.clock.advance(API_RETRY_SECONDS)
    await wait_for(lambda: kube.version_calls == 2)
    assert not running.sup.is_ready()[0]
    running.clock.advance(API_RETRY_SECONDS)
    await wait_for(lambda: running.sup.is_ready()[0])
    assert kube.version_calls == 3


# -- reload ----------------------------------------------------------------------------------


async def test_reload_keeps_unchanged_policies_and_their_windows(
    start: Start,
) -> None:
    running = await start()
    running.scrapers[0].set("requests", web_0=100)  # 10x the target: KPA panics
    web, api = running.reconciler("web"), running.reconciler("api")
    for ticks in (1, 2):
        running.clock.advance(1.0)
        await wait_for(lambda n=ticks: web.ticks == n and api.ticks == n)
    mode = web.status()["mode"]
    assert mode == "panic" and web.status()["metrics"] == {"requests": 100.0}
    web_autoscaler = web.autoscaler
    old_api_task = running.sup.reconcilers["default/api"][1]

    # web: only its bounds change (retuned in place); api: its target (a new reconciler)
    running.path.write_text(policy("web", max_replicas=6) + "---\n" + policy("api", target="20"))
    running.sup.request_reload()
    await wait_for(lambda: reloads(running, "ok") == 1)

    assert running.reconciler("web") is web, "bounds only: same reconciler"
    assert web.autoscaler is web_autoscaler, "and so the same windows and panic state"
    assert web.policy.max_replicas == 6 and web.autoscaler.policy.max_replicas == 6
    new_api = running.reconciler("api")
    assert new_api is not api and new_api.policy.sources[0].target_value == 20
    await wait_for(old_api_task.done)
    running.clock.advance(1.0)
    await wait_for(lambda: web.ticks == 3 and new_api.ticks == 1)
    assert web.status()["mode"] == "panic", "the unchanged policy is still in its panic"
    assert running.notifier.sent[-2:] == ["RELOADING=1", "READY=1 2 policies"]


async def test_a_bad_file_keeps_the_running_configuration(start: Start) -> None:
    running = await start()
    before = dict(running.sup.reconcilers)
    config = running.sup.config

    running.path.write_text(policy("web").replace("maxReplicas: 4", "maxReplicas: many"))
    running.sup.request_reload()
    await wait_for(lambda: reloads(running, "error") == 1)

    assert running.sup.config is config
    assert running.sup.reconcilers == before
    assert all(not t.done() for _, t in before.values())
    assert running.notifier.sent[-1] == "READY=1 reload failed; previous configuration in force"


async def test_a_changed_file_is_reloaded_at_the_next_poll(start: Start) -> None:
    running = await start()
    running.path.write_text(policy("web"))
    running.clock.advance(CONFIG_POLL_SECONDS)
    await wait_for(lambda: reloads(running, "ok") == 1)
    assert list(running.sup.reconcilers) == ["default/web"]


async def test_new_daemon_settings_replace_the_scraper_and_close_the_old_one_later(
    start: Start,
) -> None:
    running = await start()
    old = running.scrapers[0]
    old.stats.connections_created, old.stats.late_kept, old.stats.late_dropped = 5, 2, 1
    running.path.write_text(DAEMON_CONFIG.format("2s") + "---\n" + policy("web"))
    running.sup.request_reload()
    await wait_for(lambda: reloads(running, "ok") == 1)
    assert len(running.scrapers) == 2
    assert running.sup.ctx is not None and running.sup.ctx.scraper is running.scrapers[1]
    assert running.sup.ctx.daemon.scrape_interval_seconds == 2.0
    assert not old.closed, "ticks in flight may still use it"
    running.scrapers[1].stats.connections_created = 1
    counted = (6.0, 2.0, 1.0)
    assert connection_counters(running) == counted, "the old scraper's counts go on counting"
    running.clock.advance(2 * 2.0)
    await wait_for(lambda: old.closed)
    assert connection_counters(running) == counted, "and stay after it closed"


def connection_counters(running: Running) -> tuple[float | None, ...]:
    """`autoscalerd_scrape_connections_total` and `_late_answers_total` (kept, closed)."""
    registry = running.sup.metrics.registry
    return (
        registry.get_sample_value("autoscalerd_scrape_connections_total"),
        registry.get_sample_value("autoscalerd_scrape_late_answers_total", {"connection": "kept"}),
        registry.get_sample_value(
            "autoscalerd_scrape_late_answers_total", {"connection": "closed"}
        ),
    )


# -- leadership ------------------------------------------------------------------------------


async def test_leadership_gained_and_lost(start: Start) -> None:
    running = await start(leader_elect=True)
    sup = running.sup
    (elector,) = running.kube.electors
    assert elector.started and sup.ctx is not None
    leader = sup.metrics.leader
    assert sup.status()["leader"] is False and leader._value.get() == 0
    assert sup.ctx.write_permission() == (False, None)

    elector.set_leading(True, deadline=T0 + 10.0)
    assert sup.status()["leader"] is True and leader._value.get() == 1
    assert sup.ctx.write_permission() == (True, T0 + 10.0)
    assert running.notifier.sent[-1] == "STATUS=leader"

    elector.set_leading(False)
    assert sup.ctx.write_permission() == (False, None)
    assert running.notifier.sent[-1] == "STATUS=follower"


async def test_without_leader_election_every_write_is_allowed(
    start: Start,
) -> None:
    running = await start()
    assert running.kube.electors == []
    assert running.sup.ctx is not None and running.sup.ctx.write_permission() == (True, None)
    assert running.sup.status()["leader"] is None


# -- systemd watchdog ------------------------------------------------------------------------


async def test_the_watchdog_pings_every_interval(start: Start) -> None:
    running = await start(watchdog=5.0)
    notifier, clock = running.notifier, running.clock
    await wait_for(lambda: notifier.count("WATCHDOG=1") == 1)
    for pings in (2, 3, 4):
        # one ping now, and asleep until exactly one interval later
        await wait_for(lambda: clock.asleep_until("watchdog") == clock.now() + 5.0)
        clock.advance(5.0)
        await wait_for(lambda n=pings: notifier.count("WATCHDOG=1") == n)


async def test_no_watchdog_when_systemd_asks_for_none(start: Start) -> None:
    running = await start()
    assert "watchdog" not in {t.get_name() for t in running.sup._background}
    assert running.notifier.count("WATCHDOG=1") == 0
