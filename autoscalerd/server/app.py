"""The HTTP endpoints of DESIGN.md §4: /healthz, /readyz, /metrics, /status (and §9's /ui and
/history, in ui.py).

The app reads state through a small `StatusSource` protocol that the daemon implements, so the
server does not import the daemon (dependencies point down).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from autoscalerd.server.history import HistoryStore
from autoscalerd.server.metrics import DaemonMetrics
from autoscalerd.server.ui import add_ui_routes

__all__ = ["HttpServer", "StatusSource", "build_app", "parse_listen", "status_json"]


class StatusSource(Protocol):
    def is_ready(self) -> tuple[bool, str]:
        """(ready, reason): ready once the config is loaded and the API has answered."""

    def status(self) -> Mapping[str, Any]:
        """The `/status` document."""


_SOURCE = web.AppKey("source", StatusSource)
_METRICS = web.AppKey("metrics", DaemonMetrics)


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    ready, reason = request.app[_SOURCE].is_ready()
    if ready:
        return web.Response(text="ok\n")
    return web.Response(status=503, text=f"not ready: {reason}\n")


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[_METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _status(request: web.Request) -> web.Response:
    return web.Response(
        text=status_json(request.app[_SOURCE].status()), content_type="application/json"
    )


def status_json(doc: Mapping[str, Any]) -> str:
    """The `/status` document, readable: one top-level key per line, and in `policies` one
    policy per line. Each piece goes through the C encoder: `indent=` would use json's
    pure-Python one, ~10 ms of the event loop at 100 policies for every open /ui page each
    interval (~1 ms this way)."""
    lines = []
    for key, value in doc.items():
        name = json.dumps(str(key))
        if key == "policies" and isinstance(value, list) and value:
            items = ",\n    ".join(_compact(p) for p in value)
            lines.append(f"  {name}: [\n    {items}\n  ]")
        else:
            lines.append(f"  {name}: {_compact(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(", ", ": "), default=str)


def build_app(
    source: StatusSource, metrics: DaemonMetrics, history: HistoryStore | None = None
) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[_SOURCE] = source
    app[_METRICS] = metrics
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/status", _status)
    add_ui_routes(app, history)
    return app


def parse_listen(listen: str) -> tuple[str, int]:
    """Split `HOST:PORT` (IPv6 as `[::1]:8080`); raise ValueError with a readable message."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(
            f"--listen {listen!r} is not HOST:PORT (e.g. 127.0.0.1:8080 or 0.0.0.0:8080)"
        )
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class HttpServer:
    """Runs the app on `--listen`; `start()` raises OSError when the address is taken."""

    def __init__(
        self,
        source: StatusSource,
        metrics: DaemonMetrics,
        listen: str,
        history: HistoryStore | None = None,
    ) -> None:
        self._app = build_app(source, metrics, history)
        self._host, self._port = parse_listen(listen)
        self._runner: web.AppRunner | None = None
        self.bound: tuple[str, int] | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self._app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            addr = sockets[0].getsockname()
            self.bound = (addr[0], addr[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
