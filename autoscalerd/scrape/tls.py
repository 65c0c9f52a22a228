"""TLS contexts and bearer tokens for scrapes: built once per distinct setting, reused.

An `ssl.SSLContext` is expensive to build (the system store alone is ~100 ms of parsing) and
the scraper's HTTP client keys its connection pool on the context object, so a context per
request would also mean a new TLS handshake per request. `TLSContextCache` builds one context per distinct
effective `TLSConfig` and hands out the same object for as long as the files behind it
(caFile, certFile, keyFile) are unchanged; when one of them changes (certificate rotation), the
next call builds a fresh context, and the client opens new connections for it.

`TokenCache` reads `authorization.credentialsFile` and re-reads it only when the file's
(inode, size, mtime) changes: bound service-account tokens rotate about hourly and the kubelet
swaps the file atomically. Token contents are never logged.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

from autoscalerd.config.model import Authorization, MetricSource, TLSConfig
from autoscalerd.scrape.errors import ScrapeError, ScrapeErrorKind

__all__ = [
    "TLSContextCache",
    "TokenCache",
    "build_ssl_context",
    "insecure_skip_verify_warning",
]

_MIN_VERSIONS = {
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
"""`minVersion` values; unset means TLS 1.2 (Go's and Prometheus's default)."""

_FileStamp = tuple[int, int, int, int] | None
"""(device, inode, size, mtime_ns) of a file, or None when it does not exist."""


def _stamp(path: str | None) -> _FileStamp:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def build_ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    """Build a client context for an *effective* (already merged) TLS configuration.

    Secure by default: system trust store, hostname checking, TLS >= 1.2. `insecure_skip_verify`
    disables both certificate and name checks (the explicit bypass). `strict_x509=False` clears
    `VERIFY_X509_STRICT`, which Python 3.13 turns on and which rejects many older cluster CAs
    (missing key usage, non-critical basic constraints); `True` sets it on any Python.
    Raises `ValueError` with a readable message for unusable settings (bad path, bad key,
    unknown minVersion).
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    min_version = tls.min_version or "TLS12"
    if min_version not in _MIN_VERSIONS:
        raise ValueError(f"tlsConfig.minVersion {min_version!r} is not one of TLS12, TLS13")
    ctx.minimum_version = _MIN_VERSIONS[min_version]
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif tls.ca_file:
        try:
            ctx.load_verify_locations(cafile=tls.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"tlsConfig.caFile {tls.ca_file}: cannot load: {exc}") from exc
    if tls.strict_x509 is False:
        ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
    elif tls.strict_x509 is True:
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    if tls.cert_file or tls.key_file:
        if not tls.cert_file:
            raise ValueError("tlsConfig.keyFile is set without tlsConfig.certFile")
        try:
            ctx.load_cert_chain(certfile=tls.cert_file, keyfile=tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"tlsConfig.certFile {tls.cert_file} / keyFile {tls.key_file}: cannot load: {exc}"
            ) from exc
    return ctx


@dataclass(frozen=True, kw_only=True, slots=True)
class _CachedContext:
    context: ssl.SSLContext
    stamps: tuple[_FileStamp, ...]


class TLSContextCache:
    """One `SSLContext` per distinct effective `TLSConfig`, rebuilt when its files change."""

    def __init__(self) -> None:
        self._cache: dict[TLSConfig, _CachedContext] = {}

    def get(self, tls: TLSConfig, *, url: str) -> ssl.SSLContext:
        """Return the context for `tls`; raise `ScrapeError(TLS_CONFIG)` if it cannot be built.

        Costs three `stat` calls when cached; call it once per distinct setting per round.
        """
        stamps = (_stamp(tls.ca_file), _stamp(tls.cert_file), _stamp(tls.key_file))
        cached = self._cache.get(tls)
        if cached is not None and cached.stamps == stamps:
            return cached.context
        try:
            context = build_ssl_context(tls)
        except ValueError as exc:
            raise ScrapeError(
                ScrapeErrorKind.TLS_CONFIG,
                url,
                f"unusable TLS settings: {exc}. Fix the file path or its permissions.",
            ) from exc
        self._cache[tls] = _CachedContext(context=context, stamps=stamps)
        return context

    def __len__(self) -> int:
        return len(self._cache)


@dataclass(frozen=True, kw_only=True, slots=True)
class _CachedToken:
    token: str
    stamp: _FileStamp


class TokenCache:
    """`Authorization` header values read from credential files, re-read when a file changes."""

    def __init__(self) -> None:
        self._cache: dict[str, _CachedToken] = {}
        self.reads = 0
        """How many times a file was actually read (for tests and debugging)."""

    def header(self, auth: Authorization, *, url: str) -> str:
        """Return `"<type> <token>"`; raise `ScrapeError(AUTH_CONFIG)` if the file is unusable."""
        path = auth.credentials_file
        stamp = _stamp(path)
        cached = self._cache.get(path)
        if cached is not None and stamp is not None and cached.stamp == stamp:
            return f"{auth.type} {cached.token}" if auth.type else cached.token
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ScrapeError(
                ScrapeErrorKind.AUTH_CONFIG,
                url,
                f"cannot read authorization.credentialsFile {path}: {exc.__class__.__name__}: "
                f"{getattr(exc, 'strerror', None) or exc}. Mount the token (projected service "
                "account token or Secret) at that path, readable by the daemon's user.",
            ) from exc
        if not token:
            raise ScrapeError(
                ScrapeErrorKind.AUTH_CONFIG,
                url,
                f"authorization.credentialsFile {path} is empty. Point it at a file holding a "
                "bearer token.",
            )
        self.reads += 1
        self._cache[path] = _CachedToken(token=token, stamp=stamp)
        return f"{auth.type} {token}" if auth.type else token


def insecure_skip_verify_warning(source: MetricSource, tls: TLSConfig | None = None) -> str | None:
    """Return the warning to log once for a source that skips TLS verification, else None.

    `tls` is the effective setting (the source's merged over the DaemonConfig's); by default
    the source's own. Plain-HTTP sources never warn. The daemon calls this once per source at
    start and on reload; `Scraper` also logs it itself the first time it scrapes such a source.
    """
    effective = tls if tls is not None else source.tls
    if source.protocol != "https" or not effective.insecure_skip_verify:
        return None
    where = f" ({source.where})" if source.where is not None else ""
    return (
        f"metric source {source.target_metric} on "
        f"{source.endpoint or f'port {source.port}'}{where} scrapes over TLS "
        "without verifying the server's certificate (tlsConfig.insecureSkipVerify: true): "
        "anyone on the path can forge the metrics. Prefer tlsConfig.caFile with the CA that "
        "signed the pods' certificates."
    )
