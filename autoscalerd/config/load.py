"""Read policy files: the only place that touches YAML.

`load_config(paths)` expands directories (every `*.yaml`/`*.yml`, sorted), reads each file's
documents with `yaml.compose_all` so every key and value keeps its line, and hands plain data
plus line maps to the pure `autoscalerd.config.parse`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path as FsPath
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from autoscalerd.config.model import Config
from autoscalerd.config.parse import parse_documents
from autoscalerd.config.problems import ConfigErrors, Path, Problem, RawDocument, dotted

__all__ = ["ConfigErrors", "expand_paths", "load_config", "read_documents"]

MAX_FILE_BYTES = 4 * 1024 * 1024
"""A policy file larger than this is refused (4 MiB): it is surely not a policy file."""
_MAX_DEPTH = 64


def expand_paths(paths: Iterable[str]) -> tuple[list[str], list[Problem]]:
    """Turn files and directories into the ordered list of files to read."""
    files: list[str] = []
    problems: list[Problem] = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(
                str(child)
                for child in FsPath(p).iterdir()
                if child.suffix in (".yaml", ".yml")
                and child.is_file()
                and not child.name.startswith(".")
            )
            if not found:
                problems.append(
                    Problem(
                        file=p,
                        line=0,
                        field="",
                        message="no *.yaml or *.yml files in this directory",
                    )
                )
            files.extend(found)
        elif os.path.exists(p):
            files.append(p)
        else:
            problems.append(Problem(file=p, line=0, field="", message="no such file or directory"))
    return files, problems


def read_documents(file: str, text: str) -> tuple[list[RawDocument], list[Problem]]:
    """Compose every YAML document of `text`, keeping the line of each key and value."""
    docs: list[RawDocument] = []
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        return [], [
            Problem(file=file, line=line, field="", message=f"YAML syntax error: {what}{context}")
        ]
    except yaml.YAMLError as exc:
        return [], [Problem(file=file, line=1, field="", message=f"YAML error: {exc}")]
    problems: list[Problem] = []
    for node in nodes:
        if node is None:
            continue
        builder = _Builder(file, problems)
        data = builder.build(node, (), 0)
        docs.append(
            RawDocument(
                file=file,
                start_line=node.start_mark.line + 1,
                data=data,
                key_lines=builder.key_lines,
                value_lines=builder.value_lines,
            )
        )
    return docs, problems


def load_config(paths: Sequence[str]) -> Config:
    """Load and validate the configuration from files and directories.

    Raises:
        ConfigErrors: listing every problem in every file (syntax, types, rules).
    """
    files, problems = expand_paths(paths)
    docs: list[RawDocument] = []
    for f in files:
        try:
            size = os.path.getsize(f)
            if size > MAX_FILE_BYTES:
                problems.append(
                    Problem(
                        file=f,
                        line=0,
                        field="",
                        message=f"file is {size} bytes; policy files are limited to 4 MiB",
                    )
                )
                continue
            with open(f, encoding="utf-8") as fh:
                text = fh.read()
        except UnicodeDecodeError as exc:
            problems.append(
                Problem(file=f, line=0, field="", message=f"not UTF-8 text: {exc.reason}")
            )
            continue
        except OSError as exc:
            problems.append(
                Problem(file=f, line=0, field="", message=f"cannot read: {exc.strerror}")
            )
            continue
        file_docs, file_problems = read_documents(f, text)
        docs.extend(file_docs)
        problems.extend(file_problems)
    if not files and not problems:
        problems.append(
            Problem(
                file="-",
                line=0,
                field="",
                message="no configuration given; use -c PATH or AUTOSCALERD_CONFIG",
            )
        )
    config, parse_problems = parse_documents(docs, files=files)
    problems.extend(parse_problems)
    if problems:
        order = {f: i for i, f in enumerate(files)}
        problems.sort(key=lambda p: (order.get(p.file, -1), p.line))
        raise ConfigErrors(problems)
    return config


class _Builder:
    """Convert a composed node tree to plain data, recording key and value lines."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        self.key_lines: dict[Path, int] = {}
        self.value_lines: dict[Path, int] = {}
        self._constructor = SafeConstructor()

    def build(self, node: Node, path: Path, depth: int) -> Any:
        self.value_lines[path] = node.start_mark.line + 1
        if depth > _MAX_DEPTH:
            self.problems.append(
                Problem(
                    file=self.file,
                    line=node.start_mark.line + 1,
                    field="",
                    message="nesting too deep",
                )
            )
            return None
        if isinstance(node, MappingNode):
            self._constructor.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._scalar(key_node) if isinstance(key_node, ScalarNode) else repr(key_node)
                if isinstance(key, (list, dict)):
                    key = str(key)
                child: Path = (*path, key)
                line = key_node.start_mark.line + 1
                if key in out:
                    self.problems.append(
                        Problem(
                            file=self.file,
                            line=line,
                            field=dotted(child),
                            message=f"duplicate key; it is also set at line {self.key_lines.get(child, '?')}",
                        )
                    )
                    continue
                self.key_lines[child] = line
                out[key] = self.build(value_node, child, depth + 1)
            return out
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node: Node) -> Any:
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.problems.append(
                Problem(
                    file=self.file,
                    line=node.start_mark.line + 1,
                    field="",
                    message=f"YAML error: {exc}",
                )
            )
            return None
