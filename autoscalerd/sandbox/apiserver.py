"""The Kubernetes-API-compatible HTTPS server of the sandbox (aiohttp)."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import json
import math
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from .podautoscalers import CUSTOM_RESOURCES, PODAUTOSCALERS, keep_status, status_subresource
from .selectors import (
    SelectorError,
    parse_field_selector,
    parse_label_selector,
    selector_to_string,
)
from .store import Gone, ResourceType, Store, StoredEvent, Watcher, now_rfc3339

if TYPE_CHECKING:
    from .faults import Faults

_TRUE = ("1", "t", "T", "true", "True", "TRUE")  # Go strconv.ParseBool
_ALL = ("create", "delete", "get", "list", "patch", "update", "watch")
_WORKLOAD = ("get", "list", "watch", "patch", "update")

PODS = ResourceType("", "v1", "pods", "Pod", short_names=("po",))
CORE_EVENTS = ResourceType("", "v1", "events", "Event", verbs=_ALL, short_names=("ev",))
DEPLOYMENTS = ResourceType(
    "apps", "v1", "deployments", "Deployment", verbs=_WORKLOAD, subresources=("scale",)
)
STATEFULSETS = ResourceType(
    "apps", "v1", "statefulsets", "StatefulSet", verbs=_WORKLOAD, subresources=("scale",)
)
REPLICASETS = ResourceType(
    "apps", "v1", "replicasets", "ReplicaSet", verbs=_WORKLOAD, subresources=("scale",)
)
LEASES = ResourceType("coordination.k8s.io", "v1", "leases", "Lease", verbs=_ALL)
EVENTS_V1 = ResourceType("events.k8s.io", "v1", "events", "Event", verbs=_ALL)
WIDGETS = ResourceType(
    "example.com", "v1", "widgets", "Widget", verbs=_WORKLOAD, subresources=("scale",)
)
RESOURCES = [PODS, CORE_EVENTS, DEPLOYMENTS, STATEFULSETS, REPLICASETS, LEASES, EVENTS_V1, WIDGETS]
RESOURCES.append(PODAUTOSCALERS)  # issue 14: sandbox/podautoscalers.py
_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
WORKLOAD_TYPES = (DEPLOYMENTS, STATEFULSETS, REPLICASETS, WIDGETS)

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Gone",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_MESSAGES = {
    401: "Unauthorized",
    403: "forbidden",
    429: "Too many requests, please try again later.",
    500: "Internal error occurred: injected fault",
    503: "the server is currently unable to handle the request",
    504: "the server was unable to return a response in the time allotted",
}


def status_body(
    code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "Unknown"),
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


class ApiError(Exception):
    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.body = status_body(code, message, reason, details)
        self.headers = headers or {}

    def response(self) -> web.Response:
        return web.json_response(self.body, status=self.code, headers=self.headers)


def _details(rtype: ResourceType, name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "group": rtype.group, "kind": rtype.plural, **extra}


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{rtype.qualified} "{name}" not found', details=_details(rtype, name))


def conflict(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {rtype.qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        details=_details(rtype, name),
    )


@dataclass
class RequestRecord:
    """One request the API server received (kept for the last 20,000)."""

    time: float  # time.time()
    method: str
    path: str
    query: str
    status: int  # 0 while a watch is still streaming


@dataclass
class WriteRecord:
    """One write request the API server received (also those answered by a fault)."""

    time: float  # time.time()
    method: str
    path: str
    query: str
    content_type: str
    body: Any  # parsed JSON, or the raw text when it did not parse
    status: int


WorkloadHook = Callable[[ResourceType, str, str], None]


class ApiServer:
    def __init__(
        self,
        store: Store,
        faults: Faults,
        token: str,
        on_workload_spec: WorkloadHook,
        watch_timeout_seconds: float = 1800.0,
        bookmark_interval_seconds: float = 5.0,
    ) -> None:
        self.store = store
        self.faults = faults
        self.tokens: dict[str, float | None] = {token: None}  # token -> expiry (monotonic)
        self.token_signing_key: bytes | None = None
        """When set, tokens `exp.<unix time>.<hex HMAC-SHA256 of "exp.<unix time>">` are
        accepted until that time: short-lived tokens an exec plugin can mint by itself."""
        self.revoked_client_certs: set[str] = set()
        """Serial numbers (hex, as `getpeercert()` gives them) of client certificates that
        answer 401 although the API CA signed them."""
        self.on_workload_spec = on_workload_spec
        self.watch_timeout_seconds = watch_timeout_seconds
        self.bookmark_interval_seconds = bookmark_interval_seconds
        self.writes: list[WriteRecord] = []
        self.requests = 0  # every request received, a count
        self.request_log: deque[RequestRecord] = deque(maxlen=20000)
        self.port = 0
        self.host = "127.0.0.1"
        self._runner: web.AppRunner | None = None
        self._closing = False
        self.aggregated: list[Any] = []
        """Aggregated API groups served beside the store (issue 12: the metrics APIs): each has
        `handles(group)`, `groups()`, `resources(group, version)` and `handle(request, group,
        version, tail)`."""

    # -- lifecycle ---------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=8 * 1024 * 1024)
        r = app.router
        slash = "{_slash:/?}"  # the generated clients ask for "/version/", "/apis/"...
        r.add_get("/version" + slash, self._version)
        for p in ("/healthz", "/livez", "/readyz"):
            r.add_get(p, self._healthz)
        r.add_get("/api" + slash, self._api_versions)
        r.add_get("/apis" + slash, self._api_groups)
        r.add_get("/api/v1" + slash, self._resource_list_core)
        r.add_get("/apis/{group}/{version}" + slash, self._resource_list)
        r.add_route("*", "/api/v1/{tail:.+}", self._dispatch_core)
        r.add_route("*", "/apis/{group}/{version}/{tail:.+}", self._dispatch)
        return app

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext) -> None:
        self.host = host
        self._runner = web.AppRunner(
            self.app(),
            access_log=None,
            shutdown_timeout=1.0,
            handle_signals=False,
            handler_cancellation=True,  # like the real API server: a gone client cancels
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await site.start()
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._closing = True
        self.signal_watchers("close")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def signal_watchers(self, kind: str) -> int:
        watchers = list(self.store.watchers)
        for w in watchers:
            w.queue.put_nowait((kind, None))
        return len(watchers)

    # -- middleware: auth, faults, write log -------------------------------------------
    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests += 1
        record = RequestRecord(time.time(), request.method, request.path, request.query_string, 0)
        self.request_log.append(record)
        public = request.path in ("/healthz", "/livez", "/readyz", "/version", "/version/")
        if not public and not self._authenticated(request):
            return ApiError(401, "Unauthorized").response()
        is_write = request.method in ("POST", "PUT", "PATCH", "DELETE")
        raw = await request.read() if is_write else b""
        target = request.path + (f"?{request.query_string}" if request.query_string else "")
        fault = self.faults.match_api(request.method, target)
        resp: web.StreamResponse
        try:
            if fault is not None and fault.delay:
                await asyncio.sleep(fault.delay)
            if fault is not None and fault.status is not None:
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(math.ceil(fault.retry_after))
                details = (
                    {"retryAfterSeconds": math.ceil(fault.retry_after)}
                    if fault.retry_after is not None
                    else None
                )
                msg = fault.message or _MESSAGES.get(fault.status, "injected fault")
                raise ApiError(fault.status, msg, details=details, headers=headers)
            resp = await handler(request)
        except ApiError as err:
            resp = err.response()
        record.status = resp.status
        if is_write:
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            self.writes.append(
                WriteRecord(
                    time.time(),
                    request.method,
                    request.path,
                    request.query_string,
                    request.headers.get("Content-Type", ""),
                    body,
                    resp.status,
                )
            )
        return resp

    def _authenticated(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization")
        if auth is not None:
            if not auth.startswith("Bearer "):
                return False
            if self._signed_token_valid(auth[7:]):
                return True
            expiry = self.tokens.get(auth[7:], 0.0)
            return expiry is None or time.monotonic() < expiry
        transport = request.transport
        # a client certificate was verified against the API CA by the TLS handshake
        peer = transport.get_extra_info("peercert") if transport is not None else None
        if not peer:
            return False
        return peer.get("serialNumber") not in self.revoked_client_certs

    def _signed_token_valid(self, token: str) -> bool:
        if self.token_signing_key is None or not token.startswith("exp."):
            return False
        payload, _, mac = token.rpartition(".")
        expected = hmac.new(self.token_signing_key, payload.encode(), hashlib.sha256).hexdigest()
        try:
            expires = float(payload[4:])
        except ValueError:
            return False
        return hmac.compare_digest(mac, expected) and time.time() < expires

    def revoke_token(self, token: str) -> None:
        """`token` answers 401 from now on (until `restore_token`)."""
        self.tokens[token] = 0.0

    def restore_token(self, token: str) -> None:
        """`token` is accepted again, without expiry."""
        self.tokens[token] = None

    # -- discovery ---------------------------------------------------------------------
    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "major": "1",
                "minor": "31",
                "gitVersion": "v1.31.0-autoscalerd-sandbox",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean",
                "buildDate": "2024-08-13T00:00:00Z",
                "goVersion": "go1.22.5",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _api_versions(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                ],
            }
        )

    async def _api_groups(self, request: web.Request) -> web.Response:
        groups = sorted({(r.group, r.version) for r in RESOURCES if r.group})
        items = []
        for g, v in groups:
            gv = {"groupVersion": f"{g}/{v}", "version": v}
            items.append({"name": g, "versions": [gv], "preferredVersion": gv})
        for extra in self.aggregated:
            items.extend(extra.groups())
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": items})

    def _resources_of(self, group: str, version: str) -> dict[str, Any]:
        resources = []
        for r in RESOURCES:
            if (r.group, r.version) != (group, version):
                continue
            resources.append(
                {
                    "name": r.plural,
                    "singularName": r.kind.lower(),
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": list(r.verbs),
                    "shortNames": list(r.short_names),
                }
            )
            for sub in r.subresources:
                if sub == "status":  # issue 14: a custom resource's status subresource
                    verbs = ["get", "patch", "update"]
                    resources.append(
                        {"name": f"{r.plural}/status", "singularName": "", "kind": r.kind,
                         "namespaced": r.namespaced, "verbs": verbs}
                    )  # fmt: skip
                    continue
                resources.append(
                    {
                        "name": f"{r.plural}/{sub}",
                        "singularName": "",
                        "namespaced": r.namespaced,
                        "group": "autoscaling",
                        "version": "v1",
                        "kind": "Scale",
                        "verbs": ["get", "patch", "update"],
                    }
                )
        if not resources:
            raise ApiError(404, "the server could not find the requested resource")
        gv = f"{group}/{version}" if group else version
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }

    async def _resource_list_core(self, request: web.Request) -> web.Response:
        return web.json_response(self._resources_of("", "v1"))

    async def _resource_list(self, request: web.Request) -> web.Response:
        m = request.match_info
        for extra in self.aggregated:
            if extra.handles(m["group"]):
                found = extra.resources(m["group"], m["version"])
                if found is None:
                    raise ApiError(404, "the server could not find the requested resource")
                return web.json_response(found)
        return web.json_response(self._resources_of(m["group"], m["version"]))

    # -- routing -----------------------------------------------------------------------
    async def _dispatch_core(self, request: web.Request) -> web.StreamResponse:
        return await self._route(request, "", "v1", request.match_info["tail"])

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        for extra in self.aggregated:
            if extra.handles(m["group"]):
                response: web.StreamResponse = await extra.handle(
                    request, m["group"], m["version"], m["tail"]
                )
                return response
        return await self._route(request, m["group"], m["version"], m["tail"])

    async def _route(
        self, request: web.Request, group: str, version: str, tail: str
    ) -> web.StreamResponse:
        parts = [p for p in tail.split("/") if p]
        namespace: str | None = None
        if parts and parts[0] == "namespaces" and len(parts) >= 2:
            namespace = parts[1]
            parts = parts[2:]
            if not parts and group == "" and request.method == "GET":
                return web.json_response(self._namespace(namespace))
        if not parts or len(parts) > 3:
            raise ApiError(404, "the server could not find the requested resource")
        rtype = _BY_PATH.get((group, version, parts[0]))
        if rtype is None:
            raise ApiError(404, "the server could not find the requested resource")
        method = request.method
        if len(parts) == 1:
            if method == "GET":
                verb = "watch" if request.query.get("watch") in _TRUE else "list"
                self._allow(rtype, verb)
                if verb == "watch":
                    return await self._watch(request, rtype, namespace)
                return self._list(request, rtype, namespace)
            if method == "POST" and namespace is not None:
                self._allow(rtype, "create")
                return self._create(rtype, namespace, await self._json(request))
            raise self._method_not_allowed()
        if namespace is None:
            raise ApiError(404, "the server could not find the requested resource")
        name = parts[1]
        if len(parts) == 3 and parts[2] == "status" and "status" in rtype.subresources:
            return await status_subresource(self, request, rtype, namespace, name)
        if len(parts) == 3:
            if parts[2] != "scale" or "scale" not in rtype.subresources:
                raise ApiError(404, "the server could not find the requested resource")
            return await self._scale(request, rtype, namespace, name)
        if method == "GET":
            self._allow(rtype, "get")
            obj = self.store.get(rtype, namespace, name)
            if obj is None:
                raise not_found(rtype, name)
            return web.json_response(obj)
        if method == "PUT":
            self._allow(rtype, "update")
            return self._replace(rtype, namespace, name, await self._json(request))
        if method == "PATCH":
            self._allow(rtype, "patch")
            return await self._patch(request, rtype, namespace, name)
        if method == "DELETE":
            self._allow(rtype, "delete")
            return await self._delete(request, rtype, namespace, name)
        raise self._method_not_allowed()

    @staticmethod
    def _method_not_allowed() -> ApiError:
        return ApiError(405, "the server does not allow this method on the requested resource")

    def _allow(self, rtype: ResourceType, verb: str) -> None:
        if verb not in rtype.verbs:
            raise self._method_not_allowed()

    @staticmethod
    async def _json(request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except ValueError as exc:
            raise ApiError(400, f"the object provided is unrecognized: {exc}") from exc

    def _namespace(self, namespace: str) -> dict[str, Any]:
        return {
            "kind": "Namespace",
            "apiVersion": "v1",
            "metadata": {
                "name": namespace,
                "uid": "00000000-0000-0000-0000-" + f"{abs(hash(namespace)):012d}"[:12],
                "resourceVersion": "1",
                "creationTimestamp": "2024-01-01T00:00:00Z",
                "labels": {"kubernetes.io/metadata.name": namespace},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }

    # -- list and watch ----------------------------------------------------------------
    def _selectors(self, request: web.Request) -> tuple[Any, Any]:
        try:
            labels = parse_label_selector(request.query.get("labelSelector"))
            fields = parse_field_selector(request.query.get("fieldSelector"))
        except SelectorError as exc:
            raise ApiError(400, str(exc)) from exc
        return labels, fields

    def _list(
        self, request: web.Request, rtype: ResourceType, namespace: str | None
    ) -> web.Response:
        labels, fields = self._selectors(request)
        items = self.store.list(rtype, namespace, labels, fields)
        rv = self.store.rv
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        start = 0
        cont = request.query.get("continue")
        if cont:
            try:
                token = json.loads(base64.urlsafe_b64decode(cont.encode()))
                rv, start = int(token["rv"]), int(token["start"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ApiError(400, "continue key is not valid") from exc
            if rv < self.store.compacted_rv:
                raise ApiError(
                    410,
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter.",
                    reason="Expired",
                )
            meta["resourceVersion"] = str(rv)
        limit = request.query.get("limit")
        if limit and int(limit) > 0:
            end = start + int(limit)
            if end < len(items):
                token = {"rv": rv, "start": end}
                meta["continue"] = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
                meta["remainingItemCount"] = len(items) - end
            items = items[start:end]
        else:
            items = items[start:]
        # built-in list items carry no kind/apiVersion; CRs' do
        if rtype is not WIDGETS and rtype not in CUSTOM_RESOURCES:
            for item in items:
                item.pop("kind", None)
                item.pop("apiVersion", None)
        return web.json_response(
            {
                "kind": f"{rtype.kind}List",
                "apiVersion": rtype.api_version,
                "metadata": meta,
                "items": items,
            }
        )

    async def _watch(
        self, request: web.Request, rtype: ResourceType, namespace: str | None
    ) -> web.StreamResponse:
        labels, fields = self._selectors(request)
        q = request.query
        try:
            timeout = float(q.get("timeoutSeconds") or self.watch_timeout_seconds)
        except ValueError as exc:
            raise ApiError(400, "invalid timeoutSeconds") from exc
        bookmarks = q.get("allowWatchBookmarks") in _TRUE
        rv_param = q.get("resourceVersion") or ""
        watcher = Watcher(rtype, namespace, labels, fields)
        self.store.watchers.add(watcher)
        try:
            initial: list[tuple[str, dict[str, Any]]] = []
            backlog: list[StoredEvent] = []
            gone: Gone | None = None
            if rv_param in ("", "0"):
                initial = [
                    ("ADDED", obj) for obj in self.store.list(rtype, namespace, labels, fields)
                ]
                last_rv = self.store.rv
            else:
                try:
                    last_rv = int(rv_param)
                except ValueError as exc:
                    raise ApiError(400, f"invalid resource version: {rv_param}") from exc
                try:
                    backlog = self.store.events_since(rtype, last_rv)
                except Gone as exc:
                    gone = exc
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)

            async def send(ev_type: str, obj: dict[str, Any]) -> None:
                line = json.dumps({"type": ev_type, "object": obj}, separators=(",", ":"))
                await resp.write(line.encode() + b"\n")

            try:
                if gone is not None:
                    await send("ERROR", status_body(410, str(gone), "Expired"))
                    await resp.write_eof()
                    return resp
                for ev_type, obj in initial:
                    await send(ev_type, obj)
                for ev in backlog:
                    if ev.rv > last_rv and (t := watcher.translate(ev)):
                        await send(t, ev.obj)
                        last_rv = ev.rv
                loop = asyncio.get_running_loop()
                deadline = loop.time() + timeout
                bookmark_at = loop.time() + self.bookmark_interval_seconds
                while not self._closing:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break  # the client went away
                    wait = min(remaining, 0.5)
                    if bookmarks:
                        wait = min(wait, max(bookmark_at - loop.time(), 0.0))
                    try:
                        kind, payload = await asyncio.wait_for(watcher.queue.get(), wait)
                    except TimeoutError:
                        if bookmarks and loop.time() >= bookmark_at:
                            bookmark_at = loop.time() + self.bookmark_interval_seconds
                            meta = {"resourceVersion": str(self.store.rv)}
                            await send(
                                "BOOKMARK",
                                {
                                    "kind": rtype.kind,
                                    "apiVersion": rtype.api_version,
                                    "metadata": meta,
                                },
                            )
                        continue
                    if kind == "event":
                        ev = payload
                        if ev.rv > last_rv:
                            last_rv = ev.rv
                            if t := watcher.translate(ev):
                                await send(t, ev.obj)
                    elif kind == "gone":
                        msg = f"too old resource version: {last_rv} ({self.store.compacted_rv + 1})"
                        await send("ERROR", status_body(410, msg, "Expired"))
                        break
                    elif kind == "abort":
                        if request.transport is not None:
                            request.transport.abort()
                        return resp
                    else:  # close
                        break
                await resp.write_eof()
            except (ConnectionResetError, ConnectionError):
                pass
            return resp
        finally:
            self.store.watchers.discard(watcher)

    # -- create / replace / patch / delete ---------------------------------------------
    def _check_body(self, rtype: ResourceType, namespace: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "the object provided is unrecognized (must be a JSON object)")
        if body.get("kind") not in (None, rtype.kind) or body.get("apiVersion") not in (
            None,
            rtype.api_version,
        ):
            raise ApiError(
                400,
                f"the API version in the data ({body.get('apiVersion')}) does not match the "
                f"expected API version ({rtype.api_version})",
            )
        meta = body.setdefault("metadata", {})
        if meta.get("namespace") not in (None, "", namespace):
            raise ApiError(
                400,
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        meta["namespace"] = namespace
        return body

    def _create(self, rtype: ResourceType, namespace: str, body: Any) -> web.Response:
        body = self._check_body(rtype, namespace, body)
        meta = body["metadata"]
        if not meta.get("name") and not meta.get("generateName"):
            raise ApiError(
                422,
                f'{rtype.kind} "" is invalid: metadata.name: Required value: name or '
                "generateName is required",
            )
        if meta.get("name") and self.store.peek(rtype, namespace, meta["name"]) is not None:
            raise ApiError(
                409,
                f'{rtype.qualified} "{meta["name"]}" already exists',
                reason="AlreadyExists",
                details=_details(rtype, meta["name"]),
            )
        for k in ("resourceVersion", "uid", "creationTimestamp", "generation"):
            meta.pop(k, None)
        if "status" in rtype.subresources:
            keep_status(None, body)
        return web.json_response(self.store.create(rtype, body), status=201)

    def _check_rv(self, rtype: ResourceType, name: str, current: dict[str, Any], new: Any) -> None:
        rv = (new.get("metadata") or {}).get("resourceVersion") if isinstance(new, dict) else None
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise conflict(rtype, name)

    def _save(
        self, rtype: ResourceType, current: dict[str, Any], new: dict[str, Any]
    ) -> dict[str, Any]:
        """Store ``new`` (an edited ``current``) unless nothing changed; workloads keep
        their status (it has its own subresource) and get reconciled."""
        if rtype in WORKLOAD_TYPES:
            new["status"] = copy.deepcopy(current.get("status", {}))
            replicas = (new.get("spec") or {}).get("replicas", 1)
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise ApiError(
                    422,
                    f'{rtype.kind}.{rtype.group} "{current["metadata"]["name"]}" is invalid: '
                    f"spec.replicas: Invalid value: {json.dumps(replicas)}: must be greater "
                    "than or equal to 0",
                    details=_details(rtype, current["metadata"]["name"]),
                )
        if "status" in rtype.subresources:
            keep_status(current, new)
        new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        for k in ("uid", "creationTimestamp", "generation", "namespace", "name"):
            if k in current["metadata"]:
                new["metadata"][k] = current["metadata"][k]
        new["kind"], new["apiVersion"] = current["kind"], current["apiVersion"]
        if new == current:
            return current
        saved = self.store.replace(rtype, new)
        if rtype in WORKLOAD_TYPES and saved.get("spec") != current.get("spec"):
            meta = saved["metadata"]
            self.on_workload_spec(rtype, meta["namespace"], meta["name"])
            saved = self.store.get(rtype, meta["namespace"], meta["name"]) or saved
        return saved

    def _replace(self, rtype: ResourceType, namespace: str, name: str, body: Any) -> web.Response:
        body = self._check_body(rtype, namespace, body)
        if body["metadata"].get("name") != name:
            raise ApiError(
                400,
                "the name of the object does not match the name on the URL",
                details=_details(rtype, name),
            )
        current = self.store.get(rtype, namespace, name)
        if current is None:
            raise not_found(rtype, name)
        self._check_rv(rtype, name, current, body)
        return web.json_response(self._save(rtype, current, body))

    def _apply_patch(
        self,
        rtype: ResourceType,
        content_type: str,
        current: dict[str, Any],
        patch: Any,
        scale: bool,
    ) -> Any:
        accepted = [JSON_PATCH, MERGE, APPLY]
        if rtype.group not in ("example.com",) and rtype not in CUSTOM_RESOURCES:
            accepted.insert(2, STRATEGIC)
        ctype = content_type.split(";")[0].strip().lower()
        if ctype not in accepted or ctype == APPLY:  # server-side apply: not simulated
            supported = [t for t in accepted if t != APPLY]
            raise ApiError(
                415,
                "the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join(supported)}",
            )
        try:
            if ctype == JSON_PATCH:
                return json_patch(current, patch)
            if not isinstance(patch, dict):
                raise PatchError(
                    "json: cannot unmarshal array into Go value of type map[string]interface {}"
                )
            if ctype == MERGE:
                return merge_patch(current, patch)
            return strategic_merge_patch(current, patch)
        except PatchError as exc:
            raise ApiError(
                422 if ctype == JSON_PATCH and isinstance(patch, list) else 400, str(exc)
            ) from exc

    async def _patch(
        self, request: web.Request, rtype: ResourceType, namespace: str, name: str
    ) -> web.Response:
        current = self.store.get(rtype, namespace, name)
        patch = await self._json(request)
        if current is None:
            raise not_found(rtype, name)
        new = self._apply_patch(
            rtype, request.headers.get("Content-Type", ""), current, patch, False
        )
        if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
            raise ApiError(422, "the patch produced an invalid object")
        self._check_rv(rtype, name, current, new)
        return web.json_response(self._save(rtype, current, new))

    async def _delete(
        self, request: web.Request, rtype: ResourceType, namespace: str, name: str
    ) -> web.Response:
        current = self.store.peek(rtype, namespace, name)
        if current is None:
            raise not_found(rtype, name)
        raw = await request.read()
        if raw:
            try:
                opts = json.loads(raw)
            except ValueError as exc:
                raise ApiError(400, "invalid DeleteOptions") from exc
            pre = (opts or {}).get("preconditions") or {}
            meta = current["metadata"]
            if (
                pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]
            ) or (pre.get("uid") and pre["uid"] != meta["uid"]):
                raise ApiError(
                    409,
                    f'Operation cannot be fulfilled on {rtype.qualified} "{name}": '
                    "Precondition failed",
                    details=_details(rtype, name),
                )
        deleted = self.store.delete(rtype, namespace, name)
        assert deleted is not None
        return web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": _details(rtype, name, uid=deleted["metadata"]["uid"]),
            }
        )

    # -- scale subresource -------------------------------------------------------------
    @staticmethod
    def scale_of(rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        if rtype is WIDGETS:
            selector = status.get("selector", "")
        else:
            selector = selector_to_string(spec.get("selector"))
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": spec.get("replicas", 1)},
            "status": {"replicas": status.get("replicas", 0), "selector": selector},
        }

    async def _scale(
        self, request: web.Request, rtype: ResourceType, namespace: str, name: str
    ) -> web.Response:
        method = request.method
        if method not in ("GET", "PUT", "PATCH"):
            raise self._method_not_allowed()
        body = await self._json(request) if method != "GET" else None
        current = self.store.get(rtype, namespace, name)
        if current is None:
            raise not_found(rtype, name)
        scale = self.scale_of(rtype, current)
        if method == "GET":
            return web.json_response(scale)
        if method == "PUT":
            if not isinstance(body, dict):
                raise ApiError(400, "the object provided is unrecognized (must be a Scale)")
            if (body.get("metadata") or {}).get("name") not in (None, name):
                raise ApiError(400, "the name of the object does not match the name on the URL")
            new_scale = body
        else:
            new_scale = self._apply_patch(
                rtype, request.headers.get("Content-Type", ""), scale, body, True
            )
        if not isinstance(new_scale, dict):
            raise ApiError(400, "the object provided is unrecognized (must be a Scale)")
        self._check_rv(rtype, name, current, new_scale)
        replicas = (new_scale.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiError(
                422,
                f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                f"{json.dumps(replicas)}: must be greater than or equal to 0",
                details={"name": name, "group": "autoscaling", "kind": "Scale"},
            )
        new = copy.deepcopy(current)
        new.setdefault("spec", {})["replicas"] = replicas
        saved = self._save(rtype, current, new)
        return web.json_response(self.scale_of(rtype, saved))


def event_time() -> str:
    return now_rfc3339()
