"""The daemon-wide budget for large response bodies: pure bookkeeping, no I/O.

Every body is bounded by DaemonConfig `bodySizeLimit`, but many concurrent scrapes could each
buffer up to that limit (`maxConcurrentScrapes` x `bodySizeLimit`, 4 GiB by default). So each
response buffers its first `allowance` bytes for free (an ordinary page never touches shared
state), and every byte past that is reserved here first, in `step`-sized increments (a 16 MiB
body makes at most 15 reservations of 1 MiB). A response that cannot reserve fails at once.

The event loop is single-threaded, so a reservation is two integer operations. Whoever holds
a reservation releases it exactly once: `release` refuses to go below zero, so a double release
is an error rather than a silent hole in the budget, and `reserved` returning to 0 when nothing
is in flight is what the tests check for leaks.
"""

from __future__ import annotations

from autoscalerd.errors import AutoscalerdError

__all__ = [
    "BODY_BUDGET_STEP_BYTES",
    "FREE_BODY_ALLOWANCE_BYTES",
    "BodyBudget",
    "BodyBudgetExhausted",
]

FREE_BODY_ALLOWANCE_BYTES = 1024 * 1024
"""What one response may buffer (after decompression) without touching the shared budget."""

BODY_BUDGET_STEP_BYTES = 1024 * 1024
"""Bytes past the allowance are reserved in increments of this size."""


class BodyBudgetExhausted(AutoscalerdError):
    """A response needed more of the shared budget for large bodies than is left."""

    def __init__(self, *, total: int, in_use: int, needed: int, size: int) -> None:
        super().__init__(
            f"body reached {size} bytes and needed {needed} more bytes of the daemon-wide "
            f"budget for large bodies ({total} bytes, {in_use} in use by other scrapes)"
        )
        self.total = total
        self.in_use = in_use
        self.needed = needed
        self.size = size


class BodyBudget:
    """Bytes of body buffering shared by all scrapes beyond each one's free `allowance`.

    `try_reserve(n)` takes `n` bytes if that many are left (True) or nothing (False);
    `release(n)` gives them back. `reserved` is what is held now, `peak` the most ever held,
    `refused` how many reservations failed.
    """

    __slots__ = ("allowance", "peak", "refused", "reserved", "step", "total")

    def __init__(
        self,
        total: int,
        *,
        allowance: int = FREE_BODY_ALLOWANCE_BYTES,
        step: int = BODY_BUDGET_STEP_BYTES,
    ) -> None:
        if total < 0 or allowance < 0 or step <= 0:
            raise ValueError(
                f"invalid body budget (total={total}, allowance={allowance}, step={step})"
            )
        self.total = total
        self.allowance = allowance
        self.step = step
        self.reserved = 0
        self.peak = 0
        self.refused = 0

    @property
    def available(self) -> int:
        return self.total - self.reserved

    def try_reserve(self, n: int) -> bool:
        """Take `n` bytes of the budget if they are all available; never a part of them."""
        reserved = self.reserved + n
        if reserved > self.total:
            self.refused += 1
            return False
        self.reserved = reserved
        if reserved > self.peak:
            self.peak = reserved
        return True

    def release(self, n: int) -> None:
        """Give back `n` bytes taken by `try_reserve`; more than is held is a bookkeeping bug."""
        if n < 0 or n > self.reserved:
            raise RuntimeError(
                f"body budget released {n} bytes but only {self.reserved} are reserved "
                "(a reservation was released twice)"
            )
        self.reserved -= n

    def __repr__(self) -> str:
        return (
            f"BodyBudget(total={self.total}, reserved={self.reserved}, "
            f"allowance={self.allowance}, step={self.step})"
        )
