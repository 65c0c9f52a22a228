"""One list/watch loop, as client-go's reflector runs it, for any resource kept in a `Store`.

LIST (paginated: `limit`/`continue`), then WATCH from the list's resourceVersion with
`allowWatchBookmarks` (a BOOKMARK only moves the resourceVersion). 410 Gone (an ERROR event,
or a 410 answer to the watch or to a LIST `continue` token) re-LISTs; 410s in a row back
off. A watch the server ends (`timeoutSeconds`) resumes from the resourceVersion; one that
ends at once backs off instead of spinning. Any other failure (a `KubeError`) is logged once
as a warning (then at debug while it repeats), kept as `last_error` and retried with
jittered back-off (doubling from `backoff_base` to `backoff_max`); the 3rd failure in a row
re-LISTs. Every watch read is bounded (`timeoutSeconds + read_grace`): a half-open
connection cannot hang the loop. What differs between resources is given: a `Target` (API
method, `Op`, names in logs) and a `Store` (keying, slimming, what a list or an event does).
Hot path (a 1,000-pod fleet's pod watch): an event costs one `Store.update` call, and an
await only when the store says waiters must wake.

kubernetes_asyncio's `watch.Watch` is not used: it builds an extra `ApiClient()` from the
*global default* Configuration, retries 410 just once, and turns every event into generated
model objects. We read the stream ourselves through the client's own ApiClient.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import structlog

from autoscalerd.kube._transport import JSON
from autoscalerd.kube.errors import KubeError, Op

log = structlog.get_logger(__name__)

__all__ = ["Gone", "ListWatch", "Store", "Target", "WatchSettings", "watch_error"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """Timings of the list/watch loop (seconds)."""

    watch_timeout: tuple[float, float] = (60.0, 90.0)
    """Server-side `timeoutSeconds` of each watch, drawn uniformly from this range."""
    read_grace: float = 15.0
    """A watch with no byte for `timeoutSeconds + read_grace` is dropped (half-open guard)."""
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    list_page_size: int = 500
    """LIST in pages of this many objects (`limit`/`continue`); 0 = one answer."""


class Calls(Protocol):
    """What the loop needs of `kube._transport.Transport` (a fake in tests)."""

    async def call(
        self, op: Op, fn: Callable[..., Awaitable[Any]], *args: Any, **kw: Any
    ) -> JSON: ...

    def stream(
        self, op: Op, fn: Callable[..., Awaitable[Any]], *args: Any, read_timeout: float, **kw: Any
    ) -> AbstractAsyncContextManager[AsyncIterator[JSON]]: ...


@dataclass(frozen=True, slots=True)
class Target:
    """What one loop lists and watches, and how it names it."""

    list_fn: Callable[..., Awaitable[Any]]
    """The generated API method on the call pool's client; `watch_fn` on the stream pool's."""
    watch_fn: Callable[..., Awaitable[Any]]
    args: tuple[Any, ...]
    list_op: Op
    watch_op: Op
    noun: str
    """Log events are `"<noun> watch failed, retrying"`..., with `log_fields` added."""
    log_fields: Mapping[str, str]
    what: str
    """A watch ERROR event says `"watch <what>: error event 500: ..."`."""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Added to LIST and WATCH (a `label_selector`)."""


class Store(Protocol[K, V]):
    """The cached copy a loop keeps current."""

    def entry(self, obj: JSON) -> tuple[K, V]:
        """A listed object → its key and what is kept of it."""

    def reset(self, entries: dict[K, V]) -> bool:
        """The whole scope was (re-)listed; True when waiters must be woken (`notify`)."""

    def update(self, kind: str, obj: JSON) -> bool:
        """A watch event (ADDED, MODIFIED, DELETED, or an unknown type to ignore) with its
        object; True when waiters must be woken (`notify`)."""

    async def notify(self) -> None:
        """Wake whoever waits for changes."""


class Gone(Exception):
    """The resourceVersion we watch from is too old: re-list."""


def watch_error(status: JSON, op: Op, what: str) -> Exception:
    """What a watch ERROR event's `Status` raises: `Gone` for 410, else a `KubeError`."""
    code = status.get("code")
    if code == 410:
        return Gone(str(status.get("message") or "resource version too old"))
    return KubeError(
        f"watch {what}: error event {code}: {status.get('message')}",
        op=op,
        status=code if isinstance(code, int) else None,
        reason=status.get("reason"),
    )


class ListWatch(Generic[K, V]):
    """One list/watch loop feeding one `Store`; `start()` it, `await stop()`."""

    def __init__(
        self,
        target: Target,
        store: Store[K, V],
        transport: Calls,
        stream_transport: Calls,
        settings: WatchSettings,
        *,
        uniform: Callable[[float, float], float] = random.uniform,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.target = target
        self._store = store
        self._t = transport
        self._stream_t = stream_transport
        self.settings = settings
        self._uniform = uniform
        self._sleep = sleep
        self.synced = False
        """True once a LIST succeeded and until a later re-LIST fails."""
        self.last_error: str | None = None
        """The last failure; None once a list or a watch event succeeded since."""
        self.relists = 0
        """How many times the scope was listed (1 after the first sync)."""
        self._task: asyncio.Task[None] | None = None
        self._seen = ""
        """The resourceVersion of the last event the running watch delivered: where a watch
        that fails mid-stream resumes, so the server does not send those events again."""

    def start(self, name: str) -> None:
        """Run the loop as a task called `name` (unless it runs already)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name=name)

    async def stop(self) -> None:
        """Cancel the task and wait for it to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` failures in a row: the ceiling doubles from
        `backoff_base` up to `backoff_max`; the wait is drawn from [ceiling/2, ceiling]."""
        s = self.settings
        ceiling = min(s.backoff_max, s.backoff_base * 2.0 ** max(0, failures - 1))
        return ceiling / 2 + self._uniform(0, ceiling / 2)

    async def list(self) -> str:
        """LIST every page into the store; the list's resourceVersion."""
        page_size = self.settings.list_page_size
        kwargs: dict[str, Any] = dict(self.target.kwargs)
        if page_size > 0:
            kwargs["limit"] = page_size
        entries: dict[K, V] = {}
        entry = self._store.entry
        while True:
            doc = await self._t.call(
                self.target.list_op, self.target.list_fn, *self.target.args, **kwargs
            )
            for obj in doc.get("items") or []:
                if isinstance(obj, dict):
                    key, value = entry(obj)
                    entries[key] = value
            meta = doc.get("metadata") or {}
            token = meta.get("continue")
            if not token or page_size <= 0:
                break
            kwargs["_continue"] = str(token)  # an expired token answers 410: re-list
        self.synced = True
        self.last_error = None
        self.relists += 1
        if self._store.reset(entries):
            await self._store.notify()
        return str(meta.get("resourceVersion") or "")

    async def watch(self, rv: str) -> str:
        """WATCH from `rv` until the server ends the stream; the last resourceVersion seen."""
        s = self.settings
        lo, hi = s.watch_timeout
        server_timeout = int(self._uniform(lo, hi)) or 1
        # Booleans as "true": kubernetes_asyncio would urlencode True as "True", which Go's
        # ParseBool accepts but stricter servers (and proxies) may not.
        kwargs: dict[str, Any] = {
            "watch": "true",
            "allow_watch_bookmarks": "true",
            "timeout_seconds": server_timeout,
            **self.target.kwargs,
        }
        if rv:
            kwargs["resource_version"] = rv
        self._seen = rv
        update = self._store.update
        async with self._stream_t.stream(
            self.target.watch_op,
            self.target.watch_fn,
            *self.target.args,
            read_timeout=server_timeout + s.read_grace,
            **kwargs,
        ) as events:
            async for event in events:
                kind = str(event.get("type", ""))
                obj = event.get("object")
                if isinstance(obj, dict):
                    if kind == "ERROR":
                        raise watch_error(obj, self.target.watch_op, self.target.what)
                    rv = str((obj.get("metadata") or {}).get("resourceVersion") or "") or rv
                    self._seen = rv
                    if kind != "BOOKMARK" and update(kind, obj):
                        await self._store.notify()
                self.last_error = None
        return rv

    async def run(self) -> None:
        """List, then watch, forever (until cancelled); never raises otherwise."""
        loop = asyncio.get_running_loop()
        noun, fields = self.target.noun, self.target.log_fields
        failures = 0
        gone = 0
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    rv = await self.list()
                started = loop.time()
                rv = await self.watch(rv)
                gone = 0
                # A watch that ended normally (server-side timeout): watch again from rv.
                # One that ends at once, again and again, must not spin: back off.
                if loop.time() - started < 1.0:
                    failures += 1
                    await self._sleep(self.delay(failures))
                else:
                    failures = 0
            except asyncio.CancelledError:
                raise
            except (Gone, KubeError) as exc:
                if isinstance(exc, Gone) or exc.status == 410:
                    log.info(f"{noun} watch expired, re-listing", **fields, reason=str(exc))
                    rv = None
                    gone += 1
                    if gone > 1:  # 410s in a row (watch or paginated list): don't spin
                        await self._sleep(self.delay(gone - 1))
                    continue
                gone = 0
                failures += 1
                if rv is not None and self._seen:
                    rv = self._seen  # resume after the last event the failed watch delivered
                first = self.last_error != str(exc)
                self.last_error = str(exc)
                if rv is None and self.synced:
                    self.synced = False  # a re-list failed: the cache may be stale
                (log.warning if first else log.debug)(
                    f"{noun} watch failed, retrying", **fields, error=str(exc), attempt=failures
                )
                await self._sleep(self.delay(failures))
                if failures >= 3:
                    rv = None  # after repeated watch failures, resync with a full list
            except Exception as exc:  # a bug must not end the loop silently
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception(f"{noun} watch error", **fields)
                rv = None
                await self._sleep(self.delay(failures))
