"""When a reconciler reads the target's `/scale` again instead of using the one it has.

A pure rule of time and counts (the caller reads the clock), tested with a table.
"""

from __future__ import annotations

__all__ = ["SCALE_RECHECK_SECONDS", "SCALE_REFRESH_SECONDS", "scale_is_fresh"]

SCALE_REFRESH_SECONDS = 15.0
"""Re-read `/scale` at least this often (the HPA's sync period), without one API call per
policy per tick; sooner when the pods disagree with it (`SCALE_RECHECK_SECONDS`)."""
SCALE_RECHECK_SECONDS = 2.0
"""Re-read `/scale` this often while the number of live pods behind the selector differs from
the replicas last read: a `kubectl scale`, another controller or our own write changing the
pods shows there within seconds. (Also during rollouts and while new pods start, which is a
read every two seconds for that while.) 100 steady policies make ~7 reads a second, not 100."""


def scale_is_fresh(age: float, replicas: int, live_pods: int | None) -> bool:
    """Whether a `/scale` read `age` seconds ago, saying `replicas`, may be used again, when
    `live_pods` pods (not being deleted) are behind the selector (None: not counted yet)."""
    return age < SCALE_REFRESH_SECONDS and (
        live_pods is None or live_pods == replicas or age < SCALE_RECHECK_SECONDS
    )
