"""The supervisor in cluster mode (`--podautoscalers`) against fakes: objects become
reconcilers beside the files' policies, an edit of the bounds keeps the reconciler (and its
windows), another edit replaces it, a delete stops it at once, a clash with a file keeps the
file's policy; the watch's failure shows in /status. Time is stepped by hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes import FakeKube, FakeNotifier, FakeScraper, ManualClock, pod
from test_cluster_policies import obj
from waiting import wait_for

from autoscalerd.config.load import load_config
from autoscalerd.config.model import Config, DaemonConfig
from autoscalerd.daemon.options import RunOptions
from autoscalerd.daemon.ports import Cluster
from autoscalerd.daemon.supervisor import Supervisor

FILE = """\
apiVersion: autoscaling.aibrix.ai/v1alpha1
kind: PodAutoscaler
metadata: {name: from-file, namespace: default}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: file-target}
  maxReplicas: 4
  scalingStrategy: KPA
  metricsSources:
    - {metricSourceType: pod, protocolType: http, port: '8000', path: /metrics,
       targetMetric: requests, targetValue: '10'}
"""


class Running:
    def __init__(self, sup: Supervisor, kube: FakeKube, task: asyncio.Task[int]) -> None:
        self.sup, self.kube, self.task = sup, kube, task

    def keys(self) -> list[str]:
        return sorted(self.sup.reconcilers)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    path = tmp_path / "p.yaml"
    path.write_text(FILE)
    kube = FakeKube(1, [pod("web-0", "10.0.0.1")])
    options = RunOptions(config_paths=(str(path),), listen="127.0.0.1:0", podautoscalers=True)
    notifier = FakeNotifier()

    async def connect(opts: RunOptions, daemon: DaemonConfig) -> Cluster:
        return kube

    sup = Supervisor(
        options, load_config([str(path)]), connect_kube=connect,
        make_scraper=lambda _d: FakeScraper(), clock=ManualClock(1000.0), notifier=notifier,
        handle_signals=False, settle=lambda: None,
    )  # fmt: skip
    task = asyncio.create_task(sup.run())
    await wait_for(lambda: notifier.count("READY=1") == 1)
    yield Running(sup, kube, task)
    sup.request_stop()
    assert await asyncio.wait_for(task, 10) == 0
    assert not kube.podautoscalers.started, "the feed stops with the daemon"


async def test_objects_and_files_together(running: Running) -> None:
    feed = running.kube.podautoscalers
    assert feed.started and feed.scope == ((), "")
    assert running.keys() == ["default/from-file"]
    feed.put(obj("web"))
    await wait_for(lambda: running.keys() == ["default/from-file", "default/web"])
    web = running.sup.reconcilers["default/web"][0]

    feed.put(obj("web", maxReplicas=9))  # bounds only: the same reconciler, retuned
    await wait_for(lambda: web.policy.max_replicas == 9)
    assert running.sup.reconcilers["default/web"][0] is web

    feed.put(obj("web", maxReplicas=9, scalingStrategy="APA"))  # the algorithm: a new one
    await wait_for(lambda: running.sup.reconcilers["default/web"][0] is not web)
    new_task = running.sup.reconcilers["default/web"][1]

    feed.put(obj("web", maxReplicas=0))  # invalid now: never acted on, stopped
    await wait_for(lambda: running.keys() == ["default/from-file"])
    await wait_for(new_task.done)

    feed.put(obj("from-file", target="elsewhere"))  # a name clash: the file wins
    feed.put(obj("web"))
    await wait_for(lambda: running.keys() == ["default/from-file", "default/web"])
    policy = running.sup.reconcilers["default/from-file"][0].policy
    assert policy.target.name == "file-target"
    verdict = running.sup.cluster_policies.verdicts[("default", "from-file")]  # type: ignore[union-attr]
    assert verdict.state == "clash" and verdict.reason == "NameClash"

    feed.delete("default", "web")  # deleted: stops at once
    await wait_for(lambda: running.keys() == ["default/from-file"])


async def test_not_ready_until_the_objects_are_listed(running: Running) -> None:
    await wait_for(lambda: running.sup.is_ready()[0])
    running.kube.podautoscalers.synced = False
    assert running.sup.is_ready() == (
        False, "the PodAutoscaler objects have not been listed yet"
    )  # fmt: skip


async def test_the_watchs_failure_shows_in_status(running: Running) -> None:
    running.kube.podautoscalers.last_error = "list podautoscalers: 403 forbidden"
    (problem,) = running.sup.status()["problems"]
    assert problem["problem"] == "podautoscalers_watch"
    assert "403 forbidden" in problem["message"] and "RBAC" in problem["message"]


def test_no_files_are_needed_in_cluster_mode() -> None:
    from autoscalerd.daemon.supervisor import _load

    assert _load(RunOptions(config_paths=(), podautoscalers=True)) == Config()
