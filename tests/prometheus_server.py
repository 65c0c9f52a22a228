"""The real Prometheus server (Debian's `prometheus` package) scraping a page the test controls.

```python
async with Page() as page, PrometheusServer(tmp_path, [page.address]) as prom:
    page.set("demand", 50)
    await prom.wait_query("demand", lambda r: bool(r))
    ... prom.url ...
```

Prometheus writes its configuration and TSDB under the test's tmp dir, listens on
127.0.0.1 only, scrapes every 200 ms. `prometheus_binary()` skips the test with a visible
reason only where the binary is not installed (`.ci/run` installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from waiting import wait_for

__all__ = ["Page", "PrometheusServer", "prometheus_binary"]


def prometheus_binary() -> str:
    path = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if path is None:
        pytest.skip("prometheus not installed (Debian: apt-get install prometheus; .ci/run does)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Page:
    """A /metrics page on 127.0.0.1 whose series the test sets: `set("x", 1, job="a")`."""

    def __init__(self) -> None:
        self.series: dict[str, float] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, name: str, value: float | None, **labels: str) -> None:
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        key = f"{name}{{{inner}}}" if inner else name
        if value is None:
            self.series.pop(key, None)
        else:
            self.series[key] = value

    async def _metrics(self, request: web.Request) -> web.Response:
        text = "".join(f"{k} {v}\n" for k, v in self.series.items())
        return web.Response(text=text, content_type="text/plain")

    async def __aenter__(self) -> Page:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class PrometheusServer:
    def __init__(self, workdir: Path, targets: list[str], *, interval_ms: int = 200) -> None:
        self.workdir = workdir / "prometheus"
        self.targets = targets
        self.interval_ms = interval_ms
        self.port = _free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> PrometheusServer:
        binary = prometheus_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        listed = ", ".join(f'"{t}"' for t in self.targets)
        config.write_text(
            f"global:\n  scrape_interval: {self.interval_ms}ms\n"
            f"  scrape_timeout: {self.interval_ms // 2}ms\n"
            f"scrape_configs:\n  - job_name: page\n    static_configs:\n"
            f"      - targets: [{listed}]\n"
        )
        self.proc = await asyncio.create_subprocess_exec(
            binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{self.port}",
            f"--storage.tsdb.path={self.workdir / 'data'}", "--log.level=warn",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await wait_for(self._ready, timeout=30, what="prometheus answers /-/ready")
        return self

    async def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.returncode is not None:
            raise AssertionError(f"prometheus exited with {self.proc.returncode}")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with aiohttp.ClientSession() as s, s.get(f"{self.url}/-/ready") as r:
                return r.status == 200
        return False

    async def query(self, query: str) -> Any:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{self.url}/api/v1/query", params={"query": query}) as r,
        ):
            return json.loads(await r.read())

    async def wait_value(self, query: str, value: float, timeout: float = 15.0) -> None:
        """Until the query yields one sample equal to `value` (the page was scraped)."""

        async def seen() -> bool:
            doc = await self.query(query)
            result = doc.get("data", {}).get("result") or []
            return len(result) == 1 and float(result[0]["value"][1]) == value

        await wait_for(seen, timeout=timeout, what=f"prometheus: {query} == {value}")

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
