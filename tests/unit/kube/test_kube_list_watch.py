"""The generic list/watch loop of `kube/list_watch.py` against a scripted fake transport.

Each test scripts the LIST answers and the WATCH streams, runs the loop until the script is
used up (the fake then parks the next call), and checks the calls made, the store, the
back-off sleeps (recorded, not slept) and the log. What the sandbox tests already show
through the pod caches and the PodAutoscaler feed (a 410 ERROR event or answer re-lists,
pagination, a half-open watch dropped by the read timeout) is not repeated here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from structlog.testing import capture_logs
from waiting import wait_until

from autoscalerd.kube._transport import JSON
from autoscalerd.kube.errors import KubeError, KubeUnavailable, Op, error_for_status
from autoscalerd.kube.list_watch import Gone, ListWatch, Target, WatchSettings, watch_error

OP = Op("list", "things", "example.com", "ns")
WATCH_OP = Op("watch", "things", "example.com", "ns")
Step = JSON | Exception
"""One LIST answer, or the error it raises."""
Stream = Sequence[Step] | Exception
"""One WATCH: its events (an exception among them is raised there), or the error opening it."""


async def _api_method(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the fake transport never calls the API method")


class FakeCalls:
    """Answers LISTs and WATCHes from scripts; once a script is used up, the next call of
    that kind waits forever (`parked`), so the loop stops where the test can look."""

    def __init__(self, lists: Sequence[Step], watches: Sequence[Stream]) -> None:
        self.lists = list(lists)
        self.watches = list(watches)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.parked = False
        self._more = asyncio.Event()

    def add_list(self, step: Step) -> None:
        self.lists.append(step)
        self._more.set()

    async def _park(self) -> None:
        self.parked = True
        await self._more.wait()
        self._more.clear()
        self.parked = False

    async def call(self, op: Op, fn: Callable[..., Awaitable[Any]], *args: Any, **kw: Any) -> JSON:
        assert op == OP and fn is _api_method and args == ("ns",)
        self.calls.append(("list", dict(kw)))
        while not self.lists:
            await self._park()
        step = self.lists.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    @asynccontextmanager
    async def stream(
        self, op: Op, fn: Callable[..., Awaitable[Any]], *args: Any, read_timeout: float, **kw: Any
    ) -> AsyncIterator[AsyncIterator[JSON]]:
        assert op == WATCH_OP and fn is _api_method and args == ("ns",)
        self.calls.append(("watch", {**kw, "read_timeout": read_timeout}))
        while not self.watches:
            await self._park()
        stream = self.watches.pop(0)
        if isinstance(stream, Exception):
            raise stream
        yield self._events(stream)

    @staticmethod
    async def _events(steps: Sequence[Step]) -> AsyncIterator[JSON]:
        for step in steps:
            if isinstance(step, Exception):
                raise step
            yield step

    def watched_from(self) -> list[str | None]:
        return [kw.get("resource_version") for verb, kw in self.calls if verb == "watch"]

    def verbs(self) -> list[str]:
        return [verb for verb, _ in self.calls]


class FakeStore:
    """Keeps `name -> resourceVersion` of each object; every change wakes the waiters."""

    def __init__(self) -> None:
        self.objects: dict[str, str] = {}
        self.resets: list[dict[str, str]] = []
        self.events: list[tuple[str, str]] = []
        self.notified = 0
        self.probe: Callable[[], object] = lambda: None
        self.probed: list[object] = []
        """`probe()` at each event: what the loop showed when the event came."""

    def entry(self, obj: JSON) -> tuple[str, str]:
        meta = obj["metadata"]
        return meta["name"], meta["resourceVersion"]

    def reset(self, entries: dict[str, str]) -> bool:
        self.resets.append(dict(entries))
        changed = entries != self.objects
        self.objects = entries
        return changed

    def update(self, kind: str, obj: JSON) -> bool:
        name, rv = self.entry(obj)
        self.events.append((kind, name))
        self.probed.append(self.probe())
        if kind == "DELETED":
            return self.objects.pop(name, None) is not None
        self.objects[name] = rv
        return True

    async def notify(self) -> None:
        self.notified += 1


def item(name: str, rv: str) -> JSON:
    return {"metadata": {"name": name, "resourceVersion": rv}}


def page(rv: str, *names: str, more: str = "") -> JSON:
    meta = {"resourceVersion": rv, **({"continue": more} if more else {})}
    return {"metadata": meta, "items": [item(n, rv) for n in names]}


def event(kind: str, name: str, rv: str) -> JSON:
    return {"type": kind, "object": item(name, rv)}


def status_event(code: int, message: str, reason: str = "") -> JSON:
    status = {"kind": "Status", "code": code, "message": message, "reason": reason or None}
    return {"type": "ERROR", "object": status}


SETTINGS = WatchSettings(
    watch_timeout=(60.0, 90.0), read_grace=15.0, backoff_base=0.5, backoff_max=4.0
)


class Run:
    """A loop over a fake transport and store, with the sleeps it asked for recorded."""

    def __init__(self, api: FakeCalls, settings: WatchSettings = SETTINGS) -> None:
        self.api = api
        self.store = FakeStore()
        self.sleeps: list[float] = []
        target = Target(
            list_fn=_api_method,
            watch_fn=_api_method,
            args=("ns",),
            list_op=OP,
            watch_op=WATCH_OP,
            noun="thing",
            log_fields={"namespace": "ns"},
            what="things in ns",
            kwargs={"label_selector": "app=x"},
        )
        self.lw = ListWatch(
            target, self.store, api, api, settings, uniform=self._top, sleep=self._sleep
        )

    @staticmethod
    def _top(lo: float, hi: float) -> float:
        return hi  # the longest watch, the longest back-off

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def until_parked(self) -> None:
        self.lw.start("test list/watch")
        await wait_until(lambda: self.api.parked, "the script used up", state=self.api.verbs)


@pytest.mark.parametrize(
    ("uniform", "delays"),
    [
        pytest.param(lambda lo, hi: hi, [0.5, 1.0, 2.0, 4.0, 4.0, 4.0], id="ceiling"),
        pytest.param(lambda lo, hi: lo, [0.25, 0.5, 1.0, 2.0, 2.0, 2.0], id="half-ceiling"),
    ],
)
def test_backoff_doubles_up_to_the_cap_with_jitter(
    uniform: Callable[[float, float], float], delays: list[float]
) -> None:
    lw = ListWatch(
        Target(_api_method, _api_method, (), OP, WATCH_OP, "thing", {}, "things"),
        FakeStore(),
        FakeCalls([], []),
        FakeCalls([], []),
        SETTINGS,
        uniform=uniform,
    )
    assert [lw.delay(n) for n in range(1, 7)] == delays


async def test_list_pages_then_watches_from_the_lists_version_with_bookmarks() -> None:
    api = FakeCalls(
        lists=[page("5", "a", more="t1"), page("6", "b")],
        watches=[
            [event("ADDED", "c", "7"), {"type": "BOOKMARK", "object": item("", "9")}],
            [event("DELETED", "a", "10")],
        ],
    )
    run = Run(api)
    try:
        await run.until_parked()
    finally:
        await run.lw.stop()
    list1, list2, watch1, _, _ = (kw for _, kw in api.calls)
    assert list1 == {"label_selector": "app=x", "limit": 500}
    assert list2 == {"label_selector": "app=x", "limit": 500, "_continue": "t1"}
    assert watch1 == {
        "watch": "true",
        "allow_watch_bookmarks": "true",
        "timeout_seconds": 90,
        "label_selector": "app=x",
        "resource_version": "6",
        "read_timeout": 105.0,
    }
    assert api.watched_from() == ["6", "9", "10"], "a bookmark moves the resourceVersion"
    assert run.store.resets == [{"a": "5", "b": "6"}], "one reset with every page"
    assert run.store.events == [("ADDED", "c"), ("DELETED", "a")], "a bookmark is no change"
    assert run.store.objects == {"b": "6", "c": "7"} and run.store.notified == 3
    assert run.lw.synced and run.lw.relists == 1 and run.lw.last_error is None
    assert run.sleeps == [0.5, 1.0], "watches that end at once back off"


async def test_410_on_a_list_continue_token_lists_again_from_the_start() -> None:
    gone = error_for_status(OP, 410, message="continue token expired")
    api = FakeCalls(
        lists=[page("5", "a", more="t1"), gone, page("8", "a", more="t2"), page("8", "b")],
        watches=[[status_event(410, "too old")]],
    )
    run = Run(api)
    try:
        with capture_logs() as logs:
            await run.until_parked()
    finally:
        await run.lw.stop()
    continues = [kw.get("_continue") for verb, kw in api.calls if verb == "list"]
    assert continues == [None, "t1", None, "t2", None]
    assert api.verbs() == ["list"] * 4 + ["watch", "list"]
    assert run.store.resets == [{"a": "8", "b": "8"}], "the broken list is thrown away"
    # the first 410 re-lists at once; the watch's 410 after it is the second in a row
    assert run.sleeps == [0.5]
    expired = [e for e in logs if e["event"] == "thing watch expired, re-listing"]
    assert [e["namespace"] for e in expired] == ["ns", "ns"]
    assert "continue token expired" in expired[0]["reason"]
    assert expired[1]["reason"] == "too old"


async def test_410s_in_a_row_back_off() -> None:
    gone = error_for_status(OP, 410, message="gone")
    api = FakeCalls(lists=[page("5", "a"), gone, gone, page("9", "a")], watches=[gone])
    run = Run(api)
    try:
        await run.until_parked()
    finally:
        await run.lw.stop()
    assert api.verbs() == ["list", "watch", "list", "list", "list", "watch"]
    assert run.sleeps == [0.5, 1.0]
    assert run.lw.last_error is None and run.lw.relists == 2


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        pytest.param(
            status_event(500, "etcd is down", "InternalError"),
            "watch things in ns: error event 500: etcd is down",
            id="error-event",
        ),
        pytest.param(
            KubeUnavailable("watch things: no data for 105s, dropping the watch", op=OP),
            "watch things: no data for 105s, dropping the watch",
            id="read-timeout",
        ),
    ],
)
async def test_a_failed_watch_reconnects_from_where_it_was(failure: Step, error: str) -> None:
    api = FakeCalls(
        lists=[page("5", "a")],
        watches=[[event("ADDED", "b", "6"), failure], [event("ADDED", "c", "7")]],
    )
    run = Run(api)
    run.store.probe = lambda: run.lw.last_error
    try:
        with capture_logs() as logs:
            await run.until_parked()
    finally:
        await run.lw.stop()
    # no re-list: it watches again from the last event the failed watch delivered
    assert api.watched_from() == ["5", "6", "7"]
    assert run.store.probed == [None, error], "the error is kept until the next event clears it"
    assert run.lw.last_error is None and run.lw.synced and run.lw.relists == 1
    [warning] = [e for e in logs if e["log_level"] == "warning"]
    assert warning == {
        "event": "thing watch failed, retrying",
        "namespace": "ns",
        "error": error,
        "attempt": 1,
        "log_level": "warning",
    }


@pytest.mark.parametrize(
    ("status", "kind", "message", "code", "reason"),
    [
        ({"code": 410, "message": "too old"}, Gone, "too old", None, None),
        ({"code": 410}, Gone, "resource version too old", None, None),
        (
            {"code": 403, "message": "no watch", "reason": "Forbidden"},
            KubeError,
            "watch things in ns: error event 403: no watch",
            403,
            "Forbidden",
        ),
        ({"code": "x"}, KubeError, "watch things in ns: error event x: None", None, None),
    ],
)
def test_an_error_events_status_becomes_the_error(
    status: JSON, kind: type[Exception], message: str, code: int | None, reason: str | None
) -> None:
    exc = watch_error(status, WATCH_OP, "things in ns")
    assert type(exc) is kind and str(exc) == message
    if isinstance(exc, KubeError):
        assert (exc.status, exc.reason, exc.op) == (code, reason, WATCH_OP)


async def test_repeated_failures_are_logged_once_back_off_and_resync() -> None:
    down = KubeUnavailable("list things: cannot connect", op=OP)
    api = FakeCalls(
        lists=[page("5", "a"), down, down, page("9", "a", "b")],
        watches=[down, down, down],
    )
    run = Run(api)
    try:
        with capture_logs() as logs:
            await run.until_parked()
    finally:
        await run.lw.stop()
    failed = [e for e in logs if e["event"] == "thing watch failed, retrying"]
    assert api.verbs() == ["list", "watch", "watch", "watch", "list", "list", "list", "watch"]
    assert api.watched_from() == ["5", "5", "5", "9"]
    assert [e["attempt"] for e in failed] == [1, 2, 3, 4, 5]
    assert [e["log_level"] for e in failed] == ["warning"] + ["debug"] * 4
    assert run.sleeps == [0.5, 1.0, 2.0, 4.0, 4.0], "doubling up to backoff_max"
    assert run.store.resets == [{"a": "5"}, {"a": "9", "b": "9"}]
    assert run.lw.synced and run.lw.last_error is None and run.lw.relists == 2


async def test_a_failed_relist_unsyncs_until_a_list_succeeds() -> None:
    down = KubeUnavailable("list things: cannot connect", op=OP)
    api = FakeCalls(lists=[page("5", "a"), down], watches=[down, down, down])
    run = Run(api)
    try:
        await run.until_parked()
        assert api.verbs() == ["list", "watch", "watch", "watch", "list", "list"]
        assert not run.lw.synced and run.lw.last_error == str(down) and run.lw.relists == 1
        api.add_list(page("9", "a"))
        await wait_until(lambda: run.lw.synced, "synced again", state=api.verbs)
        assert run.lw.last_error is None and run.lw.relists == 2
    finally:
        await run.lw.stop()


async def test_a_bug_in_the_store_is_logged_and_the_loop_lists_again() -> None:
    api = FakeCalls(
        lists=[page("5", "a"), page("6", "a")], watches=[[{"type": "ADDED", "object": {}}]]
    )
    run = Run(api)
    try:
        with capture_logs() as logs:
            await run.until_parked()
    finally:
        await run.lw.stop()
    assert api.verbs() == ["list", "watch", "list", "watch"]
    [error] = [e for e in logs if e["event"] == "thing watch error"]
    assert error["namespace"] == "ns" and error["log_level"] == "error"
    assert run.lw.last_error is None and run.lw.relists == 2
