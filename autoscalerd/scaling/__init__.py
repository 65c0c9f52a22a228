"""Scaling algorithms (KPA, APA, HPA) as pure, clock-driven code: time is an argument.

`Autoscaler(policy).decide(Tick(...)) -> Decision` is the entry point; `window`, `kpa`, `apa`
and `hpa` hold the algorithms, each documented with its formulas.
"""

from autoscalerd.scaling.autoscaler import (
    Autoscaler,
    Decision,
    SourceSample,
    Tick,
    estimate_total,
)

__all__ = ["Autoscaler", "Decision", "SourceSample", "Tick", "estimate_total"]
