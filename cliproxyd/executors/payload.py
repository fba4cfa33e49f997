"""
C{payload} rules applied to a request body just before it leaves (see
L{cliproxyd.config.payload} for what the rules say).

L{PayloadRules} is made once per generation from the config, only when the
config has rules: an executor without it sends its body as it is. With
rules, which of them can apply to one (protocol, upstream model, client
model) is worked out once and remembered, so a request no rule names costs
one dictionary look-up; a body is parsed and re-encoded only when a rule
applies to it.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from cliproxyd.config.payload import ModelMatch, PayloadConfig, PayloadPath, PayloadRule, Query
from cliproxyd.jsontext import dumps, loads
from cliproxyd.modelnames import parse_model

#: How many (protocol, model, client model) verdicts are remembered before the memory starts over.
MEMO_SIZE = 4096

_MISSING = object()
Concrete = tuple[str, ...]


def _index(seg: str, size: int) -> int | None:
    if seg.isdigit():
        i = int(seg)
        return i if i < size else None
    return None


def get(data: Any, path: Concrete) -> Any:
    """The value at C{path}, or L{_MISSING}."""
    cur = data
    for seg in path:
        if isinstance(cur, dict):
            cur = cur.get(seg, _MISSING)
        elif isinstance(cur, list):
            i = _index(seg, len(cur))
            cur = _MISSING if i is None else cur[i]
        else:
            return _MISSING
        if cur is _MISSING:
            return _MISSING
    return cur


def _is_index(seg: str) -> bool:
    return seg.isdigit() or seg == "-1"


def put(data: Any, path: Concrete, value: Any) -> bool:
    """Set C{path} to C{value}, making the objects and arrays on the way (sjson's way); whether it could."""
    cur = data
    for n, seg in enumerate(path):
        last = n == len(path) - 1
        nxt = None if last else ([] if _is_index(path[n + 1]) else {})
        if isinstance(cur, dict):
            if last:
                cur[seg] = value
                return True
            child = cur.get(seg)
            if not isinstance(child, (dict, list)):
                child = cur[seg] = nxt
            cur = child
        elif isinstance(cur, list) and _is_index(seg):
            if seg == "-1":
                cur.append(value if last else nxt)
                if last:
                    return True
                cur = cur[-1]
                continue
            i = int(seg)
            cur.extend([None] * (i + 1 - len(cur)))
            if last:
                cur[i] = value
                return True
            if not isinstance(cur[i], (dict, list)):
                cur[i] = nxt
            cur = cur[i]
        else:
            return False
    return False


def delete(data: Any, path: Concrete) -> None:
    parent = get(data, path[:-1]) if len(path) > 1 else data
    seg = path[-1]
    if isinstance(parent, dict):
        parent.pop(seg, None)
    elif isinstance(parent, list):
        i = _index(seg, len(parent))
        if i is not None:
            del parent[i]


def same(a: Any, b: Any) -> bool:
    """JSON equality: 1 and 1.0 are the same number, true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _term(item: Any, key: Concrete, op: str, value: Any) -> bool:
    found = get(item, key)
    if op == "exists":
        return found is not _MISSING
    if op == "==":
        return found is not _MISSING and same(found, value)
    return found is _MISSING or not same(found, value)


def _matches(item: Any, query: Query) -> bool:
    return any(all(_term(item, *term) for term in alt) for alt in query.alternatives)


def resolve(data: Any, path: PayloadPath) -> list[Concrete]:
    """The concrete paths C{path} stands for in C{data} (its queries turned into indices)."""
    if not path.has_query:
        return [path.segments]  # type: ignore[list-item]
    paths: list[Concrete] = [()]
    for seg in path.segments:
        if not isinstance(seg, Query):
            paths = [p + (seg,) for p in paths]
            continue
        found = []
        for base in paths:
            array = get(data, base)
            if not isinstance(array, list):
                continue
            for i, item in enumerate(array):
                if _matches(item, seg):
                    found.append(base + (str(i),))
                    if not seg.every:
                        break
        paths = found
        if not paths:
            break
    return paths


class _Rule:
    """One rule with its values decoded once."""

    def __init__(self, rule: PayloadRule, kind: str) -> None:
        self.models = rule.models
        self.kind = kind
        self.params = tuple((path, json.loads(value) if value else None) for path, value in rule.params)
        self.conditions = any(m.match or m.not_match or m.exist or m.not_exist or m.headers or m.from_protocol
                              for m in rule.models)


def _named(m: ModelMatch, protocol: str, candidates: tuple[str, ...]) -> bool:
    if m.protocol and m.protocol != protocol:
        return False
    return any(m.name.fullmatch(c) for c in candidates)


def _holds(m: ModelMatch, data: Any, source: str, headers: Any) -> bool:
    """The per-request part of a model entry: the client's protocol and headers, the body's conditions."""
    if m.from_protocol and m.from_protocol != source:
        return False
    for name, pattern in m.headers:
        values = headers.getRawHeaders(name.encode("latin-1")) if headers is not None else None
        if not values or not any(pattern.fullmatch(v.decode("latin-1")) for v in values):
            return False
    for path, value in m.match:
        want = json.loads(value)
        if not any(same(get(data, p), want) for p in resolve(data, path) if get(data, p) is not _MISSING):
            return False
    for path, value in m.not_match:
        want = json.loads(value)
        if any(same(get(data, p), want) for p in resolve(data, path) if get(data, p) is not _MISSING):
            return False
    for path in m.exist:
        if not any(get(data, p) not in (_MISSING, None) for p in resolve(data, path)):
            return False
    for path in m.not_exist:
        if any(get(data, p) not in (_MISSING, None) for p in resolve(data, path)):
            return False
    return True


class PayloadRules:
    """The generation's payload rules, compiled; L{apply} edits one body."""

    def __init__(self, config: PayloadConfig) -> None:
        self._rules = tuple(
            _Rule(rule, kind)
            for kind, rules in (("default", config.default), ("default", config.default_raw),
                                ("override", config.override), ("override", config.override_raw),
                                ("filter", config.filter))
            for rule in rules
        )
        self._memo: dict[tuple[str, str, str], tuple[tuple[_Rule, tuple[ModelMatch, ...]], ...]] = {}

    @classmethod
    def of(cls, config: PayloadConfig) -> "PayloadRules | None":
        """The compiled rules, or None when there are none (nothing to do per request)."""
        return cls(config) if config else None

    def _candidates(self, protocol: str, upstream: str, requested: str) -> tuple[tuple[_Rule, tuple[ModelMatch, ...]], ...]:
        key = (protocol, upstream, requested)
        found = self._memo.get(key)
        if found is None:
            asked = parse_model(requested)
            names = tuple(dict.fromkeys(n for n in (parse_model(upstream).base, asked.base,
                                                    requested if asked.suffix else "") if n))
            found = tuple(
                (rule, entries)
                for rule in self._rules
                if (entries := tuple(m for m in rule.models if _named(m, protocol, names)))
            )
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = found
        return found

    def apply(self, body: bytes, protocol: str, upstream: str, req: Any) -> bytes:
        """C{body} (for C{protocol}, model C{upstream}) with every rule that applies to C{req} applied."""
        rules = self._candidates(protocol, upstream, req.model)
        if not rules:
            return body
        try:
            data = loads(body)
        except ValueError:
            return body
        if not isinstance(data, dict):
            return body
        fmt = getattr(req, "fmt", None)
        source = fmt.NAME if fmt is not None else ""
        headers = getattr(req, "headers", None)
        changed = edit(data, rules, source, headers)
        return dumps(data) if changed else body


def edit(data: dict[str, Any], rules: Iterable[tuple[_Rule, tuple[ModelMatch, ...]]], source: str,
         headers: Any) -> bool:
    """Apply C{rules} (in order: defaults, overrides, filters) to C{data} in place; whether anything changed."""
    changed = False
    for rule, entries in rules:
        if rule.conditions and not any(_holds(m, data, source, headers) for m in entries):
            continue
        for path, value in rule.params:
            concrete = resolve(data, path)
            if rule.kind == "filter":
                for p in reversed(concrete):
                    if get(data, p) is not _MISSING:
                        delete(data, p)
                        changed = True
                continue
            for p in concrete:
                old = get(data, p)
                if rule.kind == "default" and old is not _MISSING:
                    continue
                if old is not _MISSING and same(old, value) and type(old) is type(value):
                    continue
                changed = put(data, p, _copy(value)) or changed
    return changed


def _copy(value: Any) -> Any:
    """A fresh copy of a rule's value (bodies are edited in place; the rule's own value must not be)."""
    if isinstance(value, (dict, list)):
        return json.loads(json.dumps(value))
    return value
