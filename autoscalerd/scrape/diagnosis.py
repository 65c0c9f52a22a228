"""Why a scrape failed, in words an operator can act on: one `ScrapeError` per failure.

The scraper hands every failure here: transport exceptions (`Diagnosis.classify`, which may
look at the server again: its certificate for a verification failure, its TLS alert behind a
bare disconnect), HTTP statuses, undecodable pages and unusable selections. Runs only on
failures, never on the hot path. Each message names the URL, what went wrong and the fix.

The two probes run over the scraper's own TCP/TLS code (`oneshot.exchange_once`, a connection
outside the pool): one TLS stack for scraping and for diagnosing it.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import tempfile
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from autoscalerd.config.model import SeriesSelector
from autoscalerd.scrape.errors import ScrapeError, ScrapeErrorKind
from autoscalerd.scrape.http11 import (
    BodyBudgetExhausted,
    ClientClosed,
    HandshakeDisconnected,
    HTTPProtocolError,
    ServerDisconnected,
    TruncatedResponse,
)
from autoscalerd.scrape.oneshot import exchange_once
from autoscalerd.scrape.page import PageKey
from autoscalerd.scrape.parser import (
    SelectResult,
    SelectStatus,
    looks_like_exposition,
    select_value,
)
from autoscalerd.scrape.tls import build_ssl_context

__all__ = [
    "CERT_PROBE_CACHE_SECONDS",
    "Diagnosis",
    "budget_error",
    "closed_error",
    "exc_text",
    "not_utf8_error",
    "selection_error",
    "status_error",
    "timeout_error",
    "too_large_error",
]

CERT_PROBE_CACHE_SECONDS = 300.0
"""A failing server's certificate description is fetched at most once per this period."""


def closed_error(key: PageKey) -> ScrapeError:
    return ScrapeError(
        ScrapeErrorKind.CONNECT_FAILED, key.url, "scrape failed: the scraper is closed"
    )


def timeout_error(key: PageKey, timeout: float) -> ScrapeError:
    return ScrapeError(
        ScrapeErrorKind.TIMEOUT,
        key.url,
        f"no complete answer within {timeout:g}s. The pod may be overloaded or the port "
        "firewalled; raise scrapeTimeout (it must stay below scrapeInterval) or check the "
        "pod.",
    )


def too_large_error(key: PageKey, limit: int, detail: str) -> ScrapeError:
    return ScrapeError(
        ScrapeErrorKind.TOO_LARGE,
        key.url,
        f"response larger than the body size limit of {limit} bytes ({detail}); "
        "reading stopped. Point the source at a smaller endpoint or raise "
        "DaemonConfig bodySizeLimit.",
    )


def budget_error(key: PageKey, exc: BodyBudgetExhausted) -> ScrapeError:
    mib = 1024 * 1024
    return ScrapeError(
        ScrapeErrorKind.TOO_LARGE,
        key.url,
        f"response body reached {exc.size / mib:.1f} MiB and the daemon-wide budget for "
        f"large bodies (DaemonConfig bodyBudget, {exc.total / mib:g} MiB) is in use by other "
        f"scrapes ({exc.in_use / mib:.1f} MiB reserved); reading stopped, the pod counts as "
        "missing this tick. Fix: find the pods sending huge bodies (their scrapes fail as "
        "too_large too) and fix or exclude them, lower DaemonConfig bodySizeLimit, or raise "
        "DaemonConfig bodyBudget (with the Deployment's memory limit).",
    )


@dataclass(kw_only=True, slots=True)
class _CertNote:
    text: str
    at: float


class Diagnosis:
    """Classifies transport failures; keeps the certificate descriptions it fetched."""

    def __init__(self) -> None:
        self._cert_notes: dict[tuple[str, int, str | None], _CertNote] = {}

    async def classify(
        self, exc: BaseException, key: PageKey, timeout: float, *, connecting: bool
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
                f"malformed HTTP response ({exc_text(exc)}); the page is not used. Fix: {fix}.",
            )
        if isinstance(exc, TruncatedResponse):
            return ScrapeError(
                ScrapeErrorKind.TRUNCATED,
                url,
                f"the response was cut short ({exc_text(exc)}); a partial page is never "
                "read, so this pod counts as missing. Fix: check the pod's logs for a crash or "
                "a proxy that drops connections; an exporter should send a Content-Length or "
                "a chunked body, and end TLS with close_notify.",
            )
        if isinstance(exc, HandshakeDisconnected):
            return ScrapeError(
                ScrapeErrorKind.TLS_HANDSHAKE,
                url,
                f"TLS handshake failed: {exc_text(exc)}. Fix: the port accepted the connection "
                "but the server hung up during the handshake: check that it serves TLS, and "
                "that it accepts this client's TLS version, server name (tlsConfig.serverName) "
                "and client certificate (tlsConfig.certFile); its logs say which.",
            )
        if isinstance(exc, ClientClosed):
            return ScrapeError(
                ScrapeErrorKind.CONNECT_FAILED, url, f"scrape failed: {exc_text(exc)}"
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
                f"the server closed or reset the connection ({exc_text(exc)}).{hint} Check "
                "the pod's logs; the scrape is retried next round.",
            )
        return ScrapeError(ScrapeErrorKind.CONNECT_FAILED, url, f"scrape failed: {exc_text(exc)}")

    async def _tls_verify_error(
        self, err: ssl.SSLCertVerificationError, key: PageKey, timeout: float
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

    async def _probe_tls_alert(self, key: PageKey, timeout: float) -> str | None:
        """Find the TLS failure behind a bare disconnect on an HTTPS port, if there is one.

        With TLS 1.3 a server that wants a client certificate (mTLS) rejects it *after* the
        client finished its handshake, so the client sees only a bare disconnect. Replaying
        one request over a raw TLS stream surfaces the server's alert (Go servers send
        "certificate required"); a server that just hangs up (Python's asyncio) is recognised
        by a TLS 1.2 handshake being refused where 1.3 "succeeded". Runs only on failures.
        """
        budget = max(0.2, timeout / 2)
        probe = b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"

        async def exchange(context: ssl.SSLContext) -> BaseException | None:
            """The exchange's error (None: the server answered something)."""
            async with asyncio.timeout(budget):
                request, _ = await exchange_once(
                    host=key.host,
                    port=key.port,
                    ssl_context=context,
                    server_hostname=key.tls.server_name or None,
                    head=probe,
                )
            assert request.parser is not None
            return None if request.parser.received else request.error

        try:
            error = await exchange(build_ssl_context(key.tls))
        except Exception:  # the probe's deadline, an unusable context: no finding
            return None
        if isinstance(error, ssl.SSLError):
            return str(error)
        # Only a hang-up without a byte of answer after the handshake goes on to the check.
        if not isinstance(error, ServerDisconnected) or key.tls.cert_file:
            return None
        legacy = build_ssl_context(key.tls)
        legacy.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            error = await exchange(legacy)
        except Exception:
            return None
        if isinstance(error, ssl.SSLError | ConnectionResetError):
            # A hang-up in the middle of the handshake is a ConnectionResetError
            # (HandshakeDisconnected).
            return (
                "the server hangs up after the handshake and drops a TLS 1.2 handshake "
                f"({exc_text(error)}): it most likely requires a client certificate"
            )
        return None

    async def _describe_cert(self, key: PageKey, timeout: float) -> str:
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
                _, der = await exchange_once(
                    host=key.host,
                    port=key.port,
                    ssl_context=probe,
                    server_hostname=key.tls.server_name or None,
                    head=None,
                )
            if der:
                text = _describe_der(der)
        except Exception:  # a description is best effort; the verify error stands on its own
            pass
        self._cert_notes[cache_key] = _CertNote(text=text, at=now)
        return text


def not_utf8_error(key: PageKey, body: bytes, exc: UnicodeDecodeError) -> ScrapeError:
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


def status_error(key: PageKey, status: int, reason: str | None, preview: bytes) -> ScrapeError:
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


def _tls_handshake_error(exc: BaseException | str, key: PageKey) -> ScrapeError:
    text = exc if isinstance(exc, str) else exc_text(exc)
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


def exc_text(exc: BaseException) -> str:
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


def selection_error(
    key: PageKey, text: str, selector: SeriesSelector, result: SelectResult
) -> ScrapeError:
    """Why a page gave no value for `selector` (`result` is not ok)."""
    if result.status is SelectStatus.ABSENT:
        if not looks_like_exposition(text):
            start = text.lstrip()[:80].replace("\n", " ")
            return ScrapeError(
                ScrapeErrorKind.PARSE,
                key.url,
                f"the response is not Prometheus or OpenMetrics text (it starts with "
                f"{start!r}). Check the metric source's port and path.",
            )
        if selector.matchers and select_value(text, SeriesSelector(metric=selector.metric)).ok:
            return ScrapeError(
                ScrapeErrorKind.ABSENT,
                key.url,
                f"metric {selector.metric} is present but no series matches {selector}. Check "
                "the label matchers of targetMetric against the page.",
            )
        return ScrapeError(
            ScrapeErrorKind.ABSENT,
            key.url,
            f"no series named {selector.metric} on the page (names match exactly). Check "
            "targetMetric's spelling, and that this pod exports it.",
        )
    if result.status is SelectStatus.INVALID_VALUE:
        return ScrapeError(
            ScrapeErrorKind.INVALID_VALUE,
            key.url,
            f"line {result.line}: {result.reason}. The pod has no usable value for "
            f"{selector} yet; it counts as missing.",
        )
    if result.status is SelectStatus.TRUNCATED:
        return ScrapeError(
            ScrapeErrorKind.TRUNCATED,
            key.url,
            f"line {result.line}: {result.reason}; the pod counts as missing. Fix: look for a "
            "proxy, sidecar or exporter that ends responses early (a restart, a timeout, a "
            "buffer limit).",
        )
    if result.status is SelectStatus.DUPLICATE:
        return ScrapeError(
            ScrapeErrorKind.PARSE,
            key.url,
            f"line {result.line}: {result.reason}; the pod counts as missing. Fix: correct the exporter, "
            "or narrow targetMetric's label matchers to one of the series.",
        )
    return ScrapeError(
        ScrapeErrorKind.PARSE,
        key.url,
        f"line {result.line}: {result.reason}. The exporter produced invalid exposition "
        "text; fix the exporter.",
    )
