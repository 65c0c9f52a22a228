"""What the scraper fetches: a page's key (the URL and every setting that shapes the request)
and the fetched page. Shared by the scraper (scrape/client.py) and the failure diagnosis
(scrape/diagnosis.py)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import yarl

from autoscalerd.config.model import Authorization, TLSConfig
from autoscalerd.scrape.errors import ScrapeError

__all__ = ["Page", "PageKey", "parsed_url"]


@dataclass(frozen=True, kw_only=True, slots=True)
class PageKey:
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
        return parsed_url(self.url)


@functools.lru_cache(maxsize=65536)
def parsed_url(url: str) -> yarl.URL:
    return yarl.URL(url)


@dataclass(frozen=True, kw_only=True, slots=True)
class Page:
    """A fetched page: `text` (strict UTF-8) or `error`. `openmetrics`: the Content-Type
    says `application/openmetrics-text`, whose pages must end with `# EOF`."""

    text: str | None
    error: ScrapeError | None
    duration_seconds: float
    openmetrics: bool = False
