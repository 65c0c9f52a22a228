"""`/ui` of the real `autoscalerd run` process, loaded in headless Chromium.

The page must refresh itself (no reload) and then show what `/status` says at that moment;
policies with problems come first; the charts are drawn from `/history`; the page runs under
its Content-Security-Policy without a single console error. The screenshot is written to the
test's temporary directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from e2e_browser import Browser, find_chromium
from e2e_harness import policy_yaml, write
from waiting import wait_for

from autoscalerd.sandbox import MetricsEndpoint, Sandbox

pytestmark = pytest.mark.e2e

NS, METRIC = "shop", "go_threads"

PANEL_STATE = """
(() => {
  const out = {refreshes: Number(document.body.dataset.refreshes || 0), order: [], panels: {}};
  for (const p of document.querySelectorAll("section.panel")) {
    if (p.hidden) continue;
    out.order.push(p.dataset.policy);
    const fields = {};
    for (const f of p.querySelectorAll("[data-field]")) fields[f.dataset.field] = f.textContent;
    const paths = [...p.querySelectorAll("svg path")].filter((e) => e.getAttribute("d"));
    out.panels[p.dataset.policy] = {fields, paths: paths.length,
      problem: p.classList.contains("problem")};
  }
  return JSON.stringify(out);
})()
"""


def fmt(v: Any) -> str:
    """What the page prints for a /status value (its `fmt`)."""
    if v is None:
        return "–"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


@pytest.fixture
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium): /ui not loaded")
    return path


def by_name(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in status["policies"]}


async def page_state(browser: Browser) -> dict[str, Any]:
    return dict(json.loads(await browser.evaluate(PANEL_STATE)))


async def test_ui_refreshes_itself_and_shows_the_current_values(
    tmp_path: Path, sandbox: Sandbox, start_daemon: Any, chromium: str
) -> None:
    endpoint = MetricsEndpoint(port=9100, path="/metrics", tls="plain", metric=METRIC)
    await sandbox.add_deployment(NS, "web", replicas=1, metrics=endpoint)
    await sandbox.add_deployment(NS, "broken", replicas=1, metrics=endpoint)
    sandbox.set_load(NS, "web", METRIC, 20)
    sandbox.set_load(NS, "broken", METRIC, 20)
    web = policy_yaml(name="web", namespace=NS, target="web", protocol="http", port=9100)
    # the wrong port: every scrape fails, no data, no decision: a problem to show first
    broken = policy_yaml(name="broken", namespace=NS, target="broken", protocol="http", port=9199)
    daemon = await start_daemon(write(tmp_path, "p.yaml", web + "---\n" + broken))
    doc = await daemon.wait_status(
        lambda doc: (
            by_name(doc)["web"]["ticks"] >= 2 and bool(by_name(doc)["broken"]["last_error"])
        ),
        timeout=20,
        poll=0.1,
    )
    status = by_name(doc)

    browser = await Browser.start(chromium, tmp_path)
    try:
        await browser.goto(f"http://127.0.0.1:{daemon.port}/ui")
        await browser.wait_for("Number(document.body.dataset.refreshes || 0) >= 1")
        first = await page_state(browser)
        assert first["order"] == ["shop/broken", "shop/web"], "problems first"
        assert first["panels"]["shop/broken"]["problem"] is True
        assert first["panels"]["shop/web"]["problem"] is False
        broken_error = status["broken"]["last_error"]
        assert first["panels"]["shop/broken"]["fields"]["error"] == broken_error
        assert first["panels"]["shop/broken"]["fields"]["desired"] == "–"

        # Change the load: the page must pick it up by itself, and then agree with /status.
        sandbox.set_load(NS, "web", METRIC, 30)
        state: dict[str, Any] = {}
        seen: dict[str, Any] = {}
        want: dict[str, Any] = {}

        async def page_agrees() -> bool:
            nonlocal state, seen, want
            state = await page_state(browser)
            now = by_name(await daemon.status())["web"]
            fields = state["panels"]["shop/web"]["fields"]
            want = {
                f"metric:{METRIC}": fmt(now["metrics"][METRIC]),
                "ready": fmt(now["ready_pods"]),
                "desired": fmt(now["desired_replicas"]),
                "current": fmt(now["current_replicas"]),
                "reason": now["reason"],
            }
            seen = {k: fields.get(k) for k in want}
            return (
                state["refreshes"] > first["refreshes"]
                and fields.get(f"metric:{METRIC}") == "30"
                and seen == want
            )

        await wait_for(
            page_agrees,
            timeout=30,
            poll=0.2,
            what=lambda: (
                f"the page refreshed to load 30 ({state.get('refreshes')} refreshes, "
                f"first {first['refreshes']}): page {seen} vs /status {want}"
            ),
        )
        assert state["panels"]["shop/web"]["paths"] >= 2, "metric and replica lines drawn"
        assert state["order"] == ["shop/broken", "shop/web"]

        # The filter box narrows the list without a reload.
        await browser.evaluate(
            'const f = document.getElementById("filter"); f.value = "web";'
            'f.dispatchEvent(new Event("input"));'
        )
        assert (await page_state(browser))["order"] == ["shop/web"]

        shot = await browser.screenshot(tmp_path / "ui.png")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 10_000
        assert browser.errors == []
    finally:
        await browser.close()
    assert await daemon.stop() == 0
