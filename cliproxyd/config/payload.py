"""
C{payload}: rules that edit a request body before it leaves, as CLIProxyAPI's do.

Five lists, applied in this order to the body an executor is about to send:

- C{default}: set a value where the body has none (the first rule to set a
  path wins);
- C{default-raw}: the same with a raw JSON value (a string is JSON text);
- C{override}: always set the value (the last rule wins);
- C{override-raw}: the same with a raw JSON value;
- C{filter}: remove paths.

A rule applies when one of its C{models[]} entries matches: C{name}, a
glob with C{*}, matched against the upstream model, the model the client
asked for and that name with its thinking suffix; C{protocol}, the
upstream's protocol (openai, claude, gemini, gemini-cli, codex,
antigravity, interactions); C{from-protocol}, the client's (openai, responses, claude, interactions,
gemini); C{headers}, globs over the client's request headers; and
C{match}, C{not-match}, C{exist}, C{not-exist} over the body.

Paths are gjson/sjson paths, the subset rules use: keys separated by
dots (C{\\.} for a dot inside a key), array indices, C{-1} to append
(when setting), and C{#(key==value)} (or C{#(...)#} for every match) to
pick array elements, with C{==}, C{!=}, C{&&}, C{||} and a bare key for
"exists". Everything is parsed here, at load; a path this subset cannot
read is an error naming its YAML path.

This module is the config layer's: it imports nothing of cliproxyd's.
The executors apply the compiled rules (L{cliproxyd.executors.payload}).
"""

from __future__ import annotations

import json
import re
from typing import Any

from attrs import frozen

#: The upstream protocols a rule's C{protocol} may name.
PROTOCOLS = frozenset({"openai", "claude", "gemini", "gemini-cli", "codex", "antigravity", "interactions"})
#: The client protocols a rule's C{from-protocol} may name (with CLIProxyAPI's spellings of responses).
FROM_PROTOCOLS = {"openai": "openai", "responses": "responses", "openai-response": "responses",
                  "openai-responses": "responses", "response": "responses", "claude": "claude",
                  "gemini": "gemini", "interactions": "interactions"}


class PathError(ValueError):
    """A path this subset of gjson cannot read; its message says why."""


@frozen
class Query:
    """C{#(...)}: alternatives (C{||}) of conjunctions (C{&&}) of terms C{(key path, op, JSON value)}."""

    alternatives: tuple[tuple[tuple[tuple[str, ...], str, Any], ...], ...]
    every: bool  # C{#(...)#}: every match, not the first


#: One step of a path: a key (or index, when it is digits and meets an array), or a query.
Segment = str | Query


@frozen
class PayloadPath:
    text: str
    segments: tuple[Segment, ...]

    @property
    def has_query(self) -> bool:
        return any(isinstance(s, Query) for s in self.segments)


@frozen
class ModelMatch:
    """One C{models[]} entry of a rule."""

    name: re.Pattern[str]
    protocol: str = ""
    from_protocol: str = ""
    #: (lower-case header name, glob)
    headers: tuple[tuple[str, re.Pattern[str]], ...] = ()
    #: (path, JSON text of the value) the body must (match) or must not (not-match) hold
    match: tuple[tuple[PayloadPath, str], ...] = ()
    not_match: tuple[tuple[PayloadPath, str], ...] = ()
    exist: tuple[PayloadPath, ...] = ()
    not_exist: tuple[PayloadPath, ...] = ()


@frozen
class PayloadRule:
    """One rule: when any of C{models} matches, C{params} apply (values as JSON text; none for filters)."""

    models: tuple[ModelMatch, ...]
    params: tuple[tuple[PayloadPath, str], ...]


@frozen
class PayloadConfig:
    default: tuple[PayloadRule, ...] = ()
    default_raw: tuple[PayloadRule, ...] = ()  # default-raw
    override: tuple[PayloadRule, ...] = ()
    override_raw: tuple[PayloadRule, ...] = ()  # override-raw
    filter: tuple[PayloadRule, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.default or self.default_raw or self.override or self.override_raw or self.filter)


def glob(pattern: str) -> re.Pattern[str]:
    """CLIProxyAPI's model glob: C{*} matches anything, everything else itself (case counts)."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.S)


def _split(text: str, sep: str) -> list[str]:
    """C{text} split at C{sep} outside quotes, parentheses and escapes; the escapes kept."""
    parts, start, depth, quote, i = [], 0, 0, "", 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(depth - 1, 0)
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i += len(sep)
            continue
        i += 1
    parts.append(text[start:])
    return parts


def _unescape(key: str) -> str:
    return re.sub(r"\\(.)", r"\1", key)


_TERM = re.compile(r"^\s*(.+?)\s*(==|!=)\s*(.+?)\s*$", re.S)


def _literal(text: str) -> Any:
    if text.startswith("'") and text.endswith("'") and len(text) >= 2:
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError:
        raise PathError(f"{text!r} is not a JSON value (quote strings)") from None


def _query(part: str) -> Query:
    every = part.endswith(")#")
    inner = part[2:-2] if every else part[2:-1]
    alternatives = []
    for alt in _split(inner, "||"):
        terms = []
        for term in _split(alt, "&&"):
            m = _TERM.match(term)
            if m is None:
                key, op, value = term.strip(), "exists", None
            else:
                key, op, value = m.group(1), m.group(2), _literal(m.group(3))
            if not key:
                raise PathError(f"an empty term in {part!r}")
            terms.append((tuple(_unescape(k) for k in _split(key, ".")), op, value))
        alternatives.append(tuple(terms))
    return Query(tuple(alternatives), every)


def parse_path(text: str) -> PayloadPath:
    """
    A path of the gjson subset rules use.

    @raise PathError: for what the subset cannot read (wildcards, modifiers,
        other query operators), so an operator learns at load, not per request.
    """
    text = text.strip()
    if not text:
        raise PathError("must not be empty")
    segments: list[Segment] = []
    for part in _split(text, "."):
        if part.startswith("#("):
            if not (part.endswith(")") or part.endswith(")#")):
                raise PathError(f"the query {part!r} is not closed")
            segments.append(_query(part))
            continue
        if not part:
            raise PathError(f"{text!r} has an empty key")
        bare = re.sub(r"\\.", "", part)
        if any(ch in bare for ch in "*?|@#"):
            raise PathError(f"{text!r}: wildcards, modifiers and '#' outside a #(...) query are not supported")
        segments.append(_unescape(part))
    return PayloadPath(text, tuple(segments))


def raw_value(value: Any) -> str:
    """A C{*-raw} value as JSON text: a string is JSON text already (it must parse), anything else is encoded."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            raise ValueError("must be valid JSON text (a raw rule's strings are used as JSON)") from None
        return value.strip()
    return json.dumps(value, separators=(",", ":"))


def plain_value(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
