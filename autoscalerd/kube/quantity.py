"""Kubernetes resource quantities (`250m`, `1.5`, `128974848`, `129e6`, `123Mi`) → floats.

Pure; used for pod cpu requests and for the metrics APIs' values. A malformed quantity raises
`ValueError` with the text in the message (never read as 0).
"""

from __future__ import annotations

import re

__all__ = ["parse_quantity"]

_SUFFIX = {
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}
_QUANTITY = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$"
)


def parse_quantity(text: object) -> float:
    """The quantity's value in base units (cores for cpu, bytes for memory)."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"not a quantity: {text!r}")
    if isinstance(text, (int, float)):
        return float(text)
    m = _QUANTITY.match(text.strip())
    if m is None:
        raise ValueError(f"not a quantity: {text!r}")
    number, exponent, suffix = m.groups()
    if exponent:
        return float(number + exponent)
    return float(number) * _SUFFIX[suffix or ""]
