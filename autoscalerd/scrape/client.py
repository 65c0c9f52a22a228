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
  `DaemonConfig.max_concurrent_scrapes` bounds requests in flight; the body is abandoned past
  `DaemonConfig.body_size_limit_bytes`, counted *after* gzip decompression.
- **Failures are values, never numbers.** `scrape()` never raises for a target: each outcome
  holds either a value or a `ScrapeError` whose message names the URL, the problem and the fix.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace, TracebackType
from typing import Any

import structlog
import yarl

from autoscalerd import __version__
from autoscalerd.config.model import (
    Authorization,
    DaemonConfig,
    MetricSource,
    SeriesSelector,
    TLSConfig,
)
from autoscalerd.scrape.errors import ScrapeError, ScrapeErrorKind
from autoscalerd.scrape.http11 import (
    BodyTooLarge,
    ClientClosed,
    HandshakeDisconnected,
    HTTP11Client,
    HTTPProtocolError,
    Request,
    TruncatedResponse,
    build_get,
)
from autoscalerd.scrape.parser import (
    SelectResult,
    SelectStatus,
    looks_like_exposition,
    select_value,
    select_values,
)
from autoscalerd.scrape.tls import (
    TLSContextCache,
    TokenCache,
    build_ssl_context,
    insecure_skip_verify_warning,
)

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

CERT_PROBE_CACHE_SECONDS = 300.0
"""A failing server's certificate description is fetched at most once per this period."""

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

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(kw_only=True, slots=True)
class ScrapeStats:
    """Counters since the scraper started; `connections_created` is also the TLS handshakes."""

    requests: int = 0
    connections_created: int = 0

    @property
    def connections_reused(self) -> int:
        """Requests that went over an already open connection."""
        return self.requests - self.connections_created


@dataclass(frozen=True, kw_only=True, slots=True)
class _PageKey:
    """What makes two targets read the same page: URL plus every setting that shapes the request."""

    url: str
    host: str
    port: int
    https: bool
    tls: TLSConfig
    authorization: Authorization | None

    @property
    def yarl_url(self) -> yarl.URL:
        """The URL pre-parsed once per distinct page."""
        return _parsed_url(self.url)


@functools.lru_cache(maxsize=65536)
def _parsed_url(url: str) -> yarl.URL:
    return yarl.URL(url)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Page:
    """A fetched page: `text` (strict UTF-8) or `error`. `openmetrics`: the Content-Type
    says `application/openmetrics-text`, whose pages must end with `# EOF`."""

    text: str | None
    error: ScrapeError | None
    duration_seconds: float
    openmetrics: bool = False


@dataclass(kw_only=True, slots=True)
class _Prepared:
    """The request bytes of a page, rebuilt only when the token or the timeout changes."""

    key: _PageKey
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
    pages: list[_Page | None]
    requests: dict[int, Request] = field(default_factory=dict)
    tasks: dict[int, asyncio.Task[ScrapeError]] = field(default_factory=dict)

    def set(self, index: int, page: _Page) -> None:
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


@dataclass(kw_only=True, slots=True)
class _CertNote:
    text: str
    at: float


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
        self._cert_notes: dict[tuple[str, int, str | None], _CertNote] = {}
        self._keys: dict[tuple[int, str], tuple[MetricSource, _PageKey]] = {}
        self._interned: dict[_PageKey, _PageKey] = {}
        self._interned_tls: dict[TLSConfig, TLSConfig] = {}
        self._prepared: dict[int, _Prepared] = {}
        self._last_sweep = time.monotonic()
        self.stats = ScrapeStats()
        self._http = HTTP11Client(
            max_in_flight=self._daemon.max_concurrent_scrapes, counters=self.stats
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
        groups: dict[int, tuple[_PageKey, list[int]]] = {}
        key_of = self._key_of
        for index, target in enumerate(targets):
            key = key_of(target)
            group = groups.get(id(key))
            if group is None:
                groups[id(key)] = (key, [index])
            else:
                group[1].append(index)
        keys = [key for key, _ in groups.values()]
        rnd = _Round(
            future=loop.create_future(),
            started=started,
            timeout=timeout,
            remaining=len(keys),
            pages=[None] * len(keys),
        )
        try:
            if self._closed:
                for i, key in enumerate(keys):
                    rnd.set(i, self._closed_page(key))
            else:
                self._maybe_sweep()
                self._submit_all(rnd, keys)
            if rnd.remaining:
                # One deadline for the whole call (a single timer, not one per request):
                # fetches still running at the deadline are abandoned and reported as timeouts.
                handle = loop.call_at(loop.time() + timeout, rnd.expire)
                try:
                    await rnd.future
                finally:
                    handle.cancel()
                    if rnd.remaining:
                        await self._abandon(rnd, keys)
            return self._outcomes(targets, groups, rnd)
        finally:
            # `rnd.requests[i].context` refers back to `rnd`: a reference cycle that holds every
            # page of the round (body and text, ~40 KiB each) until the cyclic collector finds
            # it. Break it so they are freed now. At 1,000 scrapes a second that was ~35 MiB/s
            # of garbage for the collector, and most of its CPU.
            rnd.requests.clear()
            rnd.tasks.clear()

    def _submit_all(self, rnd: _Round, keys: list[_PageKey]) -> None:
        timeout_text = f"{rnd.timeout:g}"
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
                rnd.set(i, _Page(text=None, error=exc, duration_seconds=self._since(rnd)))
                continue
            request = Request(
                host=key.host,
                port=key.port,
                ssl=context,
                server_hostname=server_hostname,
                head=head,
                limit=self._limit,
                on_done=on_done,
                context=(rnd, i, key),
            )
            rnd.requests[i] = request
            submit(request)

    async def _abandon(self, rnd: _Round, keys: list[_PageKey]) -> None:
        """The deadline passed (or the caller was cancelled): give up on what is still out."""
        unfinished = [i for i, page in enumerate(rnd.pages) if page is None]
        self._http.cancel_many(rnd.requests[i] for i in unfinished if i in rnd.requests)
        tasks = [rnd.tasks[i] for i in unfinished if i in rnd.tasks]
        for task in tasks:
            task.cancel()
        duration = self._since(rnd)
        for i in unfinished:
            rnd.set(i, self._timeout_page(keys[i], rnd.timeout, duration))
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _outcomes(
        self,
        targets: Sequence[ScrapeTarget],
        groups: dict[int, tuple[_PageKey, list[int]]],
        rnd: _Round,
    ) -> list[ScrapeOutcome]:
        outcomes: list[ScrapeOutcome | None] = [None] * len(targets)
        for (key, indices), page in zip(groups.values(), rnd.pages, strict=True):
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
            # MERGE(issue 11, OpenMetrics): the only place pages are read. Once
            # scrape/parser.py's select_value/select_values take `openmetrics`, pass
            # `openmetrics=page.openmetrics` to both calls below (it requires `# EOF`).
            if len(indices) == 1:
                i = indices[0]
                result = select_value(page.text, targets[i].source.selector)
                outcomes[i] = _outcome(targets[i], key, page, result)
                continue
            selectors = list(dict.fromkeys(targets[i].source.selector for i in indices))
            results = dict(zip(selectors, select_values(page.text, selectors), strict=True))
            for i in indices:
                outcomes[i] = _outcome(targets[i], key, page, results[targets[i].source.selector])
        return [o for o in outcomes if o is not None]

    def _on_done(self, request: Request) -> None:
        """Completion callback of one page request (runs inside the protocol callback)."""
        rnd, i, key = request.context
        try:
            self._complete(request, rnd, i, key)
        except Exception as exc:  # never let a bug here break the connection's protocol
            log.exception("scrape completion failed", url=key.url)
            error = ScrapeError(
                ScrapeErrorKind.CONNECT_FAILED, key.url, f"scrape failed: {_exc_text(exc)}"
            )
            rnd.set(i, _Page(text=None, error=error, duration_seconds=self._since(rnd)))

    def _complete(self, request: Request, rnd: _Round, i: int, key: _PageKey) -> None:
        exc = request.error
        if exc is None:
            parser = request.parser
            assert parser is not None
            if parser.status != 200:
                preview = parser.body[:ERROR_BODY_PREVIEW_BYTES]
                error = _status_error(key, parser.status, parser.reason, preview)
                rnd.set(i, _Page(text=None, error=error, duration_seconds=self._since(rnd)))
                return
            try:
                text = parser.body.decode("utf-8")
            except UnicodeDecodeError as bad:
                error = _not_utf8_error(key, parser.body, bad)
                rnd.set(i, _Page(text=None, error=error, duration_seconds=self._since(rnd)))
                return
            rnd.set(
                i,
                _Page(
                    text=text,
                    error=None,
                    duration_seconds=self._since(rnd),
                    openmetrics=parser.openmetrics,
                ),
            )
            return
        if isinstance(exc, BodyTooLarge):
            error = self._too_large(key, exc.detail)
            rnd.set(i, _Page(text=None, error=error, duration_seconds=self._since(rnd)))
            return
        # Rare: classifying may probe the server (certificate description, TLS alert).
        task = asyncio.get_running_loop().create_task(
            self._classify(exc, key, rnd.timeout, connecting=request.connecting)
        )
        rnd.tasks[i] = task
        task.add_done_callback(functools.partial(self._classified, rnd, i, key))

    def _classified(
        self, rnd: _Round, i: int, key: _PageKey, task: asyncio.Task[ScrapeError]
    ) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        error = (
            task.result()
            if exc is None
            else ScrapeError(
                ScrapeErrorKind.CONNECT_FAILED, key.url, f"scrape failed: {_exc_text(exc)}"
            )
        )
        rnd.set(i, _Page(text=None, error=error, duration_seconds=self._since(rnd)))

    @staticmethod
    def _since(rnd: _Round) -> float:
        return time.perf_counter() - rnd.started

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep >= IDLE_SWEEP_SECONDS:
            self._last_sweep = now
            self._http.close_idle(KEEPALIVE_SECONDS)

    def _key_of(self, target: ScrapeTarget) -> _PageKey:
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

    def _page_key(self, target: ScrapeTarget) -> _PageKey:
        src = target.source
        tls = src.tls.merged_over(self._daemon.tls)
        https = src.protocol == "https"
        if https and tls.insecure_skip_verify and src not in self._warned:
            self._warned.add(src)
            message = insecure_skip_verify_warning(src, tls)
            if message:  # the daemon warns with the policy's context at start and reload
                log.debug("tls verification disabled", detail=message)
        tls = self._interned_tls.setdefault(tls, tls) if https else _NO_TLS
        return _PageKey(
            url=target_url(target),
            host=target.ip,
            port=src.port,
            https=https,
            tls=tls,
            authorization=self._daemon.authorization_for(src),
        )

    def _head(self, key: _PageKey, timeout_text: str) -> bytes:
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

    @staticmethod
    def _closed_page(key: _PageKey) -> _Page:
        error = ScrapeError(
            ScrapeErrorKind.CONNECT_FAILED, key.url, "scrape failed: the scraper is closed"
        )
        return _Page(text=None, error=error, duration_seconds=0.0)

    @staticmethod
    def _timeout_page(key: _PageKey, timeout: float, duration: float) -> _Page:
        error = ScrapeError(
            ScrapeErrorKind.TIMEOUT,
            key.url,
            f"no complete answer within {timeout:g}s. The pod may be overloaded or the port "
            "firewalled; raise scrapeTimeout (it must stay below scrapeInterval) or check the "
            "pod.",
        )
        return _Page(text=None, error=error, duration_seconds=duration)

    def _too_large(self, key: _PageKey, detail: str) -> ScrapeError:
        return ScrapeError(
            ScrapeErrorKind.TOO_LARGE,
            key.url,
            f"response larger than the body size limit of {self._limit} bytes ({detail}); "
            "reading stopped. Point the source at a smaller endpoint or raise "
            "DaemonConfig bodySizeLimit.",
        )

    async def _classify(
        self, exc: BaseException, key: _PageKey, timeout: float, *, connecting: bool
    ) -> ScrapeError:
        """Turn a transport exception into a ScrapeError that says what to do.

        `connecting`: the failure happened while opening the connection (TCP connect or TLS
        handshake), not during the request/response exchange.
        """
        url = key.url
        if isinstance(exc, ssl.SSLCertVerificationError):
            return await self._tls_verify_error(exc, key, timeout)
        if isinstance(exc, ssl.SSLError) or (isinstance(exc, OSError) and _is_ssl_alert(exc)):
            return _tls_handshake_error(exc, key)
        if isinstance(exc, HTTPProtocolError):
            if exc.looks_like_tls and not key.https:
                fix = "the port serves HTTPS: set protocolType: https"
            else:
                fix = (
                    "the pod's HTTP server answers with bytes that are not HTTP/1.1; check "
                    "that the source's port is its metrics port, and the exporter's logs"
                )
            return ScrapeError(
                ScrapeErrorKind.MALFORMED_RESPONSE,
                url,
                f"malformed HTTP response ({_exc_text(exc)}); the page is not used. Fix: {fix}.",
            )
        if isinstance(exc, TruncatedResponse):
            return ScrapeError(
                ScrapeErrorKind.TRUNCATED,
                url,
                f"the response was cut short ({_exc_text(exc)}); a partial page is never "
                "read, so this pod counts as missing. Fix: check the pod's logs for a crash or "
                "a proxy that drops connections; an exporter should send a Content-Length or "
                "a chunked body, and end TLS with close_notify.",
            )
        if isinstance(exc, HandshakeDisconnected):
            return ScrapeError(
                ScrapeErrorKind.TLS_HANDSHAKE,
                url,
                f"TLS handshake failed: {_exc_text(exc)}. Fix: the port accepted the connection "
                "but the server hung up during the handshake: check that it serves TLS, and "
                "that it accepts this client's TLS version, server name (tlsConfig.serverName) "
                "and client certificate (tlsConfig.certFile); its logs say which.",
            )
        if isinstance(exc, ClientClosed):
            return ScrapeError(
                ScrapeErrorKind.CONNECT_FAILED, url, f"scrape failed: {_exc_text(exc)}"
            )
        if connecting and isinstance(exc, OSError):
            if isinstance(exc, ConnectionRefusedError):
                return ScrapeError(
                    ScrapeErrorKind.CONNECT_REFUSED,
                    url,
                    f"connection refused: nothing listens on port {key.port}. Check the "
                    "metric source's port and that the pod's server is up.",
                )
            return ScrapeError(
                ScrapeErrorKind.CONNECT_FAILED,
                url,
                f"cannot connect: {exc.strerror or exc}. Check the pod IP is "
                "reachable from the daemon (network policy, routing).",
            )
        if isinstance(exc, OSError):  # resets and early closes during the exchange
            if key.https:
                alert = await self._probe_tls_alert(key, timeout)
                if alert is not None:
                    return _tls_handshake_error(alert, key)
            hint = ""
            if not key.https:
                hint = " If the port serves HTTPS, set protocolType: https."
            return ScrapeError(
                ScrapeErrorKind.CONNECTION_RESET,
                url,
                f"the server closed or reset the connection ({_exc_text(exc)}).{hint} Check "
                "the pod's logs; the scrape is retried next round.",
            )
        return ScrapeError(ScrapeErrorKind.CONNECT_FAILED, url, f"scrape failed: {_exc_text(exc)}")

    async def _tls_verify_error(
        self, err: ssl.SSLCertVerificationError, key: _PageKey, timeout: float
    ) -> ScrapeError:
        checked = key.tls.server_name or key.host
        reason = err.verify_message or str(err)
        cert = await self._describe_cert(key, timeout)
        ca = f"the CA in {key.tls.ca_file}" if key.tls.ca_file else "the system trust store"
        if err.verify_code == 64:  # X509_V_ERR_IP_ADDRESS_MISMATCH: scraped by pod IP
            # metrics-server's commonest case: its certificate names a DNS name, not the IP.
            fix = (
                f"the certificate does not list the IP {checked}: set tlsConfig.serverName to "
                "a DNS name the certificate lists (see its SANs above), or serve a certificate "
                "whose SANs include the pod IP"
            )
        elif err.verify_code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
            fix = (
                "set tlsConfig.serverName to a name in the certificate, or serve a certificate "
                f"that includes {checked}"
            )
        else:
            fix = "set tlsConfig.caFile to the CA that signed it, or tlsConfig.serverName to a "
            fix += "name in the certificate"
        if err.verify_code not in (62, 64) and "strict" in reason.lower():
            fix += ", or tlsConfig.strictX509: false for an older CA"
        return ScrapeError(
            ScrapeErrorKind.TLS_VERIFY,
            key.url,
            f"TLS certificate verification failed: {reason} (checked name {checked!r} against "
            f"{ca}; server certificate: {cert}). Fix: {fix}, or "
            "tlsConfig.insecureSkipVerify: true to skip verification.",
        )

    async def _probe_tls_alert(self, key: _PageKey, timeout: float) -> str | None:
        """Find the TLS failure behind a bare disconnect on an HTTPS port, if there is one.

        With TLS 1.3 a server that wants a client certificate (mTLS) rejects it *after* the
        client finished its handshake, so the client sees only a bare disconnect. Replaying
        one request over a raw TLS stream surfaces the server's alert (Go servers send
        "certificate required"); a server that just hangs up (Python's asyncio) is recognised
        by a TLS 1.2 handshake being refused where 1.3 "succeeded". Runs only on failures.
        """
        budget = max(0.2, timeout / 2)

        async def exchange(context: ssl.SSLContext) -> bytes:
            async with asyncio.timeout(budget):
                reader, writer = await asyncio.open_connection(
                    key.host,
                    key.port,
                    ssl=context,
                    server_hostname=key.tls.server_name or key.host,
                )
                try:
                    writer.write(b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
                    return await reader.read(1)
                finally:
                    writer.close()

        try:
            answer = await exchange(build_ssl_context(key.tls))
        except ssl.SSLError as exc:
            return str(exc)
        except Exception:
            return None
        if answer or key.tls.cert_file:
            return None
        legacy = build_ssl_context(key.tls)
        legacy.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            await exchange(legacy)
        except (ssl.SSLError, ConnectionResetError) as exc:
            # asyncio reports an EOF in the middle of a handshake as ConnectionResetError.
            return (
                "the server hangs up after the handshake and drops a TLS 1.2 handshake "
                f"({_exc_text(exc)}): it most likely requires a client certificate"
            )
        except Exception:
            return None
        return None

    async def _describe_cert(self, key: _PageKey, timeout: float) -> str:
        """Fetch the server's certificate without verifying it and describe it (cached)."""
        cache_key = (key.host, key.port, key.tls.server_name)
        now = time.monotonic()
        note = self._cert_notes.get(cache_key)
        if note is not None and now - note.at < CERT_PROBE_CACHE_SECONDS:
            return note.text
        text = "unavailable"
        probe = ssl.create_default_context()
        probe.check_hostname = False
        probe.verify_mode = ssl.CERT_NONE
        try:
            async with asyncio.timeout(max(0.2, timeout / 2)):
                _, writer = await asyncio.open_connection(
                    key.host, key.port, ssl=probe, server_hostname=key.tls.server_name or ""
                )
            try:
                ssl_object = writer.get_extra_info("ssl_object")
                der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
            finally:
                writer.close()
            if der:
                text = _describe_der(der)
        except Exception:  # a description is best effort; the verify error stands on its own
            pass
        self._cert_notes[cache_key] = _CertNote(text=text, at=now)
        return text


def _outcome(
    target: ScrapeTarget, key: _PageKey, page: _Page, result: SelectResult
) -> ScrapeOutcome:
    assert page.text is not None
    if result.ok:
        return ScrapeOutcome(
            target=target,
            value=result.value,
            error=None,
            duration_seconds=page.duration_seconds,
            matched=result.matched,
        )
    selector = target.source.selector
    if result.status is SelectStatus.ABSENT:
        if not looks_like_exposition(page.text):
            start = page.text.lstrip()[:80].replace("\n", " ")
            error = ScrapeError(
                ScrapeErrorKind.PARSE,
                key.url,
                f"the response is not Prometheus or OpenMetrics text (it starts with "
                f"{start!r}). Check the metric source's port and path.",
            )
        elif (
            selector.matchers and select_value(page.text, SeriesSelector(metric=selector.metric)).ok
        ):
            error = ScrapeError(
                ScrapeErrorKind.ABSENT,
                key.url,
                f"metric {selector.metric} is present but no series matches {selector}. Check "
                "the label matchers of targetMetric against the page.",
            )
        else:
            error = ScrapeError(
                ScrapeErrorKind.ABSENT,
                key.url,
                f"no series named {selector.metric} on the page (names match exactly). Check "
                "targetMetric's spelling, and that this pod exports it.",
            )
    elif result.status is SelectStatus.INVALID_VALUE:
        error = ScrapeError(
            ScrapeErrorKind.INVALID_VALUE,
            key.url,
            f"line {result.line}: {result.reason}. The pod has no usable value for "
            f"{selector} yet; it counts as missing.",
        )
    else:
        error = ScrapeError(
            ScrapeErrorKind.PARSE,
            key.url,
            f"line {result.line}: {result.reason}. The exporter produced invalid exposition "
            "text; fix the exporter.",
        )
    return ScrapeOutcome(
        target=target, value=None, error=error, duration_seconds=page.duration_seconds
    )


def _not_utf8_error(key: _PageKey, body: bytes, exc: UnicodeDecodeError) -> ScrapeError:
    line = body.count(b"\n", 0, exc.start) + 1
    column = exc.start - (body.rfind(b"\n", 0, exc.start) + 1) + 1
    bad = body[exc.start : exc.start + 4]
    return ScrapeError(
        ScrapeErrorKind.MALFORMED_RESPONSE,
        key.url,
        f"the page is not valid UTF-8: byte offset {exc.start} (line {line}, byte {column}) "
        f"starts {bad!r} ({exc.reason}); the page is not used. Fix: the exposition format is "
        "UTF-8 text: fix the exporter's label values or metric help.",
    )


def _status_error(key: _PageKey, status: int, reason: str | None, preview: bytes) -> ScrapeError:
    said = preview.decode("utf-8", errors="replace").strip().replace("\n", " ")
    said = f" Server said: {said[:300]!r}." if said else ""
    head = f"HTTP {status} {reason or ''}".rstrip()
    if status == 401:
        fix = (
            "authorization.credentialsFile (or bearerTokenFile) with a token the server accepts"
            if key.authorization is None
            else f"the token in {key.authorization.credentials_file} was rejected: check it "
            "is current and meant for this server"
        )
        return ScrapeError(
            ScrapeErrorKind.UNAUTHORIZED,
            key.url,
            f"{head}: authentication required.{said} "
            f"Fix: {'set ' if key.authorization is None else ''}{fix}.",
        )
    if status == 403:
        who = (
            "an anonymous request (no token is configured)"
            if key.authorization is None
            else f"the identity of the token in {key.authorization.credentials_file}"
        )
        return ScrapeError(
            ScrapeErrorKind.FORBIDDEN,
            key.url,
            f"{head}: {who} may not read this path.{said} Kubernetes components such as "
            "metrics-server authorize /metrics: send a bearer token "
            "(authorization.credentialsFile) whose identity may `get` the non-resource URL "
            'via a ClusterRole rule {nonResourceURLs: ["/metrics"], verbs: ["get"]} and a '
            "ClusterRoleBinding, or start the server with "
            "--authorization-always-allow-paths=/metrics.",
        )
    if 300 <= status < 400:
        fix = "set path to the final location (redirects are not followed)"
    elif status == 404:
        fix = "check the metric source's path"
    elif status >= 500:
        fix = "the pod's metrics handler failed; check its logs"
    else:
        fix = "check the metric source's port, path and protocolType"
    return ScrapeError(ScrapeErrorKind.HTTP_STATUS, key.url, f"{head}.{said} Fix: {fix}.")


def _is_ssl_alert(exc: BaseException) -> bool:
    """Say whether an OS-level error is really a TLS failure (wrapped or chained)."""
    causes = (exc, exc.__cause__, getattr(exc, "os_error", None))
    return any(isinstance(c, ssl.SSLError) for c in causes)


def _tls_handshake_error(exc: BaseException | str, key: _PageKey) -> ScrapeError:
    text = exc if isinstance(exc, str) else _exc_text(exc)
    lowered = text.lower()
    if (
        "certificate required" in lowered
        or "bad certificate" in lowered
        or "requires a client certificate" in lowered
        or ("handshake failure" in lowered and not key.tls.cert_file)
    ):
        fix = (
            "the server requires a client certificate: set tlsConfig.certFile and tlsConfig.keyFile"
            if not key.tls.cert_file
            else f"the server rejected the client certificate {key.tls.cert_file}: use one "
            "signed by a CA the server trusts"
        )
    elif "wrong version number" in lowered or "record layer" in lowered:
        fix = "the port does not speak TLS: set protocolType: http, or use the TLS port"
    elif "protocol version" in lowered or "unsupported protocol" in lowered:
        fix = "client and server share no TLS version: check tlsConfig.minVersion"
    else:
        fix = "check that the port serves TLS and the TLS settings of the metric source"
    return ScrapeError(
        ScrapeErrorKind.TLS_HANDSHAKE, key.url, f"TLS handshake failed ({text}). Fix: {fix}."
    )


def _exc_text(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text


_DN_SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
}


def _describe_der(der: bytes) -> str:
    """Describe a DER certificate: subject, SANs, issuer, expiry (stdlib only)."""
    info = _decode_der(der)
    if info is None:
        return "unavailable"

    def dn(rdns: Any) -> str:
        parts = (f"{_DN_SHORT.get(k, k)}={v}" for rdn in rdns or () for k, v in rdn)
        return ",".join(parts) or "(empty)"

    sans = ", ".join(f"{k}:{v}" for k, v in info.get("subjectAltName", ())) or "none"
    subject = dn(info.get("subject"))
    issuer = dn(info.get("issuer"))
    self_signed = " (self-signed)" if subject == issuer else ""
    return (
        f"subject {subject}, SANs [{sans}], issuer {issuer}{self_signed}, "
        f"expires {info.get('notAfter', '?')}"
    )


def _decode_der(der: bytes) -> dict[str, Any] | None:
    """Decode a certificate with CPython's own decoder (the same one getpeercert() uses).

    `ssl._ssl._test_decode_cert` is private but present in every CPython since 3.2; it reads a
    PEM file. Any failure degrades to no description.
    """
    decode = getattr(getattr(ssl, "_ssl", SimpleNamespace()), "_test_decode_cert", None)
    if decode is None:
        return None
    fd, path = tempfile.mkstemp(suffix=".pem")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(ssl.DER_cert_to_PEM_cert(der))
        result = decode(path)
        return result if isinstance(result, dict) else None
    except Exception:
        return None
    finally:
        os.unlink(path)
