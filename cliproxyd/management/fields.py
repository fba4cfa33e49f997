"""
The fields of the provider lists' entries as CLIProxyAPI knows them, so the
list routes take what its tools send (the Management Center sends back every
field it read, C{weight}, C{test-model}, C{cloak} and all) and still name a
field that is wrong everywhere (C{prority}).

A field here that cliproxyd's config does not act on yet is written to
config.yaml as sent (it is there for CLIProxyAPI's tools, and for
cliproxyd once it does); the answer lists such fields under C{"ignored"}.
C{auth-index} is an answer-only field of CLIProxyAPI: it is dropped.
"""

from __future__ import annotations

from typing import Any, Collection

from cliproxyd.management.access import Refused

#: Fields CLIProxyAPI adds to its answers, never stored: dropped from what is written.
ANSWER_ONLY = ("auth-index",)

_MODEL = frozenset({
    "name", "alias", "display-name", "max-context-length", "force-mapping", "image", "input-modalities",
    "output-modalities", "is-compat", "thinking", "priority", "test-model",
})
_KEY = frozenset({
    "api-key", "priority", "weight", "prefix", "base-url", "proxy-url", "models", "headers", "excluded-models",
    "disable-cooling", "request-retry", "request-scoped-errors", "disabled", *ANSWER_ONLY,
})
_KEY_ENTRY = frozenset({"api-key", "weight", "proxy-url", *ANSWER_ONLY})
_CLOAK = frozenset({"mode", "strict-mode", "sensitive-words", "cache-user-id"})
_ALIAS = frozenset({"name", "alias", "fork", "display-name", "force-mapping"})

#: list -> the fields of its entries
ENTRY_FIELDS: dict[str, frozenset[str]] = {
    "gemini-api-key": _KEY,
    "claude-api-key": _KEY | {"cloak", "fingerprint-profile", "experimental-cch-signing",
                              "rebuild-mid-system-message"},
    "codex-api-key": _KEY | {"websockets", "alpha-search"},
    "xai-api-key": _KEY | {"websockets"},
    "vertex-api-key": _KEY,
    "interactions-api-key": _KEY,
    "openai-compatibility": frozenset({
        "name", "priority", "disabled", "prefix", "base-url", "api-key-entries", "api-keys", "models", "headers",
        "support-prompt-cache-key", "disable-cooling", "request-retry", "request-scoped-errors", "test-model",
        "excluded-models", *ANSWER_ONLY,
    }),
}

#: field -> the fields of each of its items (a list of mappings) or of itself (a mapping)
_NESTED: dict[str, frozenset[str]] = {"models": _MODEL, "api-key-entries": _KEY_ENTRY, "cloak": _CLOAK}


def _unknown(where: str, key: Any, known: Collection[str]) -> Refused:
    return Refused(400, f"{where}.{key}: unknown key; the fields CLIProxyAPI and cliproxyd know here are "
                        f"{', '.join(sorted(known))}")


def _check_mapping(where: str, data: dict[str, Any], known: Collection[str]) -> None:
    for key in list(data):
        if key not in known:
            raise _unknown(where, key, known)
        if key in ANSWER_ONLY:
            del data[key]
        elif key == "weight" and data[key] is not None and (isinstance(data[key], bool)
                                                             or not isinstance(data[key], int)):
            # Kept for a routing that reads it: a weight that is no whole number never is one.
            raise Refused(400, f"{where}.weight: must be a whole number")


def check_entry(name: str, where: str, entry: Any) -> None:
    """
    Refuse (400, naming its path) a field of C{entry}, an entry of list
    C{name} at C{where}, that neither CLIProxyAPI nor cliproxyd knows;
    drop the answer-only ones. Types are the config loader's business.
    """
    if not isinstance(entry, dict):
        return
    check_fields(name, where, entry)


def check_fields(name: str, where: str, fields: dict[str, Any]) -> None:
    """L{check_entry} for a mapping of fields of an entry of C{name} (a whole entry or a PATCH's C{value})."""
    _check_mapping(where, fields, ENTRY_FIELDS[name])
    for key, known in _NESTED.items():
        value = fields.get(key)
        if isinstance(value, dict):
            _check_mapping(f"{where}.{key}", value, known)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    _check_mapping(f"{where}.{key}[{i}]", item, known)


def check_aliases(where: str, aliases: Any) -> None:
    """Refuse a field of an C{oauth-model-alias} entry that neither CLIProxyAPI nor cliproxyd knows."""
    if isinstance(aliases, list):
        for i, item in enumerate(aliases):
            if isinstance(item, dict):
                _check_mapping(f"{where}[{i}]", item, _ALIAS)


class Under:
    """
    A C{tolerate} for L{Context.edit}: any key below list or mapping C{name}
    (whose fields were checked here first); C{kept} is what it let through.
    """

    def __init__(self, name: str) -> None:
        self._prefixes: tuple[str, ...] = (f"{name}[", f"{name}.")
        self.kept: list[str] = []

    @classmethod
    def none(cls) -> "Under":
        """One that lets nothing through: every key must be the config's."""
        under = cls("")
        under._prefixes = ()
        return under

    def __call__(self, path: str) -> bool:
        if path.startswith(self._prefixes):
            self.kept.append(path)
            return True
        return False

    def answer(self) -> dict[str, Any]:
        """The answer to the write: C{ok}, and the fields kept that cliproxyd does not act on."""
        out: dict[str, Any] = {"status": "ok"}
        if self.kept:
            out["ignored"] = sorted(set(self.kept))
        return out
