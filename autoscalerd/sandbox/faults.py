"""Fault injection: API request faults, watch stream faults and pod endpoint faults."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .sandbox import Sandbox

PodFaultMode = Literal["slow", "error", "garbage", "reset", "refuse"]


@dataclass(eq=False)
class ApiFault:
    """Answer the next ``count`` API requests whose method matches ``method`` ("*" for
    any) and whose ``path?query`` matches the regular expression ``path`` (searched) with
    a Status of ``status`` after ``delay`` seconds. ``status=None`` only delays, then the
    request is served normally. ``count=None`` means every matching request."""

    method: str = "*"
    path: str = ".*"
    status: int | None = 500
    count: int | None = 1
    retry_after: float | None = None
    delay: float = 0.0
    message: str | None = None
    hits: int = 0
    _re: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._re = re.compile(self.path)

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.hits >= self.count

    def matches(self, method: str, target: str) -> bool:
        if self.exhausted:
            return False
        if self.method != "*" and self.method.upper() != method.upper():
            return False
        return self._re.search(target) is not None


@dataclass(eq=False)
class PodFault:
    """A pod endpoint misbehaving: ``slow`` answers after ``delay`` seconds; ``error``
    answers HTTP ``status``; ``garbage`` answers 200 with a body that is not Prometheus
    text; ``reset`` resets the connection (TCP RST) once the request arrived; ``refuse``
    closes the listening socket (connection refused). ``delay`` also applies before
    ``error``/``garbage``/``reset``."""

    namespace: str
    target: str  # a pod name, or a workload name when ``workload`` is true
    mode: PodFaultMode
    workload: bool = False
    delay: float = 0.0
    status: int = 500
    hits: int = 0


class Faults:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox
        self.api_faults: list[ApiFault] = []
        self.pod_faults: list[PodFault] = []

    # -- API requests ------------------------------------------------------------------
    def add(
        self,
        method: str = "*",
        path: str = ".*",
        *,
        status: int | None = 500,
        count: int | None = 1,
        retry_after: float | None = None,
        delay: float = 0.0,
        message: str | None = None,
    ) -> ApiFault:
        """Fail (or delay) the next ``count`` matching API requests; see ApiFault.
        A 429 or 503 without ``retry_after`` carries ``Retry-After: 1``."""
        if status in (429, 503) and retry_after is None:
            retry_after = 1
        fault = ApiFault(method, path, status, count, retry_after, delay, message)
        self.api_faults.append(fault)
        return fault

    def match_api(self, method: str, target: str) -> ApiFault | None:
        for fault in self.api_faults:
            if fault.matches(method, target):
                fault.hits += 1
                return fault
        return None

    def remove(self, fault: ApiFault | PodFault) -> None:
        if isinstance(fault, ApiFault):
            if fault in self.api_faults:
                self.api_faults.remove(fault)
        elif fault in self.pod_faults:
            self.pod_faults.remove(fault)
            self._sb._pod_faults_changed()

    def clear(self) -> None:
        """Remove every API and pod fault (refused endpoints listen again)."""
        self.api_faults.clear()
        if self.pod_faults:
            self.pod_faults.clear()
            self._sb._pod_faults_changed()

    # -- watches -----------------------------------------------------------------------
    def drop_watches(self, abrupt: bool = False) -> int:
        """End every open watch stream now: cleanly (end of the chunked body, as on a
        server-side timeout) or ``abrupt`` (connection reset). Returns how many."""
        return self._sb._api.signal_watchers("abort" if abrupt else "close")

    def expire_watches(self) -> int:
        """Compact the history: every resourceVersion handed out so far becomes too old.
        Open watch streams receive an ERROR event with a 410 Gone Status and end; a watch
        or continue token from before answers 410 too, so clients must re-list."""
        self._sb.store.compact()
        return self._sb._api.signal_watchers("gone")

    # -- pod endpoints -----------------------------------------------------------------
    def pod(
        self,
        namespace: str,
        pod: str,
        mode: PodFaultMode,
        *,
        delay: float = 0.0,
        status: int = 500,
    ) -> PodFault:
        """Make one pod's metrics endpoint misbehave (see PodFault)."""
        fault = PodFault(namespace, pod, mode, False, delay, status)
        self.pod_faults.append(fault)
        self._sb._pod_faults_changed()
        return fault

    def workload(
        self,
        namespace: str,
        name: str,
        mode: PodFaultMode,
        *,
        delay: float = 0.0,
        status: int = 500,
    ) -> PodFault:
        """Make every pod of a workload misbehave, including pods created later."""
        fault = PodFault(namespace, name, mode, True, delay, status)
        self.pod_faults.append(fault)
        self._sb._pod_faults_changed()
        return fault

    def for_pod(self, namespace: str, pod: str, workload: str) -> PodFault | None:
        for fault in reversed(self.pod_faults):
            if fault.namespace != namespace:
                continue
            if (fault.workload and fault.target == workload) or (
                not fault.workload and fault.target == pod
            ):
                return fault
        return None
