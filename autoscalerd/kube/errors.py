"""Errors raised by `autoscalerd.kube`; no kubernetes_asyncio or aiohttp type escapes this package.

```
KubeError                    any failed API call; `.op` says what was attempted
├── KubeConfigError          credentials could not be loaded (bad kubeconfig, no service account)
├── KubeNotFound             404: the object (or its kind) does not exist
├── KubeConflict             409: resourceVersion changed under us (re-read and retry)
├── KubeForbidden            403: the identity lacks an RBAC rule; the message names it
├── KubeUnauthorized         401: the credentials were rejected (expired token?)
├── KubeTooManyRequests      429: throttled; `.retry_after` seconds when the server said so
├── KubeUnavailable          5xx, connection failure, TLS failure or timeout: worth retrying
└── KubeInvalid              400/422 and other 4xx: the request itself is wrong
```
"""

from __future__ import annotations

from dataclasses import dataclass

from autoscalerd.errors import AutoscalerdError

__all__ = [
    "KubeConfigError",
    "KubeConflict",
    "KubeError",
    "KubeForbidden",
    "KubeInvalid",
    "KubeNotFound",
    "KubeTooManyRequests",
    "KubeUnauthorized",
    "KubeUnavailable",
    "Op",
]


@dataclass(frozen=True, slots=True)
class Op:
    """One API operation, for messages and RBAC hints: `patch deployments/scale default/web`."""

    verb: str
    """RBAC verb: get, list, watch, create, update, patch."""
    resource: str
    """Plural resource with subresource: `deployments/scale`, `pods`, `leases`."""
    group: str = ""
    """API group (`apps`, `coordination.k8s.io`; `""` for the core group)."""
    namespace: str | None = None
    name: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.namespace and self.name:
            where = f" {self.namespace}/{self.name}"
        elif self.name:
            where = f" {self.name}"
        elif self.namespace:
            where = f" in namespace {self.namespace}"
        res = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {res}{where}"

    def rbac_hint(self) -> str:
        """The missing rule, as a person would add it to a Role."""
        scope = f"in namespace {self.namespace}" if self.namespace else "cluster-wide"
        group = self.group or '""'
        return (
            f"needs {self.verb} on {self.resource} {scope} "
            f"(rule: apiGroups [{group}], resources [{self.resource}], verbs [{self.verb}])"
        )


class KubeError(AutoscalerdError):
    """A Kubernetes API call failed. `str()` says what was attempted and why."""

    def __init__(
        self,
        message: str,
        *,
        op: Op | None = None,
        status: int | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.op = op
        self.status = status
        self.reason = reason
        """The `reason` of the Kubernetes Status (`NotFound`, `Conflict`…), when there was one."""


class KubeConfigError(KubeError):
    """No usable credentials: missing/invalid kubeconfig or service account files."""


class KubeNotFound(KubeError):
    pass


class KubeConflict(KubeError):
    pass


class KubeForbidden(KubeError):
    pass


class KubeUnauthorized(KubeError):
    pass


class KubeInvalid(KubeError):
    pass


class KubeTooManyRequests(KubeError):
    def __init__(
        self,
        message: str,
        *,
        op: Op | None = None,
        status: int | None = 429,
        reason: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, op=op, status=status, reason=reason)
        self.retry_after = retry_after
        """Seconds from the `Retry-After` header, or None when the server gave none."""


class KubeUnavailable(KubeError):
    """The API server could not be reached or answered 5xx or timed out: retrying may help."""


def error_for_status(
    op: Op,
    status: int,
    *,
    message: str = "",
    reason: str | None = None,
    retry_after: float | None = None,
) -> KubeError:
    """Build the right `KubeError` for an HTTP status and a Status message from the server."""
    detail = f": {message}" if message else ""
    if status == 404:
        return KubeNotFound(f"{op}: not found{detail}", op=op, status=status, reason=reason)
    if status == 409:
        return KubeConflict(f"{op}: conflict{detail}", op=op, status=status, reason=reason)
    if status == 403:
        return KubeForbidden(
            f"{op}: forbidden, {op.rbac_hint()}{detail}", op=op, status=status, reason=reason
        )
    if status == 401:
        return KubeUnauthorized(
            f"{op}: unauthorized (credentials rejected or expired){detail}",
            op=op,
            status=status,
            reason=reason,
        )
    if status == 429:
        after = f", retry after {retry_after:g}s" if retry_after is not None else ""
        return KubeTooManyRequests(
            f"{op}: too many requests{after}{detail}",
            op=op,
            status=status,
            reason=reason,
            retry_after=retry_after,
        )
    if status >= 500:
        return KubeUnavailable(
            f"{op}: server error {status}{detail}", op=op, status=status, reason=reason
        )
    return KubeInvalid(f"{op}: HTTP {status}{detail}", op=op, status=status, reason=reason)
