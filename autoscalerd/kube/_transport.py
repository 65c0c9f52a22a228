"""Every API call goes through here: an explicit timeout, raw JSON, and our own errors.

kubernetes_asyncio has no default request timeout (since v32), so each call gets an aiohttp
`ClientTimeout` *and* an outer `asyncio.timeout` as a belt. Calls use `_preload_content=False`
and parse the JSON body themselves: we never build the generated model objects (faster, and
no kubernetes_asyncio type can leak out), and non-2xx answers become `KubeError`s here.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import aiohttp
import structlog

from autoscalerd.kube.errors import (
    KubeError,
    KubeInvalid,
    KubeUnavailable,
    Op,
    error_for_status,
)

log = structlog.get_logger(__name__)

JSON = dict[str, Any]

_BELT_SECONDS = 1.0
"""The outer asyncio.timeout fires this long after aiohttp's own timeout should have."""
MIN_CALL_SECONDS = 0.05
"""A call with less time than this left before its deadline is not started."""


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After: 3` or an HTTP date → seconds from now (≥ 0); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def describe_network_error(exc: BaseException) -> str:
    """A short, useful description of a transport failure (never includes credentials)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate verification failed: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
        return f"TLS error: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {exc.os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"truncated response: {exc}"
    return f"{type(exc).__name__}: {exc}"


def error_from_response(op: Op, status: int, body: bytes, retry_after: str | None) -> KubeError:
    """Map a non-2xx answer (ideally a Kubernetes `Status` object) to a `KubeError`."""
    message = ""
    reason: str | None = None
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        message = str(doc.get("message") or "")
        reason = doc.get("reason") or None
    elif body:
        message = body[:200].decode("utf-8", "replace").strip()
    return error_for_status(
        op, status, message=message, reason=reason, retry_after=parse_retry_after(retry_after)
    )


class CallAuth(Protocol):
    """What the transport tells the credentials, and asks of them, around each call."""

    async def before_call(self) -> int:
        """Make the credentials fresh if due; return their generation (for `rejected`)."""
        ...

    def accepted(self) -> None:
        """The server answered without 401: the credentials work."""
        ...

    def rejected(self, generation: int) -> None:
        """The server answered 401 to credentials of `generation`."""
        ...


class _StaticAuth:
    async def before_call(self) -> int:
        return 0

    def accepted(self) -> None:
        pass

    def rejected(self, generation: int) -> None:
        pass


_NO_AUTH = _StaticAuth()


class Transport:
    """Holds the ApiClient and the typed API objects built from it, and makes bounded calls."""

    def __init__(
        self,
        api_client: Any,
        *,
        api_timeout: float,
        connect_timeout: float = 5.0,
        auth: CallAuth | None = None,
    ) -> None:
        from kubernetes_asyncio import client as k8s

        if api_timeout <= 0:
            raise ValueError("api_timeout must be > 0")
        self.api_client = api_client
        self.api_timeout = api_timeout
        self.connect_timeout = min(connect_timeout, api_timeout)
        self._auth: CallAuth = auth if auth is not None else _NO_AUTH
        self.core: Any = k8s.CoreV1Api(api_client)
        self.apps: Any = k8s.AppsV1Api(api_client)
        self.custom: Any = k8s.CustomObjectsApi(api_client)
        self.coordination: Any = k8s.CoordinationV1Api(api_client)

    def budget(self, op: Op, timeout: float | None = None, deadline: float | None = None) -> float:
        """Seconds this call may take: the smallest of api_timeout, `timeout` and the deadline."""
        t = self.api_timeout if timeout is None else min(timeout, self.api_timeout)
        if deadline is not None:
            left = deadline - asyncio.get_running_loop().time()
            if left < MIN_CALL_SECONDS:
                raise KubeUnavailable(f"{op}: deadline exceeded before the call", op=op)
            t = min(t, left)
        return t

    def _client_timeout(self, total: float | None, sock_read: float | None = None) -> Any:
        return aiohttp.ClientTimeout(
            total=total,
            connect=self.connect_timeout if total is None else min(self.connect_timeout, total),
            sock_connect=self.connect_timeout,
            sock_read=sock_read,
        )

    async def call(
        self,
        op: Op,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        timeout: float | None = None,
        deadline: float | None = None,
        **kwargs: Any,
    ) -> JSON:
        """Call a generated API method and return the decoded JSON body (`{}` when empty)."""
        t = self.budget(op, timeout, deadline)
        resp: Any = None
        try:
            async with self._mapped(op, t):
                generation = await self._auth.before_call()
                resp = await fn(
                    *args,
                    _preload_content=False,
                    _request_timeout=self._client_timeout(t),
                    **kwargs,
                )
                body: bytes = await resp.read()
                status = int(resp.status)
                retry_after = resp.headers.get("Retry-After")
        finally:
            if resp is not None:
                resp.release()
        self._check(op, status, body, retry_after, generation)
        if not body:
            return {}
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise KubeInvalid(f"{op}: answer is not JSON", op=op, status=status) from exc
        if not isinstance(doc, dict):
            raise KubeInvalid(f"{op}: answer is not a JSON object", op=op, status=status)
        return doc

    @asynccontextmanager
    async def _mapped(self, op: Op, t: float) -> AsyncIterator[None]:
        """Bound the block by `t` (plus the belt) and turn every failure into a `KubeError`:
        the one place where transport exceptions are mapped."""
        try:
            async with asyncio.timeout(t + _BELT_SECONDS):
                yield
        except KubeError:
            raise
        except TimeoutError:
            raise KubeUnavailable(f"{op}: timed out after {t:g}s", op=op) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise KubeUnavailable(f"{op}: {describe_network_error(exc)}", op=op) from exc
        except Exception as exc:
            raise self._unexpected(op, exc) from exc

    def _check(
        self, op: Op, status: int, body: bytes, retry_after: str | None, generation: int
    ) -> None:
        """Raise the `KubeError` of a non-2xx answer; tell the credentials whether the server
        accepted them (a 401 rejects them; any other answer means they were accepted)."""
        if status == 401:
            self._auth.rejected(generation)
        else:
            self._auth.accepted()
        if not 200 <= status < 300:
            raise error_from_response(op, status, body, retry_after)

    async def get_path(self, op: Op, path: str, *, timeout: float | None = None) -> JSON:
        """GET an arbitrary API path (discovery, /version)."""

        def do_get(**kwargs: Any) -> Awaitable[Any]:
            result: Awaitable[Any] = self.api_client.call_api(
                path,
                "GET",
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                **kwargs,
            )
            return result

        return await self.call(op, do_get, timeout=timeout)

    @asynccontextmanager
    async def stream(
        self,
        op: Op,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        read_timeout: float,
        **kwargs: Any,
    ) -> AsyncIterator[AsyncIterator[JSON]]:
        """Open a watch: yields an iterator of decoded watch events (one JSON object per line).

        Connecting and the response headers are bounded by api_timeout; then each read is
        bounded by `read_timeout` (aiohttp `sock_read`), so a half-open connection that
        never sends another byte ends with `KubeUnavailable` instead of hanging forever.
        """
        t = self.budget(op)
        resp: Any = None
        try:
            async with self._mapped(op, t):
                generation = await self._auth.before_call()
                resp = await fn(
                    *args,
                    _preload_content=False,
                    _request_timeout=self._client_timeout(None, sock_read=read_timeout),
                    **kwargs,
                )
                status = int(resp.status)
                body = b"" if 200 <= status < 300 else await resp.read()
            self._check(op, status, body, resp.headers.get("Retry-After"), generation)
            yield self._lines(op, resp, read_timeout)
        finally:
            if resp is not None:
                resp.close()

    async def _lines(self, op: Op, resp: Any, read_timeout: float) -> AsyncIterator[JSON]:
        content = resp.content
        while True:
            try:
                async with asyncio.timeout(read_timeout + _BELT_SECONDS):
                    line: bytes = await content.readline()
            except TimeoutError:
                raise KubeUnavailable(
                    f"{op}: no data for {read_timeout:g}s, dropping the watch", op=op
                ) from None
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                raise KubeUnavailable(f"{op}: {describe_network_error(exc)}", op=op) from exc
            if not line:
                return
            line = line.strip()
            if not line:
                continue
            try:
                doc = json.loads(line)
            except ValueError as exc:
                raise KubeUnavailable(f"{op}: malformed watch line", op=op) from exc
            if isinstance(doc, dict):
                yield doc

    @staticmethod
    def _unexpected(op: Op, exc: Exception) -> KubeError:
        # kubernetes_asyncio raises ApiException (with .status) or ApiValueError/ApiTypeError
        # (client-side validation), or ConfigException from a token refresh hook.
        status = getattr(exc, "status", None)
        if isinstance(status, int) and status > 0:
            return error_for_status(op, status, message=str(getattr(exc, "reason", "") or ""))
        name = type(exc).__name__
        if name == "ConfigException":
            return KubeUnavailable(f"{op}: credentials: {exc}", op=op)
        return KubeInvalid(f"{op}: {name}: {exc}", op=op)
