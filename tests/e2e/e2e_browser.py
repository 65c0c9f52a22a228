"""Headless Chromium driven over the DevTools protocol (a websocket, with aiohttp).

Only what the /ui test needs: open a page, evaluate JavaScript, take a screenshot, and
collect the page's console errors and uncaught exceptions (a Content-Security-Policy
violation shows there too). Chromium never reaches past loopback: every other host goes to a
dead proxy on 127.0.0.1:9 and host names resolve to nothing, and its background services
(updates, sync, metrics) are off.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import aiohttp
from waiting import wait_for


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root in CI
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-pings",
    "--hide-scrollbars",
    "--proxy-server=127.0.0.1:9",  # anything but loopback goes nowhere
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


class Browser:
    """One Chromium process with one page, driven over the DevTools protocol."""

    def __init__(self, proc: asyncio.subprocess.Process, http: aiohttp.ClientSession) -> None:
        self.proc = proc
        self.http = http
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.errors: list[str] = []
        """Console errors and uncaught exceptions of the page."""

    @classmethod
    async def start(
        cls, binary: str, workdir: Path, *, width: int = 1280, height: int = 900
    ) -> Browser:
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        (profile / "DevToolsActivePort").unlink(missing_ok=True)  # a reused profile's is stale
        log = open(workdir / "chromium.log", "wb")  # noqa: SIM115 - handed to the child
        try:
            proc = await asyncio.create_subprocess_exec(
                binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                "about:blank",
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        finally:
            log.close()
        browser = cls(proc, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)))
        try:
            await browser._connect(profile / "DevToolsActivePort", workdir / "chromium.log")
        except BaseException:
            await browser.close()
            raise
        return browser

    async def _connect(self, port_file: Path, log: Path, timeout: float = 30.0) -> None:
        def log_tail() -> str:
            return log.read_text(errors="replace")[-2000:]

        def port_written() -> str:
            if self.proc.returncode is not None:
                raise RuntimeError(f"chromium exited ({self.proc.returncode}):\n{log_tail()}")
            return port_file.read_text().strip() if port_file.exists() else ""

        port_line = await wait_for(
            port_written,
            timeout=timeout,
            poll=0.05,
            what=lambda: f"chromium did not write {port_file.name}:\n{log_tail()}",
        )
        port = int(port_line.split()[0])
        pages: list[dict[str, Any]] = []

        async def page_targets() -> list[dict[str, Any]]:
            nonlocal pages
            with contextlib.suppress(aiohttp.ClientError):
                async with self.http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                    pages = [t for t in await resp.json() if t.get("type") == "page"]
            return pages

        await wait_for(
            page_targets,
            timeout=timeout,
            poll=0.05,
            what=lambda: f"chromium has no page target (targets of type page: {pages})",
        )
        self.ws = await self.http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await self.send("Runtime.enable")
        await self.send("Log.enable")
        await self.send("Page.enable")

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            doc = json.loads(msg.data)
            if "id" in doc:
                fut = self._waiting.pop(doc["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(doc)
            elif doc.get("method") == "Runtime.exceptionThrown":
                details = doc["params"]["exceptionDetails"]
                text = details.get("exception", {}).get("description") or details.get("text")
                self.errors.append(f"exception: {text}")
            elif doc.get("method") == "Log.entryAdded":
                entry = doc["params"]["entry"]
                if entry.get("level") == "error":
                    self.errors.append(f"log: {entry.get('text')} ({entry.get('url', '')})")
            elif (
                doc.get("method") == "Runtime.consoleAPICalled"
                and doc["params"].get("type") == "error"
            ):
                self.errors.append(f"console: {doc['params'].get('args')}")
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("chromium closed the DevTools connection"))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.ws is not None
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = fut
        await self.ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        doc = await asyncio.wait_for(fut, 30)
        if "error" in doc:
            raise RuntimeError(f"{method}: {doc['error']}")
        return dict(doc.get("result", {}))

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """Poll a JavaScript expression until it is truthy; returns its value (AssertionError
        naming the expression, its last outcome and the page's errors if it never is)."""
        last: object = None

        async def value() -> Any:
            nonlocal last
            try:
                last = await self.evaluate(expression)
            except RuntimeError as e:  # e.g. the page is still loading: try again
                last = e
                return None
            return last

        return await wait_for(
            value,
            timeout=timeout,
            poll=0.1,
            what=lambda: (
                f"page never satisfied {expression!r} (last: {last!r}); errors: {self.errors}"
            ),
        )

    async def screenshot(self, path: Path) -> Path:
        result = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(result["data"]))
        return path

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.ws is not None:
                await asyncio.wait_for(self.send("Browser.close"), 5)
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        await self.http.close()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
