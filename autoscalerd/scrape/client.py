"""The concurrent scraper: fetch pod metric pages over HTTP(S) and select values from them.

One `Scraper` serves the whole daemon. Design points, each for a measured reason:

- **One connector, kept alive.** A single `aiohttp.TCPConnector` pools connections keyed by
  (host, port, SSLContext, server_hostname); `TLSContextCache` hands out the same context object
  per distinct setting, so round after round reuses the same TLS connections: steady state makes
  no new handshakes (see `ScrapeStats`). The keep-alive timeout is far above any sane scrape
  interval so idle connections survive between rounds.
- **One fetch per page per round.** Targets that read the same URL with the same TLS and auth
  settings (several metric sources or policies on one pod) share one request; every selector is
  then evaluated on the one body.
- **Limits on everything.** A per-call deadline (the caller's, below the scrape interval) covers
  the wait for a slot, connect, TLS, headers and body; `DaemonConfig.max_concurrent_scrapes`
  bounds requests in flight; the body is read in chunks and abandoned past
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
from dataclasses import dataclass
from types import SimpleNamespace, TracebackType
from typing import Any

import aiohttp
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

READ_CHUNK_BYTES = 64 * 1024
"""Body read granularity; the size limit is checked after every chunk (decompressed)."""

ERROR_BODY_PREVIEW_BYTES = 512
"""How much of a non-200 body is quoted in the error message."""

CERT_PROBE_CACHE_SECONDS = 300.0
"""A failing server's certificate description is fetched at most once per this period."""


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


class _CountingConnector(aiohttp.TCPConnector):
    """A TCPConnector that counts the connections it opens (each HTTPS one is a handshake).

    Overrides the connector's connection factory instead of using a TraceConfig: tracing
    fires several async signals per request and cost ~10 % of the scraper's CPU.
    """

    def __init__(self, stats: ScrapeStats, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stats = stats

    async def _create_connection(self, *args: Any, **kwargs: Any) -> Any:
        self._stats.connections_created += 1
        return await super()._create_connection(*args, **kwargs)


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
        """The URL pre-parsed once per distinct page (yarl parsing is ~15 µs per request)."""
        return _parsed_url(self.url)


@functools.lru_cache(maxsize=65536)
def _parsed_url(url: str) -> yarl.URL:
    return yarl.URL(url)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Page:
    text: str | None
    error: ScrapeError | None
    duration_seconds: float


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

    Create it inside the running event loop (aiohttp binds to it) and `await close()` at
    shutdown, or use `async with Scraper(daemon=cfg) as scraper:`.
    """

    def __init__(self, *, daemon: DaemonConfig | None = None, user_agent: str = USER_AGENT):
        self._daemon = daemon if daemon is not None else DaemonConfig()
        self._user_agent = user_agent
        self._limit = self._daemon.body_size_limit_bytes
        self._semaphore = asyncio.Semaphore(self._daemon.max_concurrent_scrapes)
        self._contexts = TLSContextCache()
        self._tokens = TokenCache()
        self._warned: set[MetricSource] = set()
        self._cert_notes: dict[tuple[str, int, str | None], _CertNote] = {}
        self.stats = ScrapeStats()
        connector = _CountingConnector(
            self.stats,
            limit=self._daemon.max_concurrent_scrapes,
            limit_per_host=0,
            keepalive_timeout=KEEPALIVE_SECONDS,
            enable_cleanup_closed=True,
            use_dns_cache=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),  # the per-call deadline governs
            auto_decompress=True,
            skip_auto_headers=("Accept-Encoding",),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

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
        await self._session.close()

    async def scrape(
        self, targets: Sequence[ScrapeTarget], *, timeout: float
    ) -> list[ScrapeOutcome]:
        """Scrape every target concurrently; one outcome per target, in order; never raises
        for a per-target failure.

        `timeout` (seconds) bounds each page fetch from the moment this is called, including
        the wait for a concurrency slot; pass less than the scrape interval.
        """
        pages: dict[_PageKey, list[int]] = {}
        for index, target in enumerate(targets):
            pages.setdefault(self._page_key(target), []).append(index)
        keys = list(pages)
        # One deadline for the whole call (a single timer, not one per request): fetches still
        # running at the deadline are cancelled and reported as timeouts.
        started = time.perf_counter()
        tasks = [asyncio.ensure_future(self._fetch_page(k, timeout)) for k in keys]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        fetched = [
            task.result()
            if task.done() and not task.cancelled()
            else self._timeout_page(key, timeout, time.perf_counter() - started)
            for key, task in zip(keys, tasks, strict=True)
        ]
        outcomes: list[ScrapeOutcome | None] = [None] * len(targets)
        for key, page in zip(keys, fetched, strict=True):
            indices = pages[key]
            if page.text is None:
                for i in indices:
                    outcomes[i] = ScrapeOutcome(
                        target=targets[i],
                        value=None,
                        error=page.error,
                        duration_seconds=page.duration_seconds,
                    )
                continue
            selectors = list(dict.fromkeys(targets[i].source.selector for i in indices))
            results = dict(zip(selectors, select_values(page.text, selectors), strict=True))
            for i in indices:
                result = results[targets[i].source.selector]
                outcomes[i] = _outcome(targets[i], key, page, result)
        return [o for o in outcomes if o is not None]

    def _page_key(self, target: ScrapeTarget) -> _PageKey:
        src = target.source
        tls = src.tls.merged_over(self._daemon.tls)
        https = src.protocol == "https"
        if https and tls.insecure_skip_verify and src not in self._warned:
            self._warned.add(src)
            message = insecure_skip_verify_warning(src, tls)
            if message:
                log.warning("tls verification disabled", detail=message)
        return _PageKey(
            url=target_url(target),
            host=target.ip,
            port=src.port,
            https=https,
            tls=tls if https else TLSConfig(),
            authorization=src.authorization or self._daemon.authorization,
        )

    async def _fetch_page(self, key: _PageKey, timeout: float) -> _Page:
        started = time.perf_counter()
        try:
            async with self._semaphore:
                text = await self._fetch(key, timeout)
        except ScrapeError as exc:
            return _Page(text=None, error=exc, duration_seconds=time.perf_counter() - started)
        except TimeoutError:
            return self._timeout_page(key, timeout, time.perf_counter() - started)
        except Exception as exc:
            error = await self._classify(exc, key, timeout)
            return _Page(text=None, error=error, duration_seconds=time.perf_counter() - started)
        return _Page(text=text, error=None, duration_seconds=time.perf_counter() - started)

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

    async def _fetch(self, key: _PageKey, timeout: float) -> str:
        headers = {
            "Accept": ACCEPT,
            "Accept-Encoding": "gzip",
            "User-Agent": self._user_agent,
            "X-Prometheus-Scrape-Timeout-Seconds": f"{timeout:g}",
        }
        if key.authorization is not None:
            headers["Authorization"] = self._tokens.header(key.authorization, url=key.url)
        kwargs: dict[str, Any] = {}
        if key.https:
            kwargs["ssl"] = self._contexts.get(key.tls, url=key.url)
            if key.tls.server_name:
                kwargs["server_hostname"] = key.tls.server_name
        self.stats.requests += 1
        async with self._session.get(
            key.yarl_url, headers=headers, allow_redirects=False, **kwargs
        ) as resp:
            if resp.status != 200:
                preview = await resp.content.read(ERROR_BODY_PREVIEW_BYTES)
                raise _status_error(key, resp.status, resp.reason, preview)
            encoding = resp.headers.get("Content-Encoding", "identity").lower()
            length = resp.content_length
            if encoding == "identity" and length is not None and length > self._limit:
                raise self._too_large(key, f"Content-Length is {length} bytes")
            if encoding == "identity" and length is not None:
                # Fast path: the size is known and within the limit (checked above).
                return (await resp.read()).decode("utf-8", errors="replace")
            body = bytearray()
            async for chunk in resp.content.iter_chunked(READ_CHUNK_BYTES):
                body += chunk
                if len(body) > self._limit:
                    raise self._too_large(key, f"the body exceeded it ({encoding} encoding)")
            return body.decode("utf-8", errors="replace")

    def _too_large(self, key: _PageKey, detail: str) -> ScrapeError:
        return ScrapeError(
            ScrapeErrorKind.TOO_LARGE,
            key.url,
            f"response larger than the body size limit of {self._limit} bytes ({detail}); "
            "reading stopped. Point the source at a smaller endpoint or raise "
            "DaemonConfig bodySizeLimit.",
        )

    async def _classify(self, exc: BaseException, key: _PageKey, timeout: float) -> ScrapeError:
        """Turn a transport exception into a ScrapeError that says what to do."""
        url = key.url
        if isinstance(exc, aiohttp.ClientConnectorCertificateError) and isinstance(
            exc.certificate_error, ssl.SSLCertVerificationError
        ):
            return await self._tls_verify_error(exc.certificate_error, key, timeout)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return await self._tls_verify_error(exc, key, timeout)
        if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError) or (
            isinstance(exc, aiohttp.ClientOSError | ssl.SSLError) and _is_ssl_alert(exc)
        ):
            return _tls_handshake_error(exc, key)
        if isinstance(exc, aiohttp.ClientConnectorError):
            if isinstance(exc.os_error, ConnectionRefusedError):
                return ScrapeError(
                    ScrapeErrorKind.CONNECT_REFUSED,
                    url,
                    f"connection refused: nothing listens on port {key.port}. Check the "
                    "metric source's port and that the pod's server is up.",
                )
            return ScrapeError(
                ScrapeErrorKind.CONNECT_FAILED,
                url,
                f"cannot connect: {exc.os_error.strerror or exc.os_error}. Check the pod IP is "
                "reachable from the daemon (network policy, routing).",
            )
        if isinstance(
            exc,
            aiohttp.ServerDisconnectedError
            | aiohttp.ClientPayloadError
            | aiohttp.ClientOSError
            | ConnectionError,
        ):
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
        if isinstance(exc, aiohttp.ClientResponseError):
            return ScrapeError(
                ScrapeErrorKind.HTTP_STATUS,
                url,
                f"malformed HTTP response ({_exc_text(exc)}). Check that the port serves "
                f"{'HTTPS' if key.https else 'plain HTTP'}.",
            )
        return ScrapeError(ScrapeErrorKind.CONNECT_FAILED, url, f"scrape failed: {_exc_text(exc)}")

    async def _tls_verify_error(
        self, err: ssl.SSLCertVerificationError, key: _PageKey, timeout: float
    ) -> ScrapeError:
        checked = key.tls.server_name or key.host
        reason = err.verify_message or str(err)
        cert = await self._describe_cert(key, timeout)
        ca = f"the CA in {key.tls.ca_file}" if key.tls.ca_file else "the system trust store"
        if err.verify_code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH / IP mismatch (64)
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
        client finished its handshake, so aiohttp reports only "Server disconnected". Replaying
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
    """Say whether an OS-level error is really a TLS failure (aiohttp wraps those)."""
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
