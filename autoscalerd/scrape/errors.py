"""Scrape failures: one exception type with a `kind`, and messages that name the fix.

Every message has the same shape so an operator can act on one log line:
`<url>: <what went wrong>. <how to fix it>`. A failure is never turned into a value: the scraper
returns it next to `value=None`, and the daemon counts that pod as missing.
"""

from __future__ import annotations

from enum import StrEnum

from autoscalerd.errors import AutoscalerdError

__all__ = ["ScrapeError", "ScrapeErrorKind"]


class ScrapeErrorKind(StrEnum):
    """What failed; stable strings, usable as a metric label (`result=` of scrapes_total)."""

    CONNECT_REFUSED = "connect_refused"
    CONNECT_FAILED = "connect_failed"
    CONNECTION_RESET = "connection_reset"
    TIMEOUT = "timeout"
    TLS_VERIFY = "tls_verify"
    TLS_HANDSHAKE = "tls_handshake"
    TLS_CONFIG = "tls_config"
    """The local TLS settings are unusable (missing caFile, key does not match the cert…)."""
    AUTH_CONFIG = "auth_config"
    """The credentials file cannot be read."""
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    HTTP_STATUS = "http_status"
    MALFORMED_RESPONSE = "malformed_response"
    """The server's bytes are not a valid HTTP/1.1 response (or the page is not UTF-8)."""
    TRUNCATED = "truncated"
    """The response started but its end is missing or unproven; the page is not used."""
    TOO_LARGE = "too_large"
    PARSE = "parse"
    ABSENT = "absent"
    INVALID_VALUE = "invalid_value"


class ScrapeError(AutoscalerdError):
    """A scrape that produced no value; `kind` classifies it, `str()` explains it and the fix."""

    def __init__(self, kind: ScrapeErrorKind, url: str, message: str) -> None:
        super().__init__(f"{url}: {message}")
        self.kind = kind
        self.url = url
        self.message = message

    def __repr__(self) -> str:
        return f"ScrapeError({self.kind.value!r}, {str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScrapeError) and (self.kind, self.url, self.message) == (
            other.kind,
            other.url,
            other.message,
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.url, self.message))
