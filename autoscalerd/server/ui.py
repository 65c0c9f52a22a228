"""`GET /ui` (the page) and `GET /history` (its series) of DESIGN.md §9.

`/history?policy=NAMESPACE/NAME&seconds=N` answers one policy's series (`HistoryStore.window`
plus `now`, the daemon's Unix time, and `history_seconds`, the buffer's length); without
`policy` it answers every policy at once (`{"now", "history_seconds", "policies": [...]}`),
which is what the page fetches, so a refresh is one request whatever the number of policies.
`seconds` defaults to the whole buffer and is capped to it (and, for every policy at once, to
`MAX_POINTS_PER_ANSWER` points in all); the answer's `seconds` is the one used. Each series
starts at its first point present in the window. Errors are JSON
`{"error": "..."}`: 400 for a bad `seconds` or a malformed `policy`, 404 for an unknown policy
or when the history is off (`--history-seconds 0`).

The page is one self-contained document (ui_page.py). It is served with a Content-Security-
Policy that allows only its own inline script (by hash) and style and requests to this origin,
so the browser itself guarantees that nothing is loaded from elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
import time
from typing import Any

from aiohttp import web

from autoscalerd.server.history import HistoryStore, Snapshot
from autoscalerd.server.ui_page import PAGE

__all__ = ["add_ui_routes", "page_headers"]

MAX_POLICY_PARAM = 400
"""Longest `policy=` accepted (namespace 63 + name 253 + slash, with room)."""
MAX_POINTS_PER_ANSWER = 500_000
"""At most this many points (ticks x policies) in one answer, about 15 MB of JSON: every
policy at once over a whole hour is 360,000 at 100 policies; beyond that `seconds` is cut
down (the answer's `seconds` says by how much)."""
INLINE_POINTS = 20_000
"""Answers up to this many points (counted from each series' first point present, as
rendered) are rendered at once (a few ms); larger ones policy by
policy, from copies, giving the event loop back every `SLICE_SECONDS` or so, so the
policies' ticks are not held up (a full hour of 100 policies is ~0.7 s of CPU)."""
SLICE_SECONDS = 0.005
"""How long a large render runs before it lets the loop handle what is ready. Not a thread:
`json.dumps` of a large document holds the GIL for its whole run (hundreds of ms for a full
hour of 100 policies), and a render thread competing for the GIL slows every system call of
the loop by up to the switch interval (5 ms), so the ticks went late while a page loaded."""

_HISTORY = web.AppKey("history", HistoryStore)
_HISTORY_OFF = web.AppKey("history_off", bool)
_RENDERING = web.AppKey("rendering", asyncio.Lock)

_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def page_headers(page: str = PAGE) -> dict[str, str]:
    """The security headers of `/ui`: the CSP names the sha256 of each inline script."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in _SCRIPT.findall(page)
    )
    csp = (
        "default-src 'none'; "
        f"script-src {hashes}; "
        "style-src 'unsafe-inline'; "
        "img-src data:; "
        "connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": csp,
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


_PAGE_BODY = PAGE.encode()
_PAGE_HEADERS = page_headers()


async def _ui(_: web.Request) -> web.Response:
    return web.Response(body=_PAGE_BODY, headers=_PAGE_HEADERS)


def _error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": message}) + "\n",
        content_type="application/json",
    )


def parse_seconds(raw: str | None, limit: float) -> float:
    """`seconds=` as a positive finite number, capped to `limit`; ValueError otherwise."""
    if raw is None:
        return limit
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(
            f"seconds={raw[:40]!r} is not a number; give the seconds to look back, e.g. seconds=600"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"seconds={raw[:40]!r} must be a positive number of seconds")
    return min(value, limit)


async def _history(request: web.Request) -> web.Response:
    if request.app[_HISTORY_OFF]:
        return _error(404, "the history is off (autoscalerd run --history-seconds 0)")
    store = request.app[_HISTORY]
    try:
        seconds = parse_seconds(request.query.get("seconds"), store.seconds)
    except ValueError as exc:
        return _error(400, str(exc))
    policy = request.query.get("policy")
    if policy is not None and (
        len(policy) > MAX_POLICY_PARAM or policy.count("/") != 1 or policy.startswith("/")
    ):
        return _error(
            400, f"policy={policy[:80]!r} is not NAMESPACE/NAME (e.g. kube-system/my-autoscaler)"
        )
    now = asyncio.get_running_loop().time()
    wall = time.time()
    keys = store.policies() if policy is None else [policy]
    snaps = _snapshots(store, keys, now, seconds)
    if snaps[0] is None:
        known = store.policies()
        hint = f" (known: {', '.join(known[:5])}{', …' if len(known) > 5 else ''})" if known else ""
        return _error(404, f"no policy {policy!r} in the running configuration{hint}")
    points = sum(s.points for s in snaps if s is not None)
    if points > MAX_POINTS_PER_ANSWER:  # every policy at once: fewer seconds each
        seconds = max(1.0, seconds * MAX_POINTS_PER_ANSWER / points)
        snaps = _snapshots(store, keys, now, seconds)
    head = {"now": round(wall, 3), "history_seconds": store.seconds, "seconds": seconds}
    if sum(s.rendered_points for s in snaps if s is not None) <= INLINE_POINTS:
        body = _render(head, snaps, wall - now, policy is None)
    else:  # copied already: render in slices, one large answer at a time
        async with request.app[_RENDERING]:
            body = await _render_sliced(head, snaps, wall - now, policy is None)
    return web.Response(
        body=body, content_type="application/json", headers={"Cache-Control": "no-store"}
    )


def _snapshots(
    store: HistoryStore, keys: list[str], now: float, seconds: float
) -> list[Snapshot | None]:
    return [store.snapshot(key, now=now, seconds=seconds) for key in keys]


def _render(
    head: dict[str, Any], snaps: list[Snapshot | None], offset: float, every: bool
) -> bytes:
    docs = [s.render(offset) for s in snaps if s is not None]
    doc = {**head, "policies": docs} if every else {**head, **docs[0]}
    return _dumps(doc)


async def _render_sliced(
    head: dict[str, Any], snaps: list[Snapshot | None], offset: float, every: bool
) -> bytes:
    """`_render`, one policy at a time (each encoded on its own), yielding to the event loop
    whenever a slice has run for `SLICE_SECONDS`."""
    if not every:
        await asyncio.sleep(0)
        return _render(head, snaps, offset, every)
    loop = asyncio.get_running_loop()
    parts: list[bytes] = []
    since = loop.time()
    for snap in snaps:
        if snap is None:
            continue
        parts.append(_dumps(snap.render(offset)))
        if loop.time() - since >= SLICE_SECONDS:
            await asyncio.sleep(0)
            since = loop.time()
    return b"".join((_dumps(head)[:-1], b',"policies":[', b",".join(parts), b"]}"))


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def add_ui_routes(app: web.Application, history: HistoryStore | None) -> None:
    """Add `/ui` and `/history` to the daemon's app (`history` None: the history is off)."""
    app[_HISTORY] = history if history is not None else HistoryStore()
    app[_HISTORY_OFF] = history is None
    app[_RENDERING] = asyncio.Lock()
    app.router.add_get("/ui", _ui)
    app.router.add_get("/history", _history)
