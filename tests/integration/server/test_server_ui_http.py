"""`GET /history` and `GET /ui` through the daemon's real aiohttp app (a hand-written status
source; the history store is the real one)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from autoscalerd.server.app import build_app
from autoscalerd.server.history import HistoryStore, Point
from autoscalerd.server.metrics import DaemonMetrics
from autoscalerd.server.ui_page import PAGE


class FakeStatus:
    def is_ready(self) -> tuple[bool, str]:
        return True, ""

    def status(self) -> Mapping[str, Any]:
        return {"policies": [], "scrape_interval_seconds": 1.0}


@pytest.fixture
async def store() -> HistoryStore:
    s = HistoryStore(60)
    s.sync(["ns/a", "ns/b"])
    now = asyncio.get_running_loop().time()
    for i in range(5):
        s.record(
            "ns/a",
            now - 4 + i,
            interval=1.0,
            names=["m"],
            targets=[20.0],
            point=Point(values=(10.0 * i,), ready=2, desired=3),
        )
    return s


async def _client(history: HistoryStore | None) -> TestClient:
    client = TestClient(TestServer(build_app(FakeStatus(), DaemonMetrics(), history)))
    await client.start_server()
    return client


@pytest.fixture
async def client(store: HistoryStore) -> AsyncIterator[TestClient]:
    c = await _client(store)
    yield c
    await c.close()


async def test_history_of_one_policy(client: TestClient) -> None:
    before = time.time()
    resp = await client.get("/history", params={"policy": "ns/a", "seconds": "10"})
    assert resp.status == 200
    doc = await resp.json()
    assert doc["policy"] == "ns/a"
    assert doc["history_seconds"] == 60
    assert doc["seconds"] == 10
    assert doc["points"] == 5  # from the first point present
    assert before - 1 <= doc["now"] <= time.time() + 1
    assert doc["end"] <= doc["now"] + 1
    values = [v for v in doc["metrics"][0]["values"] if v is not None]
    assert values == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert doc["desired"][-1] == 3


async def test_history_of_every_policy_in_one_answer(client: TestClient) -> None:
    resp = await client.get("/history", params={"seconds": "5"})
    assert resp.status == 200
    doc = await resp.json()
    assert [p["policy"] for p in doc["policies"]] == ["ns/a", "ns/b"]
    assert doc["policies"][1]["points"] == 0  # synced, no decision yet


async def test_seconds_default_to_the_buffer_and_are_capped_to_it(client: TestClient) -> None:
    for params in ({"policy": "ns/a"}, {"policy": "ns/a", "seconds": "1e9"}):
        doc = await (await client.get("/history", params=params)).json()
        assert doc["seconds"] == 60
        assert doc["points"] == 5


async def test_every_policy_at_once_is_cut_to_a_bounded_number_of_points() -> None:
    """200 policies x 3,600 s = 720,000 points > 500,000: each gets 2,500 s (rendered in
    a thread, from copies)."""
    s = HistoryStore(3600)
    keys = [f"ns/p{i}" for i in range(200)]
    s.sync(keys)
    now = asyncio.get_running_loop().time()
    for key in keys:
        for t in (now - 3000, now - 10, now - 1):
            point = Point(values=(1.0,), ready=1, desired=1)
            s.record(key, t, interval=1.0, names=["m"], targets=[1.0], point=point)
    c = await _client(s)
    try:
        doc = await (await c.get("/history")).json()
    finally:
        await c.close()
    assert doc["seconds"] == pytest.approx(2500)
    assert len(doc["policies"]) == 200
    for p in doc["policies"]:
        assert p["points"] <= 2500
        values = p["metrics"][0]["values"]
        assert values[0] == 1.0  # the point 10 s ago starts it (the one 3,000 s ago is out)
        assert [v for v in values if v is not None] == [1.0, 1.0]


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        pytest.param({"policy": "ns/nope"}, 404, "no policy 'ns/nope'", id="unknown-policy"),
        pytest.param({"policy": "ns/a", "seconds": "abc"}, 400, "not a number", id="not-a-number"),
        pytest.param({"policy": "ns/a", "seconds": "0"}, 400, "positive", id="zero"),
        pytest.param({"policy": "ns/a", "seconds": "-5"}, 400, "positive", id="negative"),
        pytest.param({"policy": "ns/a", "seconds": "nan"}, 400, "positive", id="nan"),
        pytest.param({"policy": "ns/a", "seconds": "inf"}, 400, "positive", id="inf"),
        pytest.param({"seconds": "x"}, 400, "not a number", id="bad-seconds-all-policies"),
        pytest.param({"policy": "no-slash"}, 400, "NAMESPACE/NAME", id="no-slash"),
        pytest.param({"policy": "a/b/c"}, 400, "NAMESPACE/NAME", id="two-slashes"),
        pytest.param({"policy": "ns/" + "x" * 500}, 400, "NAMESPACE/NAME", id="too-long"),
    ],
)
async def test_history_errors_say_what_is_wrong(
    client: TestClient, params: dict[str, str], status: int, message: str
) -> None:
    resp = await client.get("/history", params=params)
    assert resp.status == status
    assert resp.content_type == "application/json"
    assert message in (await resp.json())["error"]


async def test_unknown_policy_lists_known_ones(client: TestClient) -> None:
    resp = await client.get("/history", params={"policy": "ns/nope"})
    assert "known: ns/a, ns/b" in (await resp.json())["error"]


async def test_history_off_is_a_404_that_says_so() -> None:
    c = await _client(None)
    try:
        resp = await c.get("/history", params={"policy": "ns/a"})
        assert resp.status == 404
        assert "--history-seconds 0" in (await resp.json())["error"]
        assert (await c.get("/ui")).status == 200  # the page still works, without charts
    finally:
        await c.close()


async def test_ui_is_one_self_contained_page_with_a_strict_csp(client: TestClient) -> None:
    resp = await client.get("/ui")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    body = await resp.text()
    assert body == PAGE
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "connect-src 'self'" in csp
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]{44}';", csp)
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    # nothing from elsewhere: no src/href to another origin, no @import, no url()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", body)
    assert "@import" not in body and "url(" not in body
    # only the W3C SVG namespace string mentions http at all
    assert re.findall(r"https?://[^\s\"']+", body) == ["http://www.w3.org/2000/svg"]
    # the page's data goes in as text, never as markup
    assert "innerHTML" not in body and "insertAdjacentHTML" not in body
    assert "/status" in body and "/history" in body


async def test_a_large_answer_is_rendered_in_slices_on_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Above `INLINE_POINTS` the answer is rendered policy by policy on the event loop,
    which gets a turn between slices (no thread: its `json.dumps` would hold the GIL and
    make the ticks late), and it is the same document as rendered at once."""
    from autoscalerd.server import ui

    async def no_thread(*_: Any, **__: Any) -> Any:
        raise AssertionError("rendered in a thread")

    monkeypatch.setattr(asyncio, "to_thread", no_thread)
    monkeypatch.setattr(ui, "SLICE_SECONDS", 0.0)  # a slice per policy
    s = HistoryStore(3600)
    keys = [f"ns/p{i}" for i in range(8)]  # 8 x 3,600 = 28,800 points > INLINE_POINTS
    s.sync(keys)
    now = asyncio.get_running_loop().time()
    for key in keys:
        for t in (now - 3000, now - 10, now - 1):
            point = Point(values=(1.5,), ready=1, desired=1)
            s.record(key, t, interval=1.0, names=["m"], targets=[1.0], point=point)
    snaps = [s.snapshot(k, now=now, seconds=3600) for k in keys]
    assert sum(x.rendered_points for x in snaps if x is not None) > ui.INLINE_POINTS
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    task = asyncio.get_running_loop().create_task(other())
    await asyncio.sleep(0)
    head = {"now": 1.0, "history_seconds": 3600.0, "seconds": 3600.0}
    try:
        turns = 0
        body = await ui._render_sliced(head, snaps, 0.0, True)
        seen = turns
    finally:
        task.cancel()
    assert seen >= len(keys) - 1
    assert body == ui._render(head, snaps, 0.0, True)
    c = await _client(s)
    try:
        doc = await (await c.get("/history")).json()
    finally:
        await c.close()
    assert [p["policy"] for p in doc["policies"]] == keys
    assert doc["policies"][0]["metrics"][0]["values"][0] == 1.5
