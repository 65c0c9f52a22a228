"""The root of every exception autoscalerd raises on purpose.

`except AutoscalerdError` catches a bad policy file, an unreadable metrics page, a failed
scrape and a failed Kubernetes API call alike, and nothing else (not a bug's `TypeError`).
Each layer derives its own errors from this class; this module imports nothing, so every
layer may import it.
"""

__all__ = ["AutoscalerdError"]


class AutoscalerdError(Exception):
    """Base class of the exceptions autoscalerd raises to report a known failure."""
