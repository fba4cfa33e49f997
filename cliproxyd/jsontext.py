"""
JSON text from outside (client bodies, management bodies, upstream answers)
read strictly, and JSON written, without recursion in Python.

Reading is orjson's, and its verdict stands: it refuses what RFC 8259 does
not allow, or allows with results it leaves undefined (C{NaN} and
C{Infinity}, a byte order mark, invalid UTF-8, unpaired surrogates such as
C{"\\ud800"}, numbers beyond a double's range, more than 1024 levels of
nesting), and reads integers beyond 64 bits as floats. Where a string
decodes at all, it is valid Unicode, so everything read can be written
again as UTF-8.

Writing is orjson's too; what it will not write (more than 254 levels of
nesting, integers beyond 64 bits) is written by a loop here instead of the
standard library, whose encoder recurses.

Code that walks a decoded value itself bounds how deep it goes with
L{too_deep} and L{MAX_DEPTH}.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

import orjson

#: How deeply a value cliproxyd walks itself (a body translated to another
#: format, a management body) may nest: the body is level 1, each object or
#: array inside another one more. Tool schemas, the deepest part of real
#: requests, use a fraction of it.
MAX_DEPTH = 64

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


def loads(raw: bytes | str) -> Any:
    """
    The value of the JSON text C{raw}.

    @raise ValueError: (C{orjson.JSONDecodeError}) C{raw} is not JSON,
        with where and why.
    """
    return orjson.loads(raw)


def dumps(data: Any) -> bytes:
    """
    Compact UTF-8 JSON. Never recurses in Python, however deep C{data}.

    @raise TypeError: C{data} holds something JSON has no form for.
    """
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError:
        return b"".join(_pieces(data))


class _Literal(bytes):
    """JSON text written as it is, among the values still to write."""


_OPEN_OBJECT, _CLOSE_OBJECT, _OPEN_ARRAY, _CLOSE_ARRAY, _COMMA = (
    _Literal(b"{"), _Literal(b"}"), _Literal(b"["), _Literal(b"]"), _Literal(b","))


def _scalar(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        # integers beyond 64 bits; ASCII escapes for any string orjson refused
        return json.dumps(value).encode("ascii")


def _pieces(data: Any) -> Iterable[bytes]:
    """C{data} as JSON text, in pieces, from a stack of what is left to write."""
    todo: list[Any] = [data]
    while todo:
        item = todo.pop()
        if type(item) is _Literal:
            yield item
        elif isinstance(item, dict):
            todo.append(_CLOSE_OBJECT)
            entries = list(item.items())
            for n in range(len(entries) - 1, -1, -1):
                key, value = entries[n]
                if not isinstance(key, str):
                    raise TypeError("Dict key must be str")
                todo.append(value)
                todo.append(_Literal(_scalar(key) + b":"))
                if n:
                    todo.append(_COMMA)
            todo.append(_OPEN_OBJECT)
        elif isinstance(item, (list, tuple)):
            todo.append(_CLOSE_ARRAY)
            for n in range(len(item) - 1, -1, -1):
                todo.append(item[n])
                if n:
                    todo.append(_COMMA)
            todo.append(_OPEN_ARRAY)
        else:
            yield _scalar(item)


def too_deep(data: Any, limit: int = MAX_DEPTH, where: str = "") -> str | None:
    """
    Where C{data} nests more than C{limit} levels, or None if it does not.

    @param where: the JSON path of C{data} itself, that the answer starts with.
    @return: the JSON path (C{messages[0].content.a}) of the first object or
        array, in document order, below C{limit} levels.
    """
    level = [data] if isinstance(data, (dict, list)) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return _deep_path(data, limit, where)
        deeper = []
        for value in level:
            for child in value.values() if isinstance(value, dict) else value:
                if isinstance(child, (dict, list)):
                    deeper.append(child)
        level = deeper
    return None


def _deep_path(data: Any, limit: int, where: str) -> str:
    """The path of the first container below C{limit} levels (there is one)."""
    todo: list[tuple[Any, int, str]] = [(data, 1, where)]
    while todo:
        value, depth, path = todo.pop()
        if depth > limit:
            return path
        items = list(value.items() if isinstance(value, dict) else enumerate(value))
        for key, child in reversed(items):
            if isinstance(child, (dict, list)):
                todo.append((child, depth + 1, join_path(path, key)))
    raise AssertionError("too_deep found a level this walk did not")


def join_path(path: str, key: str | int) -> str:
    """
    C{path} one step further, JSON-path style: C{path[2]}, C{path.name},
    or C{path["odd key"]} (a long key shortened).
    """
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}" if path else key
    shown = key if len(key) <= 40 else key[:40] + "\u2026"
    return f"{path}[{json.dumps(shown)}]"
