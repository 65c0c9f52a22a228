"""The reconciler's hook for derived sources (`rate()`, `histogram_quantile()`, issue 13):
feeds each tick's per-pod series into the pure signal state (`scaling/signals.py`) and turns
the result into the tick's `SourceSample`.

- `rate`: the requests of the window per second, over the pods that have two samples in it.
  A pod whose scrape failed is missing, and the autoscaler estimates the total from the
  others as for any source (DESIGN §3). A pod that answered but has fewer than two samples
  (it just joined) has no rate yet and is *not* extrapolated from the others: the requests
  of the window were served by the pods that were there, and their counters hold them all.
  Mean × ready there (the literal reading of DESIGN §2.4's "missing") would count the load
  the old pods carried alone once per new pod, right after every scale-up. Without any pod
  with a rate the tick has no data.
- `histogram_quantile`: a quantile is a level, not a sum: the total is value × counted pods
  (DESIGN §2.4), so `desired ≈ ceil(ready × value / target)`. Fewer than half of the counted
  pods contributing is no data, the rule every other source follows.
"""

from __future__ import annotations

from collections.abc import Sequence

from autoscalerd.config.model import MetricSource, SignalKind
from autoscalerd.daemon.problems import Problems
from autoscalerd.kube.pods import PodInfo
from autoscalerd.scaling.autoscaler import SourceSample
from autoscalerd.scaling.signals import SignalResult, SignalState
from autoscalerd.scrape.client import ScrapeOutcome

__all__ = ["SIGNAL_PREFIX", "DerivedSignals"]

SIGNAL_PREFIX = "signal:"
"""Problem key of a derived source whose series cannot give a value (`signal:<index>`)."""

_FIXES = {
    "the buckets have no": (
        "histogram_quantile needs the whole histogram: make targetMetric's selector match the "
        'le="+Inf" bucket too (a matcher on le drops buckets)'
    ),
    "a bucket series has no numeric le": (
        "histogram_quantile reads the _bucket series of a histogram, each with a numeric le "
        "label; check the metric name in targetMetric"
    ),
}


class DerivedSignals:
    """The signal state of one policy's derived sources, by source index."""

    def __init__(self, sources: Sequence[MetricSource]) -> None:
        self._states = {
            i: SignalState(source.signal)
            for i, source in enumerate(sources)
            if source.signal is not None
        }
        self.last: dict[int, SignalResult] = {}
        """The last result per derived source, for /status and problems."""

    def derived(self, index: int) -> bool:
        return index in self._states

    def sample(
        self, index: int, now: float, counted: Sequence[PodInfo], outcomes: Sequence[ScrapeOutcome]
    ) -> SourceSample:
        """Record this tick's series of source `index` and return its sample."""
        state = self._states[index]
        pods = {
            pod.name: (outcome.series if outcome.error is None else None)
            for pod, outcome in zip(counted, outcomes, strict=True)
        }
        result = state.observe(now, pods)
        self.last[index] = result
        n = len(counted)
        if result.value is None:
            return SourceSample(total=None, answered=0, missing=n)
        if state.signal.kind is SignalKind.RATE:
            # Pods that joined inside the window are not extrapolated (see the docstring).
            return SourceSample(
                total=result.value,
                answered=result.answered + result.joined,
                missing=result.missing - result.joined,
            )
        if 2 * result.answered < n:
            return SourceSample(total=None, answered=0, missing=n)
        return SourceSample(total=result.value * n, answered=n, missing=0)

    def report(self, index: int, source: MetricSource, problems: Problems) -> None:
        """Report (once) a derived source whose series cannot give a value whatever the load,
        with the fix; resolve it when it gives one again. No data for a normal reason (no
        observation in the window, pods without two samples yet) is not a problem."""
        key = f"{SIGNAL_PREFIX}{index}"
        result = self.last.get(index)
        why = result.why if result is not None else ""
        fix = next((f for prefix, f in _FIXES.items() if why.startswith(prefix)), None)
        if fix is None:
            if result is not None and result.value is not None:
                problems.resolved(key, metric=source.target_metric)
            return
        problems.report(
            key, f"{source.target_metric}: {why}. Fix: {fix}", metric=source.target_metric
        )
