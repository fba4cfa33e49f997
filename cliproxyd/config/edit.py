"""
Editing config.yaml from the daemon: comment-preserving, validated, atomic
and serialized.

config.yaml belongs to the operator. When the management API changes it,
the file is re-read (never a cached copy: the operator may have edited it
since), loaded with ruamel.yaml in round-trip mode so that comments, key
order, quoting and indentation survive, changed, dumped, checked with
L{parse_config} exactly as a start-up would check it, and only then written
with L{atomic_write}, keeping the file's mode. A change that does not
validate leaves the file byte for byte as it was.

Edits are serialized with a L{DeferredLock}: two management requests that
change the file at the same moment both land. File I/O, YAML parsing and
dumping run in a thread (C{run_in_thread}); the caller's C{mutate} runs on
the reactor thread, so it may look at anything the reactor owns.

The round-trip loader reads YAML 1.2 (C{yes} is a string there), the
validator and the daemon read YAML 1.1 (C{yes} is true). Existing scalars are
written back as they were, so they mean what they meant; new strings that
YAML 1.1 would read as something else (C{yes}, C{1:20}, C{2024-01-01}) are
double-quoted by L{to_node} and L{set_path}.
"""

from __future__ import annotations

import io
import math
from typing import Any, Callable, Sequence, TypeVar

import attrs
import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.error import YAMLError as RuamelYAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString
from ruamel.yaml.tokens import CommentToken
from twisted.internet.defer import Deferred, DeferredLock, maybeDeferred
from twisted.internet.threads import deferToThread

from cliproxyd.config.load import ConfigError, load_yaml, parse_config, yaml_syntax_error
from cliproxyd.config.model import Config
from cliproxyd.fileio import atomic_write

T = TypeVar("T")
RunInThread = Callable[..., "Deferred[Any]"]
#: A path into the document: mapping keys (str) and sequence indexes (int).
Path = Sequence["str | int"]

#: Indentation for a file whose own cannot be seen (no nested block mapping
#: or sequence): keys two further in than their parent, list dashes two in,
#: list items four in.
DEFAULT_INDENT = {"mapping": 2, "sequence": 4, "offset": 2}

#: New config files are written owner-only: they hold keys.
NEW_FILE_MODE = 0o600


@attrs.define
class _Loaded:
    """The file as C{edit} found it, and the loader that will write it back."""

    original: bytes
    doc: CommentedMap
    rt: YAML
    #: comment lines of a file that had nothing else, kept in front
    prefix: str
    #: comment lines after the last entry, kept at the end
    tail: str
    #: the document had no entries
    empty: bool


class ConfigFile:
    """
    The config file at C{path}, read and changed off the reactor thread.

    C{run_in_thread(f, *args)} runs C{f} in a thread and returns a Deferred
    of its result (L{deferToThread} by default; tests pass a synchronous one).
    """

    def __init__(self, path: str, run_in_thread: RunInThread = deferToThread) -> None:
        self.path = path
        self.run_in_thread = run_in_thread
        self._lock = DeferredLock()

    def _thread(self, f: Callable[..., T], *args: Any) -> "Deferred[T]":
        return maybeDeferred(self.run_in_thread, f, *args)

    def read(self) -> "Deferred[bytes]":
        """The file's bytes as they are now (C{b""} when there is no file)."""
        return self._thread(self._read)

    def edit(self, mutate: Callable[[CommentedMap], T]) -> "Deferred[tuple[Config, T]]":
        """
        Apply C{mutate} to the file's current document and write the result.

        C{mutate(doc)} gets the top-level mapping (an empty one for a missing
        or empty file), changes it in place (see L{set_path}, L{delete_path},
        L{to_node}) and may return a value. It runs on the reactor thread
        and must not block. Whatever it raises (C{ValueError} or
        L{ConfigError} for a change the caller refuses) fails the Deferred
        and nothing is written.

        The changed document must pass L{parse_config}; otherwise the
        Deferred fails with that L{ConfigError} and the file is untouched.
        A change that leaves the file's bytes as they were is not written.

        @return: a Deferred firing with the new validated L{Config} and
            C{mutate}'s return value.
        """
        return self._lock.run(lambda: Deferred.fromCoroutine(self._edit(mutate)))

    def replace(self, data: bytes) -> "Deferred[Config]":
        """
        Replace the whole file with C{data} (an upload of config.yaml), if it
        is valid: a YAML syntax error or an invalid value fails the Deferred
        with a L{ConfigError} (naming the line and column, or the YAML path)
        and leaves the file untouched.
        """
        return self._lock.run(self._thread, self._replace, data)

    # -- in the thread ----------------------------------------------------------------

    def _read(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""
        except OSError as e:
            raise ConfigError(self.path, "", f"cannot read the file: {e.strerror}") from None

    def _load(self) -> _Loaded:
        original = self._read()
        try:
            text = original.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(self.path, "", f"not UTF-8 text (byte {e.start})") from None
        rt = _round_trip()
        try:
            doc = rt.load(text)
        except RuamelYAMLError as e:
            raise yaml_syntax_error(e, self.path) from None
        prefix = ""
        if doc is None:
            doc = CommentedMap()
            if text.strip() and _only_comments(text):
                # ruamel drops the comments of an empty document: they go
                # back, as they were, in front of whatever is written.
                prefix = text if text.endswith("\n") else text + "\n"
        elif not isinstance(doc, CommentedMap):
            kind = "a list" if isinstance(doc, list) else "a single value"
            raise ConfigError(self.path, "", f"must be a mapping, not {kind}")
        rt.indent(**_guess_indent(doc))
        if not prefix:
            head = _before_document_start(text)
            if head is not None:
                # ruamel drops comments above "---"; they go back as they were.
                rt.explicit_start = True
                prefix = head
        return _Loaded(original, doc, rt, prefix, _move_comments_down(doc), not doc)

    def _store(self, loaded: _Loaded) -> Config:
        if not loaded.doc and loaded.empty:
            data = loaded.original  # it was empty and still is: not even "{}"
        else:
            out = io.StringIO()
            loaded.rt.dump(loaded.doc, out)
            data = (loaded.prefix + out.getvalue() + loaded.tail).encode("utf-8")
        config = self._validate(data)
        if data != loaded.original:
            atomic_write(self.path, data, default_mode=NEW_FILE_MODE)
        return config

    def _replace(self, data: bytes) -> Config:
        config = self._validate(data)
        atomic_write(self.path, data, default_mode=NEW_FILE_MODE)
        return config

    def _validate(self, data: bytes) -> Config:
        config, _warnings = parse_config(load_yaml(data, self.path), self.path)
        return config

    # -- on the reactor -----------------------------------------------------------------

    async def _edit(self, mutate: Callable[[CommentedMap], T]) -> tuple[Config, T]:
        loaded = await self._thread(self._load)
        result = mutate(loaded.doc)
        config = await self._thread(self._store, loaded)
        return config, result


# -- building and changing documents -------------------------------------------------


def set_path(doc: CommentedMap, path: Path, value: Any) -> None:
    """
    Set C{doc[path[0]][path[1]]...} to C{value} (converted by L{to_node}),
    creating missing mappings on the way. A string replacing a quoted
    string keeps its quotes; the comment on the line stays.

    @raise ValueError: when the path goes through something that is not a
        mapping (or, for an int, a sequence), or an index is out of range.
    """
    if not path:
        raise ValueError("empty path")
    parent = _walk(doc, path[:-1], create=True)
    last = path[-1]
    node = to_node(value)
    where = _render(path[:-1]) or "the document"
    if isinstance(parent, CommentedMap) and isinstance(last, str):
        old = parent.get(last)
    elif isinstance(parent, CommentedSeq) and isinstance(last, int) and not isinstance(last, bool):
        if not -len(parent) <= last < len(parent):
            raise ValueError(f"{_render(path)}: no such list item")
        old = parent[last]
    else:
        raise ValueError(f"{_render(path)}: {where} is not a {'list' if isinstance(last, int) else 'mapping'}")
    if isinstance(old, (SingleQuotedScalarString, DoubleQuotedScalarString)) and type(node) is str:
        node = type(old)(node)
    parent[last] = node


def delete_path(doc: CommentedMap, path: Path) -> bool:
    """
    Remove the key or list item at C{path}, with its comment lines (those
    just above it and the one on its line).

    @return: whether there was anything to remove.
    """
    if not path:
        raise ValueError("empty path")
    try:
        parent = _walk(doc, path[:-1], create=False)
    except (KeyError, ValueError):
        return False
    last = path[-1]
    if isinstance(parent, CommentedMap) and isinstance(last, str):
        if last not in parent:
            return False
    elif isinstance(parent, CommentedSeq) and isinstance(last, int) and not isinstance(last, bool):
        if not -len(parent) <= last < len(parent):
            return False
    else:
        return False
    del parent[last]
    return True


def to_node(value: Any) -> Any:
    """
    Turn plain data (as decoded from JSON) into ruamel nodes that dump in
    block style and read back, with YAML 1.1 (PyYAML, the daemon's loader),
    as the same data. Nodes that are already ruamel's are left as they are.
    """
    if isinstance(value, (CommentedMap, CommentedSeq)):
        return value
    if isinstance(value, dict):
        node = CommentedMap()
        for k, v in value.items():
            node[to_node(k)] = to_node(v)
        return node
    if isinstance(value, (list, tuple)):
        return CommentedSeq(to_node(v) for v in value)
    if isinstance(value, str):
        if type(value) is str and not _reads_back_as_str(value):
            return DoubleQuotedScalarString(value)
        return value
    if isinstance(value, float) and math.isfinite(value) and "e" in repr(value):
        return _exponent_float(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    raise ValueError(f"cannot write a {type(value).__name__} to config.yaml")


# -- helpers -------------------------------------------------------------------------


def _round_trip() -> YAML:
    # One instance per edit: YAML objects are not safe to share between threads.
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 4096  # never fold a long key or URL onto a second line
    return rt


_PYYAML = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"


def _reads_back_as_str(value: str) -> bool:
    """Whether PyYAML reads C{value}, written plain, as this string."""
    return _PYYAML.resolve(yaml.ScalarNode, value, (True, False)) == _STR_TAG


def _exponent_float(value: float) -> Any:
    # ruamel writes 1e+20, which YAML 1.1 reads as a string; 1.0e+20 is a
    # float in both. Letting ruamel parse the text keeps that spelling.
    mantissa, _, exponent = repr(value).partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return YAML(typ="rt").load(f"{mantissa}e{exponent}")


def _render(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _walk(doc: CommentedMap, path: Path, create: bool) -> Any:
    node: Any = doc
    for i, part in enumerate(path):
        here = _render(path[: i + 1])
        if isinstance(node, CommentedMap) and isinstance(part, str):
            child = node.get(part)
            if child is None:
                if not create:
                    raise KeyError(here)
                child = node[part] = CommentedMap()
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and not isinstance(part, bool):
            if not -len(node) <= part < len(node):
                raise ValueError(f"{here}: no such list item")
            child = node[part]
        else:
            where = _render(path[:i]) or "the document"
            raise ValueError(f"{here}: {where} is not a {'list' if isinstance(part, int) else 'mapping'}")
        node = child
    return node


def _eol_index(container: Any) -> int:
    # Where ruamel keeps the comment on an entry's line, and the comment
    # lines after it: slot 2 of a mapping key, slot 0 of a list item.
    return 2 if isinstance(container, CommentedMap) else 0


def _move_comments_down(doc: CommentedMap) -> str:
    """
    Give each run of full-line comments to the entry it stands above.

    ruamel files the comment lines (and blank lines) between two entries
    under the first: deleting or replacing it would take the heading of the
    next one along, and an item appended to a list or a key added to a
    mapping would land below that heading. Here they become the next
    entry's "before" comments (written out verbatim, indentation and all),
    so each entry owns what is above it. Lines after the last entry are
    returned, to go back at the very end of the file.
    """
    entries: list[tuple[Any, Any, bool]] = []

    def visit(container: Any) -> None:
        for key in list(container) if isinstance(container, CommentedMap) else range(len(container)):
            value = container[key]
            block = isinstance(value, (CommentedMap, CommentedSeq)) and len(value) and not value.fa.flow_style()
            entries.append((container, key, not block))
            if block:
                visit(value)

    visit(doc)
    tail = ""
    for i, (container, key, leaf) in enumerate(entries):
        slots = container.ca.items.get(key)
        at = _eol_index(container)
        token = slots[at] if leaf and slots and len(slots) > at else None
        if not isinstance(token, CommentToken):
            continue
        first, newline, following = token.value.partition("\n")
        if not newline or not following:
            continue
        if first.strip():
            token.value = first + "\n"
        else:
            slots[at] = None
        if i + 1 == len(entries):
            tail = following
            continue
        next_container, next_key, _ = entries[i + 1]
        next_slots = next_container.ca.items.setdefault(next_key, [None, None, None, None])
        next_slots[1] = [CommentToken(following, CommentMark(0))] + list(next_slots[1] or [])
    return tail


def _only_comments(text: str) -> bool:
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and line != "---":
            return False
    return True


def _before_document_start(text: str) -> str | None:
    """The text above an explicit C{---} (comments only), or None without one."""
    offset = 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return text[:offset] if stripped == "---" else None
        offset += len(line)
    return None


def _guess_indent(doc: CommentedMap) -> dict[str, int]:
    """
    The file's own indentation, from the first nested block mapping and the
    first block sequence under a key; L{DEFAULT_INDENT} for what cannot be
    seen.
    """
    seen: dict[str, int] = {}

    def visit(node: Any) -> None:
        if isinstance(node, CommentedSeq):
            for item in node:
                visit(item)
            return
        if not isinstance(node, CommentedMap):
            return
        for key, value in node.items():
            if len(seen) == 3:
                return
            if not isinstance(value, (CommentedMap, CommentedSeq)) or not value or value.fa.flow_style():
                continue
            try:
                key_col = node.lc.key(key)[1]
                if isinstance(value, CommentedMap):
                    seen.setdefault("mapping", value.lc.col - key_col)
                elif "sequence" not in seen:
                    seen["offset"] = value.lc.col - key_col
                    seen["sequence"] = value.lc.item(0)[1] - key_col
            except (AttributeError, KeyError, TypeError, IndexError):
                pass  # a node ruamel did not position (added, not loaded)
            visit(value)

    visit(doc)
    mapping = seen.get("mapping")
    if mapping is None or mapping < 1:
        mapping = None
    sequence, offset = seen.get("sequence"), seen.get("offset")
    if sequence is None or offset is None or offset < 0 or sequence < offset + 2:
        sequence = offset = None
    if mapping is None:
        mapping = sequence - offset if sequence is not None else DEFAULT_INDENT["mapping"]
    if sequence is None:
        if "mapping" in seen:
            sequence, offset = mapping + 2, mapping
        else:
            sequence, offset = DEFAULT_INDENT["sequence"], DEFAULT_INDENT["offset"]
    return {"mapping": mapping, "sequence": sequence, "offset": offset}
