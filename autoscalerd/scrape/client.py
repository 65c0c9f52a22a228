"""The concurrent scraper: fetch pod metric pages over HTTP(S) and select values from them.

One `Scraper` serves the whole daemon. Design points, each for a measured reason:

- **Its own small HTTP/1.1 client.** Requests go through `scrape.http11` (keep-alive GET on an
  `asyncio.BufferedProtocol`, no task per request, one prebuilt request per page) rather than aiohttp's
  general-purpose client: at 200 TLS targets per second aiohttp's per-request machinery was
  ~70 % of the scraper's CPU (bench/README-scrape.md has the profile and the figures).
- **Connections kept alive.** The pool is keyed by (host, port, SSLContext, server_hostname);
  `TLSContextCache` hands out the same context object per distinct setting, so round after
  round reuses the same TLS connections: steady state makes no new handshakes (see
  `ScrapeStats`). Idle connections live `KEEPALIVE_SECONDS`, far above any sane interval.
- **One fetch per page per round.** Targets that read the same URL with the same TLS and auth
  settings (several metric sources or policies on one pod) share one request; every selector is
  then evaluated on the one body.
- **Limits on everything.** One deadline per call (the caller's, below the scrape interval; a
  single timer) covers the wait for a slot, connect, TLS, headers and body;
  `DaemonConfig.max_concurrent_scrapes` bounds requests in flight. A fetch past the deadline
  is reported as a timeout at once, but its connection is not thrown away: the late answer
  (or handshake) gets one more timeout to complete, read and dropped, and the connection goes
  back to the pool (`HTTP11Client.cancel_many`'s grace), so a moment of slowness does not
  turn into a TLS handshake per late pod on the next round. The body is abandoned past
  `DaemonConfig.body_size_limit_bytes`, counted *after* gzip decompression; and what all
  responses together buffer past 1 MiB each comes from one `BodyBudget`
  (`DaemonConfig.body_budget_bytes`): a response that cannot reserve fails at once. A large
  page's reservation moves from its parser to its round with the page's text, and is given
  back when the round ends (`scrape`'s `finally`); every other one is given back by the
  HTTP client where the request ends.
- **Failures are values, never numbers.** `scrape()` never raises for a target: each outcome
  holds either a value or a `ScrapeError` whose message names the URL, the problem and the fix
  (written by scrape/diagnosis.py). A page that is cut, malformed or not UTF-8 is a failure,
  never a value.

About 540 lines: `Scraper` and the caches of its hot path (page keys, prebuilt requests), which
are measured together (bench/README-scrape.md) and kept in one place for that reason.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

import structlog

from autoscalerd import __version__
from autoscalerd.config.model import DaemonConfig, MetricSource, TLSConfig
from autoscalerd.scrape.diagnosis import (
    Diagnosis,
    budget_error,
    closed_error,
    exc_text,
    not_utf8_error,
    selection_error,
    status_error,
    timeout_error,
    too_large_error,
)
from autoscalerd.scrape.errors import ScrapeError, ScrapeErrorKind
from autoscalerd.scrape.http11 import (
    BodyBudget,
    BodyBudgetExhausted,
    BodyTooLarge,
    HTTP11Client,
    Request,
    build_get,
)
from autoscalerd.scrape.page import Page, PageKey
from autoscalerd.scrape.parser import SelectResult, select_value, select_values
from autoscalerd.scrape.series import select_series
from autoscalerd.scrape.tls import TLSContextCache, TokenCache, insecure_skip_verify_warning

__all__ = [
    "ACCEPT",
    "USER_AGENT",
    "ScrapeOutcome",
    "ScrapeStats",
    "ScrapeTarget",
    "Scraper",
    "target_url",
]

log = structlog.get_logger(__name__)

USER_AGENT = f"autoscalerd/{__version__}"
ACCEPT = "text/plain;version=0.0.4;q=1,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1"
"""Text formats only, Prometheus text preferred (what Prometheus sends minus protobuf)."""

KEEPALIVE_SECONDS = 300.0
"""Idle pooled connections live this long: far above a scrape interval, so rounds reuse them."""

IDLE_SWEEP_SECONDS = 30.0
"""How often (at most) a scrape call looks for idle connections older than KEEPALIVE_SECONDS."""

ERROR_BODY_PREVIEW_BYTES = 512
"""How much of a non-200 body is quoted in the error message."""

_KEY_CACHE_MAX = 65536
"""Bound of the per-(source, pod IP) page-key cache; cleared wholesale when reached."""

_NO_TLS = TLSConfig()
"""The TLS settings of every plain-HTTP page key (one shared object)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ScrapeTarget:
    """One pod to scrape for one metric source.

    `source.tls`/`source.authorization` may be the source's own settings or already merged over
    the DaemonConfig: the scraper merges them over `DaemonConfig.tls`/`.authorization` itself
    (merging twice is harmless).
    """

    pod: str
    ip: str
    source: MetricSource


@dataclass(frozen=True, kw_only=True, slots=True)
class ScrapeOutcome:
    """The result for one target: exactly one of `value` and `error` is set.

    `value` is the sum of the series matching the source's selector on that pod; `matched` is
    how many series that was. `duration_seconds` is the wall time of the page fetch (shared by
    targets that read the same page).
    """

    target: ScrapeTarget
    value: float | None
    error: ScrapeError | None
    duration_seconds: float
    matched: int = 0
    series: tuple[tuple[str, ...], tuple[float, ...]] | None = None
    """For a derived source (`source.signal`, issue 13): the matching series' label sets as
    written on the page and their values, in page order (`scrape/series.py`); None for a
    plain gauge, whose sum `value` is all it needs."""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(kw_only=True, slots=True)
class ScrapeStats:
    """Counters since the scraper started; `connections_created` is also the TLS handshakes."""

    requests: int = 0
    connections_created: int = 0
    late_kept: int = 0
    """Scrapes past their deadline whose answer came within the grace: connection kept."""
    late_dropped: int = 0
    """Scrapes past their deadline that failed or ran out of the grace: connection closed."""

    @property
    def connections_reused(self) -> int:
        """Requests that went over an already open connection."""
        return self.requests - self.connections_created


@dataclass(kw_only=True, slots=True)
class _Prepared:
    """The request bytes of a page, rebuilt only when the token or the timeout changes."""

    key: PageKey
    timeout_text: str
    authorization: str | None
    head: bytes


@dataclass(kw_only=True, slots=True, eq=False)
class _Round:
    """One `scrape()` call: its pages as they complete, and the future that ends the wait."""

    future: asyncio.Future[None]
    started: float
    timeout: float
    remaining: int
    pages: list[Page | None]
    requests: dict[int, Request] = field(default_factory=dict)
    tasks: dict[int, asyncio.Task[ScrapeError]] = field(default_factory=dict)
    reserved: int = 0
    """Body budget taken over from the parsers of large pages, held while their text is."""

    def set(self, index: int, page: Page) -> None:
        if self.pages[index] is None:
            self.pages[index] = page
            self.remaining -= 1
            if not self.remaining and not self.future.done():
                self.future.set_result(None)

    def expire(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


def target_url(target: ScrapeTarget) -> str:
    """`scheme://ip:port/path` of a target (IPv6 addresses bracketed)."""
    src = target.source
    host = f"[{target.ip}]" if ":" in target.ip else target.ip
    return f"{src.protocol}://{host}:{src.port}{src.path}"


class Scraper:
    """Scrape many targets concurrently with shared, kept-alive connections.

    Use it inside the running event loop and `await close()` at shutdown, or use
    `async with Scraper(daemon=cfg) as scraper:`.
    """

    def __init__(self, *, daemon: DaemonConfig | None = None, user_agent: str = USER_AGENT):
        self._daemon = daemon if daemon is not None else DaemonConfig()
        self._user_agent = user_agent
        self._limit = self._daemon.body_size_limit_bytes
        self._contexts = TLSContextCache()
        self._tokens = TokenCache()
        self._warned: set[MetricSource] = set()
        self._diagnosis = Diagnosis()
        self._keys: dict[tuple[int, str], tuple[MetricSource, PageKey]] = {}
        self._interned: dict[PageKey, PageKey] = {}
        self._interned_tls: dict[TLSConfig, TLSConfig] = {}
        self._prepared: dict[int, _Prepared] = {}
        self._last_sweep = time.monotonic()
        self.stats = ScrapeStats()
        self.body_budget = BodyBudget(max(self._daemon.body_budget_bytes, self._limit))
        """Shared by every response for its body bytes past the allowance; `reserved` is 0
        whenever no scrape is running."""
        self._http = HTTP11Client(
            max_in_flight=self._daemon.max_concurrent_scrapes,
            counters=self.stats,
            budget=self.body_budget,
        )
        self._closed = False

    async def __aenter__(self) -> Scraper:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every pooled connection; the scraper is unusable afterwards."""
        self._closed = True
        await self._http.close()

    async def scrape(
        self, targets: Sequence[ScrapeTarget], *, timeout: float
    ) -> list[ScrapeOutcome]:
        """Scrape every target concurrently; one outcome per target, in order; never raises
        for a per-target failure.

        `timeout` (seconds) bounds each page fetch from the moment this is called, including
        the wait for a concurrency slot; pass less than the scrape interval.
        """
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        # Dedupe: equal page keys are interned, so one dict keyed by identity groups targets.
        groups: dict[int, tuple[PageKey, list[int]]] = {}
        key_of = self._key_of
        for index, target in enumerate(targets):
            key = key_of(target)
            group = groups.get(id(key))
            if group is None:
                groups[id(key)] = (key, [index])
            else:
                group[1].append(index)
        keys = [key for key, _ in groups.values()]
        scrape_round = _Round(
            future=loop.create_future(),
            started=started,
            timeout=timeout,
            remaining=len(keys),
            pages=[None] * len(keys),
        )
        try:
            if self._closed:
                for i, key in enumerate(keys):
                    scrape_round.set(
                        i, Page(text=None, error=closed_error(key), duration_seconds=0.0)
                    )
            else:
                self._maybe_sweep()
                self._submit_all(scrape_round, keys)
            if scrape_round.remaining:
                # One deadline for the whole call (a single timer, not one per request):
                # fetches still running at the deadline are abandoned and reported as timeouts.
                handle = loop.call_at(loop.time() + timeout, scrape_round.expire)
                try:
                    await scrape_round.future
                finally:
                    handle.cancel()
                    if scrape_round.remaining:
                        await self._abandon(scrape_round, keys)
            return self._outcomes(targets, groups, scrape_round)
        finally:
            # `scrape_round.requests[i].context` refers back to `scrape_round`: a reference cycle that holds every
            # page of the round (body and text, ~40 KiB each) until the cyclic collector finds
            # it. Break it so they are freed now. At 1,000 scrapes a second that was ~35 MiB/s
            # of garbage for the collector, and most of its CPU.
            scrape_round.requests.clear()
            scrape_round.tasks.clear()
            # The large pages' text goes with the round (on return), their share of the
            # budget now.
            if scrape_round.reserved:
                self.body_budget.release(scrape_round.reserved)
                scrape_round.reserved = 0

    def _submit_all(self, scrape_round: _Round, keys: list[PageKey]) -> None:
        timeout_text = f"{scrape_round.timeout:g}"
        submit = self._http.submit
        on_done = self._on_done
        # The pods of one source share one interned TLSConfig: look its context up (a hash of
        # the settings and a stat per file) once per round, not once per pod.
        last_tls: TLSConfig | None = None
        last_context: ssl.SSLContext | None = None
        for i, key in enumerate(keys):
            try:
                if key.https:
                    if key.tls is not last_tls:
                        last_context = self._contexts.get(key.tls, url=key.url)
                        last_tls = key.tls
                    context: ssl.SSLContext | None = last_context
                    server_hostname = key.tls.server_name or None
                else:
                    context = server_hostname = None
                head = self._head(key, timeout_text)
            except ScrapeError as exc:
                scrape_round.set(
                    i, Page(text=None, error=exc, duration_seconds=self._since(scrape_round))
                )
                continue
            request = Request(
                host=key.host,
                port=key.port,
                ssl=context,
                server_hostname=server_hostname,
                head=head,
                limit=self._limit,
                on_done=on_done,
                context=(scrape_round, i, key),
            )
            scrape_round.requests[i] = request
            submit(request)

    async def _abandon(self, scrape_round: _Round, keys: list[PageKey]) -> None:
        """The deadline passed (or the caller was cancelled): give up on what is still out."""
        unfinished = [i for i, page in enumerate(scrape_round.pages) if page is None]
        self._http.cancel_many(
            (scrape_round.requests[i] for i in unfinished if i in scrape_round.requests),
            grace=scrape_round.timeout,
        )
        tasks = [scrape_round.tasks[i] for i in unfinished if i in scrape_round.tasks]
        for task in tasks:
            task.cancel()
        duration = self._since(scrape_round)
        for i in unfinished:
            scrape_round.set(
                i,
                Page(
                    text=None,
                    error=timeout_error(keys[i], scrape_round.timeout),
                    duration_seconds=duration,
                ),
            )
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _outcomes(
        self,
        targets: Sequence[ScrapeTarget],
        groups: dict[int, tuple[PageKey, list[int]]],
        scrape_round: _Round,
    ) -> list[ScrapeOutcome]:
        outcomes: list[ScrapeOutcome | None] = [None] * len(targets)
        for (key, indices), page in zip(groups.values(), scrape_round.pages, strict=True):
            assert page is not None
            if page.text is None:
                for i in indices:
                    outcomes[i] = ScrapeOutcome(
                        target=targets[i],
                        value=None,
                        error=page.error,
                        duration_seconds=page.duration_seconds,
                    )
                continue
            # The only place pages are read; an OpenMetrics page must end with `# EOF`.
            if len(indices) == 1:
                i = indices[0]
                if targets[i].source.signal is not None:  # derived: series with labels
                    outcomes[i] = _series_outcome(targets[i], key, page)
                    continue
                result = select_value(
                    page.text, targets[i].source.selector, openmetrics=page.openmetrics
                )
                outcomes[i] = _outcome(targets[i], key, page, result)
                continue
            derived = [i for i in indices if targets[i].source.signal is not None]
            if derived:
                for i in derived:
                    outcomes[i] = _series_outcome(targets[i], key, page)
                indices = [i for i in indices if targets[i].source.signal is None]
            selectors = list(dict.fromkeys(targets[i].source.selector for i in indices))
            results = dict(
                zip(
                    selectors,
                    select_values(page.text, selectors, openmetrics=page.openmetrics),
                    strict=True,
                )
            )
            for i in indices:
                outcomes[i] = _outcome(targets[i], key, page, results[targets[i].source.selector])
        return [o for o in outcomes if o is not None]

    def _on_done(self, request: Request) -> None:
        """Completion callback of one page request (runs inside the protocol callback)."""
        scrape_round, i, key = request.context
        try:
            self._complete(request, scrape_round, i, key)
        except Exception as exc:  # never let a bug here break the connection's protocol
            log.exception("scrape completion failed", url=key.url)
            error = ScrapeError(
                ScrapeErrorKind.CONNECT_FAILED, key.url, f"scrape failed: {exc_text(exc)}"
            )
            scrape_round.set(
                i, Page(text=None, error=error, duration_seconds=self._since(scrape_round))
            )

    def _complete(self, request: Request, scrape_round: _Round, i: int, key: PageKey) -> None:
        exc = request.error
        if exc is None:
            parser = request.parser
            assert parser is not None
            if parser.status != 200:
                preview = parser.body[:ERROR_BODY_PREVIEW_BYTES]
                error = status_error(key, parser.status, parser.reason, preview)
                scrape_round.set(
                    i, Page(text=None, error=error, duration_seconds=self._since(scrape_round))
                )
                return
            try:
                text = parser.body.decode("utf-8")
            except UnicodeDecodeError as bad:
                error = not_utf8_error(key, parser.body, bad)
                parser.discard()
                scrape_round.set(
                    i, Page(text=None, error=error, duration_seconds=self._since(scrape_round))
                )
                return
            if parser.reserved:
                # A large page: its bytes go now (the text is what is read), and its share
                # of the budget stays taken while the text lives, until the round ends.
                scrape_round.reserved += parser.take_reservation()
                parser.discard()
            scrape_round.set(
                i,
                Page(
                    text=text,
                    error=None,
                    duration_seconds=self._since(scrape_round),
                    openmetrics=parser.openmetrics,
                ),
            )
            return
        if isinstance(exc, BodyTooLarge):
            error = too_large_error(key, self._limit, exc.detail)
            scrape_round.set(
                i, Page(text=None, error=error, duration_seconds=self._since(scrape_round))
            )
            return
        if isinstance(exc, BodyBudgetExhausted):
            error = budget_error(key, exc)
            scrape_round.set(
                i, Page(text=None, error=error, duration_seconds=self._since(scrape_round))
            )
            return
        # Rare: classifying may probe the server (certificate description, TLS alert).
        task = asyncio.get_running_loop().create_task(
            self._diagnosis.classify(exc, key, scrape_round.timeout, connecting=request.connecting)
        )
        scrape_round.tasks[i] = task
        task.add_done_callback(functools.partial(self._classified, scrape_round, i, key))

    def _classified(
        self, scrape_round: _Round, i: int, key: PageKey, task: asyncio.Task[ScrapeError]
    ) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        error = (
            task.result()
            if exc is None
            else ScrapeError(
                ScrapeErrorKind.CONNECT_FAILED, key.url, f"scrape failed: {exc_text(exc)}"
            )
        )
        scrape_round.set(
            i, Page(text=None, error=error, duration_seconds=self._since(scrape_round))
        )

    @staticmethod
    def _since(scrape_round: _Round) -> float:
        return time.perf_counter() - scrape_round.started

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep >= IDLE_SWEEP_SECONDS:
            self._last_sweep = now
            self._http.close_idle(KEEPALIVE_SECONDS)

    def _key_of(self, target: ScrapeTarget) -> PageKey:
        """The interned page key of a target, cached per (source object, pod IP)."""
        src = target.source
        cache_key = (id(src), target.ip)
        hit = self._keys.get(cache_key)
        if hit is not None and hit[0] is src:
            return hit[1]
        key = self._page_key(target)
        if len(self._keys) >= _KEY_CACHE_MAX:
            self._keys.clear()
            self._interned.clear()
            self._interned_tls.clear()
            self._prepared.clear()
        key = self._interned.setdefault(key, key)
        self._keys[cache_key] = (src, key)
        return key

    def _page_key(self, target: ScrapeTarget) -> PageKey:
        src = target.source
        tls = src.tls.merged_over(self._daemon.tls)
        https = src.protocol == "https"
        if https and tls.insecure_skip_verify and src not in self._warned:
            self._warned.add(src)
            message = insecure_skip_verify_warning(src, tls)
            if message:  # the daemon warns with the policy's context at start and reload
                log.debug("tls verification disabled", detail=message)
        tls = self._interned_tls.setdefault(tls, tls) if https else _NO_TLS
        return PageKey(
            url=target_url(target),
            host=target.ip,
            port=src.port,
            https=https,
            tls=tls,
            authorization=self._daemon.authorization_for(src),
        )

    def _head(self, key: PageKey, timeout_text: str) -> bytes:
        """The request bytes for a page (cached; the token file is checked every call)."""
        authorization = (
            self._tokens.header(key.authorization, url=key.url)
            if key.authorization is not None
            else None
        )
        prepared = self._prepared.get(id(key))
        if (
            prepared is not None
            and prepared.key is key
            and prepared.timeout_text == timeout_text
            and prepared.authorization == authorization
        ):
            return prepared.head
        url = key.yarl_url
        headers = [
            ("Accept", ACCEPT),
            ("Accept-Encoding", "gzip"),
            ("User-Agent", self._user_agent),
            ("X-Prometheus-Scrape-Timeout-Seconds", timeout_text),
        ]
        if authorization is not None:
            headers.append(("Authorization", authorization))
        try:
            head = build_get(url.host_port_subcomponent or key.host, url.raw_path_qs, headers)
        except ValueError as exc:
            raise ScrapeError(
                ScrapeErrorKind.AUTH_CONFIG
                if authorization is not None
                else ScrapeErrorKind.CONNECT_FAILED,
                key.url,
                f"cannot build the request: {exc}. Check the metric source's path and the "
                "token file's contents.",
            ) from exc
        self._prepared[id(key)] = _Prepared(
            key=key, timeout_text=timeout_text, authorization=authorization, head=head
        )
        return head


def _series_outcome(target: ScrapeTarget, key: PageKey, page: Page) -> ScrapeOutcome:
    assert page.text is not None
    result, series = select_series(page.text, target.source.selector, openmetrics=page.openmetrics)
    if not result.ok:
        return _outcome(target, key, page, result)
    return ScrapeOutcome(
        target=target,
        value=result.value,
        error=None,
        duration_seconds=page.duration_seconds,
        matched=result.matched,
        series=series,
    )


def _outcome(target: ScrapeTarget, key: PageKey, page: Page, result: SelectResult) -> ScrapeOutcome:
    assert page.text is not None
    if result.ok:
        return ScrapeOutcome(
            target=target,
            value=result.value,
            error=None,
            duration_seconds=page.duration_seconds,
            matched=result.matched,
        )
    error = selection_error(key, page.text, target.source.selector, result)
    return ScrapeOutcome(
        target=target, value=None, error=error, duration_seconds=page.duration_seconds
    )
