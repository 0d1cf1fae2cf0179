"""Whether a message's JSON Schema still accepts what a released version of it promised.

:func:`breaking` compares two schemas as ``msgspec.json.schema`` writes them and names
each change that breaks a reader or a writer built against the old one: a removed field,
a changed type, a new required field, unknown fields newly forbidden, a narrowed enum, a
stricter bound or pattern, a changed constant. A new optional field, a widened enum or a
looser bound is compatible. Both directions matter because messages outlive deploys:
queues, dead queues and the outbox hold ones written by the previous release.
"""

from __future__ import annotations

from typing import Any

# Bounds: (keyword, whether a larger value is stricter).
_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_EXACT = ("pattern", "format", "const")
# Keywords that say nothing about which values are valid.
_ANNOTATIONS = frozenset({"description", "default", "examples", "title"})
_JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}


def breaking(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Every incompatible change from ``old`` to ``new``, each naming the field's path."""
    return _Compare(old.get("$defs", {}), new.get("$defs", {})).node(old, new, "$")


class _Compare:
    def __init__(self, old_defs: dict[str, Any], new_defs: dict[str, Any]) -> None:
        self._defs = (old_defs, new_defs)
        self._seen: set[tuple[str, str]] = set()

    def node(self, old: dict[str, Any], new: dict[str, Any], path: str) -> list[str]:
        refs = (old.get("$ref", ""), new.get("$ref", ""))
        if refs != ("", ""):
            if refs in self._seen:  # a recursive type: compared once
                return []
            self._seen.add(refs)
        old, new = self._resolve(old, 0), self._resolve(new, 1)
        if path == "$" and "title" in old:  # a Struct: its fields are named after it
            path = old["title"]
        old_alternatives = [self._resolve(n, 0) for n in _alternatives(old)]
        new_alternatives = [self._resolve(n, 1) for n in _alternatives(new)]
        if len(old_alternatives) == 1 and len(new_alternatives) == 1:
            return self._single(old_alternatives[0], new_alternatives[0], path)
        problems = []
        for alternative in old_alternatives:
            match = _match(alternative, new_alternatives)
            if match is None:
                problems.append(f"{path}: type changed: {_kind(alternative)} no longer accepted")
            else:
                problems += self._single(alternative, match, path)
        return problems

    def _resolve(self, node: dict[str, Any], side: int) -> dict[str, Any]:
        ref = node.get("$ref")
        if ref is None:
            return node
        resolved: dict[str, Any] = self._defs[side][ref.rsplit("/", 1)[-1]]
        return resolved

    def _single(self, old: dict[str, Any], new: dict[str, Any], path: str) -> list[str]:
        old, new = self._resolve(old, 0), self._resolve(new, 1)
        if _any(new):  # any JSON value: accepts whatever the old one did
            return []
        if _any(old):
            return [f"{path}: type changed: any value -> {_kind(new)}"]
        if _kind(old) != _kind(new):
            return [f"{path}: type changed: {_kind(old)} -> {_kind(new)}"]
        problems = _bounds(old, new, path)
        if "enum" in new:
            lost = set(map(repr, old.get("enum", []))) - set(map(repr, new["enum"]))
            if "enum" not in old or lost:
                problems.append(f"{path}: enum narrowed: {sorted(lost) or 'now restricted'}")
        if _kind(old) == "object":
            problems += self._object(old, new, path)
        if _kind(old) == "array" and "items" in old:
            problems += self.node(old["items"], new.get("items", {}), f"{path}[]")
        return problems

    def _object(self, old: dict[str, Any], new: dict[str, Any], path: str) -> list[str]:
        problems = []
        old_fields, new_fields = old.get("properties", {}), new.get("properties", {})
        for name, schema in old_fields.items():
            if name not in new_fields:
                problems.append(f"{path}.{name}: field removed")
            else:
                problems += self.node(schema, new_fields[name], f"{path}.{name}")
        for name in sorted(set(new.get("required", [])) - set(old.get("required", []))):
            problems.append(f"{path}.{name}: new required field")
        extra_old, extra_new = old.get("additionalProperties"), new.get("additionalProperties")
        if extra_new is False and extra_old is not False:
            problems.append(f"{path}: unknown fields now forbidden")
        elif isinstance(extra_old, dict) and isinstance(extra_new, dict):
            problems += self.node(extra_old, extra_new, f"{path}.*")
        return problems


def _alternatives(node: dict[str, Any]) -> list[dict[str, Any]]:
    for key in ("anyOf", "oneOf"):
        if key in node:
            return list(node[key])
    if isinstance(node.get("type"), list):
        return [{**node, "type": kind} for kind in node["type"]]
    return [node]


def _any(node: dict[str, Any]) -> bool:
    return not set(node) - _ANNOTATIONS


def _kind(node: dict[str, Any]) -> str:
    """The JSON type of the values ``node`` accepts (an enum's, from its values)."""
    if "type" in node:
        return str(node["type"])
    if "enum" in node or "const" in node:
        names = {type(v).__name__ for v in node.get("enum", [node.get("const")])}
        return _JSON_TYPES.get(names.pop(), "enum") if len(names) == 1 else "enum"
    return "any" if _any(node) else "schema"


def _match(old: dict[str, Any], candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The alternative of the new union that takes over ``old``: same type, same title."""
    same = [c for c in candidates if _kind(c) == _kind(old) or _any(c)]
    titled = [c for c in same if c.get("title") == old.get("title")]
    best = titled or same
    return best[0] if best else None


def _bounds(old: dict[str, Any], new: dict[str, Any], path: str) -> list[str]:
    problems = []
    for key in (*_LOWER, *_UPPER):
        if key not in new:
            continue
        stricter = key not in old or (new[key] > old[key] if key in _LOWER else new[key] < old[key])
        if stricter:
            problems.append(f"{path}: {key} narrowed: {old.get(key)} -> {new[key]}")
    for key in _EXACT:
        if key in new and new.get(key) != old.get(key):
            problems.append(f"{path}: {key} changed: {old.get(key)!r} -> {new[key]!r}")
    return problems
