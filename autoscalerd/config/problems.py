"""What validation reports: a problem at a line, and the document it is found in.

`RawDocument` is one YAML document as `autoscalerd.config.load` hands it over: plain data
plus the line of every key and value. `Document` wraps one while it is validated: it turns a
key path into the line to blame and collects `Problem`s, which `ConfigErrors` carries out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autoscalerd.config.model import SourceRef
from autoscalerd.errors import AutoscalerdError

__all__ = ["ConfigErrors", "Document", "Path", "Problem", "RawDocument", "dotted"]

Path = tuple[str | int, ...]
"""Where a value stands in a document: `("spec", "metricsSources", 0, "port")`."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Problem:
    """One thing wrong with a policy file, located at a line."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        if self.field:
            return f"{self.file}:{self.line}: {self.field}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"


class ConfigErrors(AutoscalerdError):
    """The configuration is invalid; `problems` lists every problem found, in file order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True, kw_only=True, slots=True)
class RawDocument:
    """One YAML document as loaded: plain data plus where each key and value stands."""

    file: str
    start_line: int
    data: Any
    key_lines: Mapping[Path, int] = field(default_factory=dict)
    """Line of the key of the value at a path (1-based)."""
    value_lines: Mapping[Path, int] = field(default_factory=dict)
    """Line where the value at a path starts (1-based)."""


class Document:
    """One document under validation: line lookup, and the problems found so far.

    `problems` is shared by every document of one validation run, so problems stay in the
    order they were found.
    """

    def __init__(self, raw: RawDocument, problems: list[Problem]) -> None:
        self.raw = raw
        self.problems = problems

    def line(self, path: Path, *, at_key: bool = False) -> int:
        """The line of the value at `path` (of its key with `at_key`), else of its nearest
        ancestor that has one, else the document's first line."""
        lines = self.raw.key_lines if at_key else self.raw.value_lines
        probe = path
        while probe:
            if probe in lines:
                return lines[probe]
            if not at_key and probe in self.raw.key_lines:
                return self.raw.key_lines[probe]
            probe = probe[:-1]
        return self.raw.start_line

    def add(self, path: Path, message: str, *, at_key: bool = False) -> None:
        """Record a problem with the value at `path` (or with its key, `at_key`)."""
        self.problems.append(
            Problem(
                file=self.raw.file,
                line=self.line(path, at_key=at_key),
                field=dotted(path),
                message=message,
            )
        )

    def where(self, path: Path) -> SourceRef:
        """The file and line of `path`, kept in the model for later messages."""
        at_key = bool(path) and not isinstance(path[-1], int)
        return SourceRef(file=self.raw.file, line=self.line(path, at_key=at_key))


def dotted(path: Path) -> str:
    """Render a key path as `spec.metricsSources[0].port` (annotation keys in brackets)."""
    out = ""
    for part in path:
        if isinstance(part, int) or "/" in part or ("." in part and out.endswith("annotations")):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out
