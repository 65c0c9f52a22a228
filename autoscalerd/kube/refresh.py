"""Credentials that rotate: when to refresh them, and the two sources that rotate.

`RefreshSchedule` is pure (time is an argument): it says when the next refresh is due.

- An exec plugin's credential is refreshed shortly before its own `expirationTimestamp`: a
  margin of `REFRESH_MARGIN_FRACTION` of its lifetime, at most `REFRESH_MARGIN_MAX` (so an
  8-second token is renewed after ~6.4 s, a 15-minute EKS token 3 minutes early, a 1-hour
  token 5 minutes early). A credential without an expiry is renewed every
  `EXEC_REFRESH_WITHOUT_EXPIRY`.
- A token file is re-read when its inode, size or mtime changes (checked before every call:
  one `stat`), and at least every `TOKEN_FILE_RECHECK` (as client-go does).
- After a 401, the credential is refreshed once, at once. When the fresh credential is
  rejected too, the next forced refresh waits `backoff(n)` after the previous one (1 s, 2 s,
  4 s… at most `BACKOFF_MAX`), until a call is accepted again.
- A refresh that fails (plugin exits non-zero, times out, prints garbage; the file is
  missing) is retried after `backoff(failures)`: a broken plugin cannot spin.

`ExecSource` and `TokenFileSource` do the I/O: run the plugin (kubernetes_asyncio's
`ExecProvider`), read the file. `credentials.Credentials` runs them, one at a time.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "BACKOFF_MAX",
    "EXEC_REFRESH_WITHOUT_EXPIRY",
    "REFRESH_MARGIN_FRACTION",
    "REFRESH_MARGIN_MAX",
    "TOKEN_FILE_RECHECK",
    "CredentialSource",
    "ExecSource",
    "Fetched",
    "RefreshSchedule",
    "TokenFileSource",
    "backoff",
    "refresh_margin",
]

REFRESH_MARGIN_FRACTION = 0.2
"""Refresh this fraction of a credential's lifetime before it expires…"""
REFRESH_MARGIN_MAX = 300.0
"""…but never more than this many seconds early (kubernetes_asyncio's fixed skew)."""
MIN_REFRESH_INTERVAL = 1.0
"""Never refresh on schedule more often than this (a 0.5 s token is not re-run per call)."""
EXEC_REFRESH_WITHOUT_EXPIRY = 600.0
"""Re-run an exec plugin that reports no `expirationTimestamp` at least this often."""
TOKEN_FILE_RECHECK = 60.0
"""Re-read a token file at least this often even when it looks unchanged (client-go: 1 min)."""
BACKOFF_BASE = 1.0
BACKOFF_MAX = 60.0
"""Bound on the wait between failed refreshes, and between forced refreshes after 401s."""
TOKEN_FILE_MAX_BYTES = 64 * 1024
"""A token file larger than this is refused (a JWT is ~1-2 KiB)."""


def refresh_margin(lifetime: float) -> float:
    """Seconds before expiry to refresh a credential that lives `lifetime` seconds."""
    return min(max(lifetime, 0.0) * REFRESH_MARGIN_FRACTION, REFRESH_MARGIN_MAX)


def backoff(attempt: int) -> float:
    """Wait before retry `attempt` (1-based): 1, 2, 4… seconds, at most `BACKOFF_MAX`; 0 for 0."""
    if attempt <= 0:
        return 0.0
    return float(min(BACKOFF_MAX, BACKOFF_BASE * 2.0 ** (attempt - 1)))


@dataclass(slots=True)
class RefreshSchedule:
    """When the next refresh of one credential source is due (times are event-loop seconds)."""

    fallback_interval: float
    """Refresh at least this often (no expiry known: exec without one, or a token file)."""
    next_due: float = 0.0
    failures: int = 0
    """Failed refreshes in a row."""
    rejections: int = 0
    """Credential generations rejected (401) in a row, since a call was last accepted."""
    last_attempt: float | None = None

    def due(self, now: float) -> bool:
        return now >= self.next_due

    def succeeded(self, now: float, lifetime: float | None) -> None:
        """A refresh got a credential valid for `lifetime` seconds (None: no expiry given).

        A credential that is already expired counts as a failure (backs off): the plugin or
        the clock is wrong, and re-running it at once would only spin."""
        self.last_attempt = now
        if lifetime is not None and lifetime <= 0:
            self.failed(now)
            return
        self.failures = 0
        if lifetime is None:
            wait = self.fallback_interval
        else:
            wait = min(lifetime - refresh_margin(lifetime), self.fallback_interval)
        self.next_due = now + max(wait, MIN_REFRESH_INTERVAL)

    def failed(self, now: float) -> None:
        self.last_attempt = now
        self.failures += 1
        self.next_due = now + backoff(self.failures)

    def rejected(self, now: float) -> None:
        """The current credential got a 401: refresh once, at once; if the previous
        credential was rejected as well, no sooner than the backoff after the last attempt."""
        self.rejections += 1
        earliest = now if self.last_attempt is None else self.last_attempt
        earliest += backoff(self.rejections - 1)
        self.next_due = min(self.next_due, max(now, earliest))

    def accepted(self) -> None:
        self.rejections = 0


@dataclass(frozen=True, slots=True)
class Fetched:
    """One credential from a source. Never logged: `repr` hides the secrets."""

    token: str | None = None
    client_cert: bytes | None = None
    """PEM certificate (chain) and key, when the source returns a client certificate."""
    client_key: bytes | None = None
    lifetime: float | None = None
    """Seconds until it expires (None: no expiry given)."""

    def __repr__(self) -> str:
        kinds = [k for k, v in (("token", self.token), ("cert", self.client_cert)) if v]
        return f"Fetched({'+'.join(kinds) or 'nothing'}, lifetime={self.lifetime})"


class CredentialSource(Protocol):
    kind: str
    """`exec plugin` or `token file`, for logs."""
    fallback_interval: float

    def changed(self) -> bool:
        """Cheap check before each call: has the source visibly changed since the last fetch?"""
        ...

    async def fetch(self) -> Fetched:
        """Get the current credential; raises on failure (the caller bounds the time)."""
        ...


class ExecSource:
    """A kubeconfig `user.exec` credential plugin (client.authentication.k8s.io)."""

    kind = "exec plugin"
    fallback_interval = EXEC_REFRESH_WITHOUT_EXPIRY

    def __init__(self, exec_config: Any) -> None:
        from kubernetes_asyncio.config.exec_provider import ExecProvider

        self._provider = ExecProvider(exec_config)
        self.command = str(exec_config["command"])

    def changed(self) -> bool:
        return False

    async def fetch(self) -> Fetched:
        from kubernetes_asyncio.config.dateutil import parse_rfc3339

        status = await self._provider.run()
        if not isinstance(status, dict):
            raise ValueError("exec plugin output: status is not an object")
        token = status.get("token") or None
        cert = status.get("clientCertificateData") or None
        key = status.get("clientKeyData") or None
        if token is None and (cert is None or key is None):
            raise ValueError(
                "exec plugin output has neither status.token nor both "
                "status.clientCertificateData and status.clientKeyData"
            )
        lifetime = None
        expiry = status.get("expirationTimestamp")
        if expiry:
            now = datetime.datetime.now(datetime.UTC)
            lifetime = (parse_rfc3339(str(expiry)) - now).total_seconds()
        return Fetched(
            token=str(token) if token else None,
            client_cert=str(cert).encode() if cert and key else None,
            client_key=str(key).encode() if cert and key else None,
            lifetime=lifetime,
        )


class TokenFileSource:
    """A bearer token read from a file (kubeconfig `tokenFile`, the service-account token)."""

    kind = "token file"
    fallback_interval = TOKEN_FILE_RECHECK

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = self._stamp()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def changed(self) -> bool:
        return self._stamp() != self._seen

    async def fetch(self) -> Fetched:
        # remember what was tried even when reading fails, so a missing file is retried on
        # the backoff schedule and not before every call
        self._seen = self._stamp()
        with open(self.path, "rb") as fh:
            data = fh.read(TOKEN_FILE_MAX_BYTES + 1)
        if len(data) > TOKEN_FILE_MAX_BYTES:
            raise ValueError(f"{self.path}: larger than {TOKEN_FILE_MAX_BYTES} bytes")
        token = data.decode("utf-8", "replace").strip()
        if not token:
            raise ValueError(f"{self.path}: empty")
        return Fetched(token=token)
