"""Leader election on a `coordination.k8s.io/v1` Lease, with client-go semantics.

- Acquire/renew is a read then a `replace` carrying the read resourceVersion (optimistic
  concurrency: a 409 means someone else wrote first).
- Expiry of another holder is judged by *locally observed* time since the lease record last
  changed (not by comparing our clock with `renewTime`), so clock skew between hosts does
  not matter.
- Timestamps are written as RFC 3339 MicroTime in UTC; `leaseTransitions` is incremented
  whenever the holder changes.
- Every call is bounded: while leading, by the renew deadline measured from the start of
  the last successful renew (`leader_deadline`); a leader that cannot renew by then steps
  down, before any follower can consider the lease expired (renew deadline < lease
  duration). Writes made on behalf of the leader should pass `leader_deadline` as their
  deadline so a deposed leader cannot keep writing.
- `stop()` releases the lease (empty holder, `leaseDurationSeconds: 1`) so a follower takes
  over at its next retry instead of waiting a whole lease duration.
- After losing leadership the elector keeps trying to re-acquire (it does not exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import secrets
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import structlog

from autoscalerd.config.model import LeaderElection
from autoscalerd.kube._transport import JSON, Transport
from autoscalerd.kube.errors import KubeConflict, KubeError, KubeNotFound, Op

log = structlog.get_logger(__name__)

__all__ = ["LeaderElector", "default_identity", "micro_time"]

JITTER_FACTOR = 1.2


def default_identity() -> str:
    """`$POD_NAME` (downward API) in a pod, else `hostname_<random>` (unique per process)."""
    pod = os.environ.get("POD_NAME")
    if pod:
        return pod
    return f"{socket.gethostname()}_{secrets.token_hex(4)}"


def micro_time(when: datetime | None = None) -> str:
    """RFC 3339 MicroTime in UTC: `2026-01-02T03:04:05.123456Z`."""
    when = when or datetime.now(UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def validate(settings: LeaderElection) -> None:
    """client-go's rules: lease duration > renew deadline > 1.2 × retry period > 0."""
    ld = settings.lease_duration_seconds
    rd = settings.renew_deadline_seconds
    rp = settings.retry_period_seconds
    if rp <= 0 or rd <= 0 or ld <= 0:
        raise ValueError("leader election durations must be > 0")
    if not ld > rd:
        raise ValueError("leaseDuration must be greater than renewDeadline")
    if not rd > JITTER_FACTOR * rp:
        raise ValueError(f"renewDeadline must be greater than {JITTER_FACTOR} × retryPeriod")


class _Outcome(Enum):
    OURS = "ours"
    HELD = "held"
    """Another holder's lease is still valid."""
    FAILED = "failed"
    """Conflict or error: try again."""


class LeaderElector:
    """Take part in leader election; `is_leader` says whether this process may write.

    Use `async with elector:` or `start()` / `await stop()`. Watch `leading` (an
    `asyncio.Event` set while leading), `wait_leading()`, or register `on_change(cb)`
    callbacks (called with True/False in the event loop, exceptions logged).
    """

    def __init__(
        self,
        transport: Transport,
        settings: LeaderElection,
        *,
        namespace: str,
        identity: str | None = None,
    ) -> None:
        validate(settings)
        self._t = transport
        self.settings = settings
        self.namespace = namespace
        self.name = settings.lease_name
        self.identity = identity or default_identity()
        self.leading = asyncio.Event()
        self._callbacks: list[Callable[[bool], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._lease: JSON | None = None
        """Our last successfully written lease object (for renew and release)."""
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None
        self.observed_holder: str | None = None
        """Holder seen in the lease at the last read (None before the first)."""
        self.last_error: str | None = None

    # -- public --------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        deadline = self.leader_deadline
        return deadline is not None and asyncio.get_running_loop().time() < deadline

    @property
    def leader_deadline(self) -> float | None:
        """Event-loop time until which our leadership is certain (None when not leading)."""
        if not self.leading.is_set() or self._renewed_at is None:
            return None
        return self._renewed_at + self.settings.renew_deadline_seconds

    def on_change(self, callback: Callable[[bool], None]) -> None:
        self._callbacks.append(callback)

    async def wait_leading(self, timeout: float | None = None) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self.leading.wait()
        except TimeoutError:
            return False
        return True

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"leader-election {self.name}")

    async def stop(self, *, release: bool = True) -> None:
        """Stop taking part; when leading, step down and (by default) release the lease."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        was_leader = self.leading.is_set()
        self._set_leading(False)
        if was_leader and release:
            await self._release()

    async def __aenter__(self) -> LeaderElector:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- loop ----------------------------------------------------------------------------

    def _set_leading(self, leading: bool) -> None:
        if leading == self.leading.is_set():
            return
        if leading:
            self.leading.set()
        else:
            self.leading.clear()
            self._renewed_at = None
        log.info(
            "leadership acquired" if leading else "leadership lost",
            lease=f"{self.namespace}/{self.name}",
            identity=self.identity,
        )
        for cb in list(self._callbacks):
            try:
                cb(leading)
            except Exception:
                log.exception("leader election callback failed")

    def _retry_delay(self) -> float:
        rp = self.settings.retry_period_seconds
        return rp + random.uniform(0, rp * (JITTER_FACTOR - 1))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        while True:
            # Follower: try to acquire every retry period (jittered).
            started = loop.time()
            outcome = await self._attempt(started + s.renew_deadline_seconds)
            if outcome is _Outcome.OURS:
                self._renewed_at = started
                self._set_leading(True)
                await self._renew_loop()
                continue
            await asyncio.sleep(self._retry_delay())

    async def _renew_loop(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        while True:
            await asyncio.sleep(s.retry_period_seconds)
            while True:
                deadline = self.leader_deadline
                if deadline is None or loop.time() >= deadline:
                    self._set_leading(False)
                    return
                started = loop.time()
                outcome = await self._attempt(deadline)
                if outcome is _Outcome.OURS:
                    self._renewed_at = started
                    break
                if outcome is _Outcome.HELD:
                    self._set_leading(False)  # someone else holds it now
                    return
                pause = min(s.retry_period_seconds / 2, max(0.0, deadline - loop.time()))
                await asyncio.sleep(pause)

    async def _attempt(self, deadline: float) -> _Outcome:
        try:
            return await self._try_acquire_or_renew(deadline)
        except KubeError as exc:
            if self.last_error != str(exc):
                log.warning("leader election attempt failed", error=str(exc))
            self.last_error = str(exc)
            return _Outcome.FAILED

    def _op(self, verb: str) -> Op:
        return Op(verb, "leases", "coordination.k8s.io", self.namespace, self.name)

    async def _try_acquire_or_renew(self, deadline: float) -> _Outcome:
        loop = asyncio.get_running_loop()
        s = self.settings
        duration = max(1, math.ceil(s.lease_duration_seconds))
        try:
            current = await self._t.call(
                self._op("get"),
                self._t.coordination.read_namespaced_lease,
                self.name,
                self.namespace,
                deadline=deadline,
            )
        except KubeNotFound:
            now = micro_time()
            body: JSON = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": duration,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0,
                },
            }
            try:
                created = await self._t.call(
                    self._op("create"),
                    self._t.coordination.create_namespaced_lease,
                    self.namespace,
                    body,
                    deadline=deadline,
                )
            except KubeConflict:
                return _Outcome.FAILED  # created by someone else just now
            self._remember(created)
            self._lease = created
            self.last_error = None
            return _Outcome.OURS

        spec = current.get("spec") or {}
        self._remember(current)
        holder = str(spec.get("holderIdentity") or "")
        held_for = spec.get("leaseDurationSeconds") or duration
        if holder and holder != self.identity and loop.time() < self._observed_at + float(held_for):
            self.last_error = None
            return _Outcome.HELD

        now = micro_time()
        ours = holder == self.identity
        transitions = int(spec.get("leaseTransitions") or 0)
        new_spec = dict(spec)
        new_spec.update(
            {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": duration,
                "renewTime": now,
                "acquireTime": spec.get("acquireTime") if ours and spec.get("acquireTime") else now,
                "leaseTransitions": transitions if ours else transitions + 1,
            }
        )
        body = dict(current)
        body["spec"] = new_spec
        try:
            written = await self._t.call(
                self._op("update"),
                self._t.coordination.replace_namespaced_lease,
                self.name,
                self.namespace,
                body,
                deadline=deadline,
            )
        except KubeConflict:
            return _Outcome.FAILED
        if not ours:
            log.info(
                "lease taken over",
                lease=f"{self.namespace}/{self.name}",
                previous=holder or None,
                transitions=new_spec["leaseTransitions"],
            )
        self._remember(written)
        self._lease = written
        self.last_error = None
        return _Outcome.OURS

    def _remember(self, lease: JSON) -> None:
        spec = lease.get("spec") or {}
        record = (
            spec.get("holderIdentity"),
            spec.get("leaseDurationSeconds"),
            spec.get("acquireTime"),
            spec.get("renewTime"),
            spec.get("leaseTransitions"),
        )
        self.observed_holder = str(spec.get("holderIdentity") or "") or None
        if record != self._observed:
            self._observed = record
            self._observed_at = asyncio.get_running_loop().time()

    async def _release(self) -> None:
        """Give the lease up (holder "", 1 s duration) so a follower takes it at once.

        A renewal cancelled by the shutdown may still have reached the server, leaving our
        copy one resourceVersion behind: on 409 the lease is read again and, if it is still
        ours, released from the fresh copy (once)."""
        lease = self._lease
        self._lease = None
        timeout = min(self._t.api_timeout, self.settings.renew_deadline_seconds)
        for attempt in range(2):
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            try:
                await self._t.call(
                    self._op("update"),
                    self._t.coordination.replace_namespaced_lease,
                    self.name,
                    self.namespace,
                    _released(lease),
                    timeout=timeout,
                )
                log.info("lease released", lease=f"{self.namespace}/{self.name}")
                return
            except KubeConflict as exc:
                if attempt:
                    log.warning("could not release lease", error=str(exc))
                    return
                try:  # who holds it now? (our own late renewal, or someone else)
                    lease = await self._t.call(
                        self._op("get"),
                        self._t.coordination.read_namespaced_lease,
                        self.name,
                        self.namespace,
                        timeout=timeout,
                    )
                except KubeError as read_exc:
                    log.warning("could not release lease", error=str(read_exc))
                    return
            except KubeError as exc:
                log.warning("could not release lease", error=str(exc))
                return


def _released(lease: JSON) -> JSON:
    """`lease` given up: no holder, a 1 s duration, renewed and acquired now."""
    now = micro_time()
    spec = dict(lease.get("spec") or {})
    spec.update(
        {"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": now, "acquireTime": now}
    )
    return {**lease, "spec": spec}
