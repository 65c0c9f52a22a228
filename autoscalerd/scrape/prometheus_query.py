"""`metricSourceType: prometheus`: one instant query per tick against a Prometheus-compatible API.

```python
q = PrometheusQuery()
outcome = await q.query(source, daemon=daemon_config, timeout=0.8)   # a ScrapeOutcome
await q.close()
```

`GET {endpoint}/api/v1/query?query=…` (POST as a form when the query is long), through aiohttp
with the scrape timeout as the whole call's deadline (Prometheus also gets it as `timeout=`),
the body abandoned past `DaemonConfig.body_size_limit_bytes`, TLS verified by default with the
source's `tlsConfig` (the same `TLSContextCache` rules as pod scrapes) and its `authorization`
token file re-read when it changes. The answer must be exactly one number (a scalar, or a
vector of one sample): anything else is missing data with a reason that says what came back
(`query_value`, pure). Never raises for a query: the failure is the outcome's `error`.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
import time
from typing import Any

import aiohttp

from autoscalerd.config.model import DaemonConfig, MetricSource
from autoscalerd.scrape.client import USER_AGENT, ScrapeOutcome, ScrapeTarget
from autoscalerd.scrape.errors import ScrapeError, ScrapeErrorKind
from autoscalerd.scrape.tls import TLSContextCache, TokenCache

__all__ = ["PrometheusQuery", "query_url", "query_value"]

POST_ABOVE_CHARS = 1500
"""Queries longer than this go in a POST form (URLs past ~2 KB are refused by some proxies)."""


def query_url(source: MetricSource) -> str:
    return f"{source.endpoint}/api/v1/query"


def query_value(doc: Any) -> float | str:
    """The one number of a `/api/v1/query` answer, or why there is none (a message)."""
    if not isinstance(doc, dict):
        return "the answer is not a JSON object; is endpoint a Prometheus-compatible API?"
    if doc.get("status") != "success":
        kind = doc.get("errorType") or "error"
        return f"the query failed ({kind}): {str(doc.get('error') or '')[:300]}"
    data = doc.get("data")
    if not isinstance(data, dict):
        return "the answer has no data object; is endpoint a Prometheus-compatible API?"
    rtype = data.get("resultType")
    result = data.get("result")
    if rtype == "scalar":
        return _number(result)
    if rtype == "vector" and isinstance(result, list):
        if not result:
            return (
                "the query returned an empty vector (no series matched): missing data, not 0. "
                "Check the metric and label names in Prometheus' UI; wrap the query in "
                "sum(...) or add `or vector(0)` only if no series really means 0"
            )
        if len(result) > 1:
            shown = ", ".join(_labels(r) for r in result[:3])
            more = f" and {len(result) - 3} more" if len(result) > 3 else ""
            return (
                f"the query returned {len(result)} series ({shown}{more}), not one number; "
                "aggregate them, e.g. sum(...) or max(...)"
            )
        item = result[0]
        return _number(item.get("value") if isinstance(item, dict) else None)
    if rtype == "matrix":
        return "the query returned a range vector (matrix); drop the [range] or wrap it in a function such as rate()"
    return f"the query returned a {rtype!r}, not a number; make it yield a scalar or one sample"


def _number(pair: Any) -> float | str:
    if not (isinstance(pair, list) and len(pair) == 2):
        return "the answer's sample is not a [time, value] pair"
    try:
        value = float(pair[1])
    except (TypeError, ValueError):
        return f"the sample value {pair[1]!r} is not a number"
    if not math.isfinite(value):
        return f"the query yielded {pair[1]} (not a finite number); guard divisions by zero"
    return value


def _labels(item: Any) -> str:
    metric = item.get("metric") if isinstance(item, dict) else None
    if not isinstance(metric, dict) or not metric:
        return "{}"
    name = metric.get("__name__", "")
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{inner}}}"


class PrometheusQuery:
    """Runs instant queries; one aiohttp session, created on first use."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._tls = TLSContextCache()
        self._tokens = TokenCache()
        self.requests = 0

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def query(
        self, source: MetricSource, *, daemon: DaemonConfig, timeout: float
    ) -> ScrapeOutcome:
        """Run `source.query` at `source.endpoint`; a failure is the outcome's error."""
        url = query_url(source)
        target = ScrapeTarget(pod="prometheus", ip=source.endpoint, source=source)
        started = time.monotonic()
        try:
            value = await self._query(source, daemon, url, timeout)
        except ScrapeError as exc:
            return ScrapeOutcome(
                target=target, value=None, error=exc, duration_seconds=time.monotonic() - started
            )
        return ScrapeOutcome(
            target=target,
            value=value,
            error=None,
            duration_seconds=time.monotonic() - started,
            matched=1,
        )

    async def _query(
        self, source: MetricSource, daemon: DaemonConfig, url: str, timeout: float
    ) -> float:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        auth = daemon.authorization_for(source)
        if auth is not None:
            headers["Authorization"] = self._tokens.header(auth, url=url)
        ssl_arg: ssl.SSLContext | bool = False
        server_name: str | None = None
        if source.protocol == "https":
            tls = source.tls.merged_over(daemon.tls)
            ssl_arg = self._tls.get(tls, url=url)
            server_name = tls.server_name  # verify (and send as SNI) this name instead
        extra: dict[str, Any] = {"headers": headers, "ssl": ssl_arg}
        if server_name:
            extra["server_hostname"] = server_name
        params = {"query": source.query, "timeout": f"{max(timeout, 0.001):.3f}"}
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=False)
        self.requests += 1
        limit = daemon.body_size_limit_bytes
        try:
            async with asyncio.timeout(timeout):
                if len(source.query) > POST_ABOVE_CHARS:
                    request = self._session.post(url, data=params, **extra)
                else:
                    request = self._session.get(url, params=params, **extra)
                async with request as resp:
                    body = await _read_limited(resp, limit, url)
                    status = resp.status
        except TimeoutError:
            raise ScrapeError(
                ScrapeErrorKind.TIMEOUT,
                url,
                f"no complete answer within {timeout:g}s. Make the query cheaper (recording "
                "rules) or raise scrapeTimeout (it must stay below scrapeInterval).",
            ) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise ScrapeError(
                ScrapeErrorKind.TLS_VERIFY,
                url,
                f"the server's certificate was not verified: {exc.certificate_error}. Set "
                "tlsConfig.caFile to the CA that signed it (and tlsConfig.serverName if it "
                "is issued for another name).",
            ) from exc
        except aiohttp.ClientSSLError as exc:
            raise ScrapeError(
                ScrapeErrorKind.TLS_HANDSHAKE,
                url,
                f"TLS handshake failed: {exc}. Check that endpoint serves https and accepts "
                "this client's certificate (tlsConfig.certFile).",
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            refused = isinstance(exc.os_error, ConnectionRefusedError)
            raise ScrapeError(
                ScrapeErrorKind.CONNECT_REFUSED if refused else ScrapeErrorKind.CONNECT_FAILED,
                url,
                f"cannot connect: {exc.os_error}. Check endpoint (host and port) and that "
                "Prometheus runs and is reachable from the daemon.",
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ScrapeError(
                ScrapeErrorKind.CONNECTION_RESET,
                url,
                f"the request failed: {exc.__class__.__name__}: {exc}. Check Prometheus' logs.",
            ) from exc
        return _answer(url, status, body)


async def _read_limited(resp: aiohttp.ClientResponse, limit: int, url: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise ScrapeError(
                ScrapeErrorKind.TOO_LARGE,
                url,
                f"answer larger than the body size limit of {limit} bytes; reading stopped. "
                "Make the query return one number (aggregate it).",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(url: str, status: int, body: bytes) -> float:
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if status in (401, 403):
        kind = ScrapeErrorKind.UNAUTHORIZED if status == 401 else ScrapeErrorKind.FORBIDDEN
        raise ScrapeError(
            kind,
            url,
            f"HTTP {status}: the API refused the request. Set authorization.credentialsFile "
            "to a token it accepts (and the rights to query).",
        )
    if doc is None:
        preview = body[:200].decode("utf-8", "replace")
        raise ScrapeError(
            ScrapeErrorKind.HTTP_STATUS if status != 200 else ScrapeErrorKind.PARSE,
            url,
            f"HTTP {status}, not a JSON answer ({preview!r}); is endpoint the base URL of a "
            "Prometheus-compatible API (https://prometheus:9090)?",
        )
    result = query_value(doc)
    if isinstance(result, str):
        kind = ScrapeErrorKind.ABSENT if status == 200 else ScrapeErrorKind.HTTP_STATUS
        if status == 200 and "not a finite" in result:
            kind = ScrapeErrorKind.INVALID_VALUE
        raise ScrapeError(kind, url, f"HTTP {status}: {result}" if status != 200 else result)
    return result
