"""`/history` of the real `autoscalerd run` process: reloads, the off switch, and `demo`'s
`/ui` address."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from e2e_harness import policy_yaml, write
from waiting import wait_for

from autoscalerd.sandbox import MetricsEndpoint, Sandbox

pytestmark = pytest.mark.e2e

NS, METRIC = "shop", "go_threads"
ENDPOINT = MetricsEndpoint(port=9100, path="/metrics", tls="plain", metric=METRIC)


def app(name: str, target_value: float = 20) -> str:
    return policy_yaml(name=name, namespace=NS, target=name, protocol="http", port=9100,
                       target_value=target_value)  # fmt: skip


async def history(daemon: Any, policy: str, seconds: int = 600) -> tuple[int, dict[str, Any]]:
    code, text = await daemon.get(f"/history?policy={policy}&seconds={seconds}")
    return code, json.loads(text)


async def history_when(
    daemon: Any, policy: str, done: Callable[[dict[str, Any]], bool], what: str, timeout: float = 15
) -> dict[str, Any]:
    """The first `/history` of `policy` that is `done` (every answer must be a 200)."""
    last: dict[str, Any] = {}

    async def seen() -> dict[str, Any] | None:
        nonlocal last
        code, last = await history(daemon, policy)
        assert code == 200, last
        return last if done(last) else None

    return await wait_for(
        seen, timeout=timeout, poll=0.1, what=lambda: f"{what}; last /history: {last}"
    )


async def points_at_least(daemon: Any, policy: str, n: int, timeout: float = 15) -> dict[str, Any]:
    def enough(doc: dict[str, Any]) -> bool:
        return len([v for v in doc["ready"] if v is not None]) >= n

    return await history_when(daemon, policy, enough, f"{n} points of {policy}", timeout)


async def test_reload_keeps_a_changed_policys_history_and_frees_a_removed_one(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    for name in ("web", "old"):
        await sandbox.add_deployment(NS, name, replicas=1, metrics=ENDPOINT)
        sandbox.set_load(NS, name, METRIC, 20)
    path = write(tmp_path, "p.yaml", app("web") + "---\n" + app("old"))
    daemon = await start_daemon(path)
    before = await points_at_least(daemon, "shop/web", 3)
    assert before["metrics"][0]["targets"] == [[0, 20.0]]
    assert before["metrics"][0]["values"][-1] == 20.0

    path.write_text(app("web", target_value=10))  # web changed, old removed
    daemon.send(signal.SIGHUP)
    await daemon.wait_log(lambda d: d.get("event") == "configuration reloaded")
    after = await history_when(
        daemon, "shop/web", lambda doc: len(doc["metrics"][0]["targets"]) == 2, "two targets"
    )
    targets = after["metrics"][0]["targets"]
    assert after["start"] <= before["start"], "the points from before the reload are kept"
    assert [t for _, t in targets] == [20.0, 10.0]
    assert targets[1][0] >= len(before["ready"])

    code, gone = await history(daemon, "shop/old")
    assert code == 404 and "no policy 'shop/old'" in gone["error"]
    _, metrics = await daemon.get("/metrics")
    assert re.search(
        r'autoscalerd_target_value\{autoscaler="web",metric="go_threads",namespace="shop"\} 10\.0',
        metrics,
    )
    assert 'autoscaler="old"' not in metrics  # fmt: skip
    assert re.search(
        r'autoscalerd_last_data_timestamp_seconds\{autoscaler="web",namespace="shop"\} \d', metrics
    )
    assert "autoscalerd_scrape_interval_seconds 1.0" in metrics  # fmt: skip
    assert await daemon.stop() == 0


async def test_history_off_answers_404_and_the_page_still_loads(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any
) -> None:
    await sandbox.add_deployment(NS, "web", replicas=1, metrics=ENDPOINT)
    sandbox.set_load(NS, "web", METRIC, 20)
    daemon = await start_daemon(
        write(tmp_path, "p.yaml", app("web")), env={"AUTOSCALERD_HISTORY_SECONDS": "0"}
    )
    code, doc = await history(daemon, "shop/web")
    assert code == 404 and "--history-seconds 0" in doc["error"]
    code, page = await daemon.get("/ui")
    assert code == 200 and "<title>autoscalerd</title>" in page
    assert await daemon.stop() == 0


async def ui_address(stdout: asyncio.StreamReader) -> str:
    """The `/ui` address the demo prints (AssertionError if it ends without printing one)."""
    while True:
        line = (await stdout.readline()).decode()
        assert line, "the demo ended without printing the /ui address"
        if m := re.match(r"\s+ui\s+(http://127\.0\.0\.1:\d+/ui)\b", line):
            return m.group(1)


async def test_demo_prints_the_ui_address_and_it_answers_while_the_demo_runs() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "autoscalerd", "demo", "--duration", "12",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        url = await asyncio.wait_for(ui_address(proc.stdout), 60)
        doc: dict[str, Any] = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

            async def has_points() -> bool:  # up while the demo runs: the page, and history
                nonlocal doc
                try:
                    async with http.get(url) as resp:
                        assert resp.status == 200
                    async with http.get(url.replace("/ui", "/history?seconds=60")) as resp:
                        doc = await resp.json()
                except aiohttp.ClientConnectionError:
                    return False  # the daemon is still starting
                return bool(doc["policies"] and doc["policies"][0]["points"])

            await wait_for(
                has_points,
                timeout=30,  # the demo runs for 12 s
                poll=0.2,
                what=lambda: f"a policy with points in the demo's /history; last: {doc}",
            )
        rest, _ = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, rest.decode()
    assert doc["policies"][0]["policy"] == "kube-system/metric-server-autoscaler"
