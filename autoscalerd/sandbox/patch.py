"""The three PATCH formats of the Kubernetes API: JSON merge patch (RFC 7386), an
approximation of strategic merge patch, and JSON patch (RFC 6902)."""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    """The patch is malformed or cannot be applied (the API answers 400 or 422)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch, simplified: like merge patch, ``$patch``/``$retainKeys``
    style directives are dropped, and lists of objects with a ``name`` key merge by name
    (the patch strategy of containers, ports, env, conditions-by-type)."""
    if not isinstance(patch, dict):
        if isinstance(patch, list) and isinstance(target, list):
            return _merge_named_lists(target, patch)
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: v for k, v in copy.deepcopy(patch).items() if not k.startswith("$")}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _merge_named_lists(target: list[Any], patch: list[Any]) -> list[Any]:
    for merge_key in ("name", "type"):
        if all(isinstance(x, dict) and merge_key in x for x in target + patch):
            out = copy.deepcopy(target)
            index = {x[merge_key]: i for i, x in enumerate(out)}
            for item in patch:
                if item.get("$patch") == "delete":
                    out = [x for x in out if x[merge_key] != item[merge_key]]
                    index = {x[merge_key]: i for i, x in enumerate(out)}
                elif item[merge_key] in index:
                    i = index[item[merge_key]]
                    out[i] = strategic_merge_patch(out[i], item)
                else:
                    index[item[merge_key]] = len(out)
                    out.append(copy.deepcopy(item))
            return out
    return copy.deepcopy(patch)


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [_unescape(t) for t in path[1:].split("/")]


def _resolve(doc: Any, tokens: list[str]) -> Any:
    cur = doc
    for tok in tokens:
        if isinstance(cur, dict):
            if tok not in cur:
                raise PatchError(f"path not found: {tok!r}")
            cur = cur[tok]
        elif isinstance(cur, list):
            try:
                cur = cur[int(tok)]
            except (ValueError, IndexError) as exc:
                raise PatchError(f"invalid array index {tok!r}") from exc
        else:
            raise PatchError(f"cannot traverse into {tok!r}")
    return cur


def _add(doc: Any, tokens: list[str], value: Any, replace: bool) -> Any:
    if not tokens:
        return copy.deepcopy(value)
    parent = _resolve(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise PatchError(f"replace operation does not apply: doc is missing path: {last}")
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(copy.deepcopy(value))
        else:
            try:
                idx = int(last)
            except ValueError as exc:
                raise PatchError(f"invalid array index {last!r}") from exc
            if replace:
                if not 0 <= idx < len(parent):
                    raise PatchError(f"index out of range: {idx}")
                parent[idx] = copy.deepcopy(value)
            else:
                if not 0 <= idx <= len(parent):
                    raise PatchError(f"index out of range: {idx}")
                parent.insert(idx, copy.deepcopy(value))
    else:
        raise PatchError("cannot add to a scalar")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _resolve(doc, tokens[:-1])
    last = tokens[-1]
    try:
        if isinstance(parent, dict):
            return parent.pop(last)
        if isinstance(parent, list):
            return parent.pop(int(last))
    except (KeyError, ValueError, IndexError) as exc:
        raise PatchError(f"remove operation does not apply: doc is missing path: {last}") from exc
    raise PatchError("cannot remove from a scalar")


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 (add, remove, replace, move, copy, test)."""
    if not isinstance(operations, list):
        raise PatchError("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid JSON patch operation: {op!r}")
        kind, tokens = op["op"], _pointer(op["path"])
        if kind in ("add", "replace"):
            if "value" not in op:
                raise PatchError(f"missing value in {kind} operation")
            doc = _add(doc, tokens, op["value"], replace=kind == "replace")
        elif kind == "remove":
            _remove(doc, tokens)
        elif kind in ("move", "copy"):
            from_tokens = _pointer(op.get("from", ""))
            value = copy.deepcopy(_resolve(doc, from_tokens))
            if kind == "move":
                _remove(doc, from_tokens)
            doc = _add(doc, tokens, value, replace=False)
        elif kind == "test":
            if _resolve(doc, tokens) != op.get("value"):
                raise PatchError(f"testing value {op['path']} failed")
        else:
            raise PatchError(f"unexpected kind of operation: {kind!r}")
    return doc
