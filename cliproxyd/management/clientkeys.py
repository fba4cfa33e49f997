"""
Client keys (C{/client-keys}): the C{client-keys} entries of config.yaml
with what each used and what its limits still allow; a key added, changed,
disabled, rotated or removed; its counters reset.

A key made here (C{POST /client-keys}, C{POST /client-keys/<name>/rotate})
is random, shown once in the answer and written to config.yaml only as
C{sha256:<hex>} of it: a 256-bit random key needs no slow hash, and the
request path then checks it with one SHA-256 (bcrypt hashes written by hand
work too, checked in a thread). A key is never shown again: listings show
how it is kept (C{plain}, C{sha256}, C{bcrypt}) and, for a plain one, its
fingerprint.

Changes go through the config file (comments kept) and a reload, like
every other setting; counters live in the StateStore.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from twisted.web.iweb import IRequest

from cliproxyd.config.edit import delete_path, set_path, to_node
from cliproxyd.config.load import CLIENT_KEY_FIELDS
from cliproxyd.config.model import ClientKey
from cliproxyd.management.access import Refused
from cliproxyd.management.http import Resource, read_json, respond, route

#: What a new key starts with (so it can be told from other secrets in a leak scan).
KEY_PREFIX = "sk-cpd-"
#: The fields a POST or PATCH may set (the key itself only by rotation).
SETTABLE = tuple(f for f in CLIENT_KEY_FIELDS if f != "key")


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hashed(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def _kept(key: ClientKey) -> dict[str, str]:
    kind = key.hashed or "plain"
    out = {"stored": kind}
    if kind == "plain":
        out["fingerprint"] = hashlib.sha256(key.key.encode("utf-8")).hexdigest()[:12]
    return out


def _entry(key: ClientKey) -> dict[str, Any]:
    """A key's settings as config.yaml names them (never the key)."""
    out: dict[str, Any] = {"name": key.name, **_kept(key), "disabled": key.disabled}
    for field, value in (("models", list(key.models)), ("excluded-models", list(key.excluded_models)),
                         ("providers", list(key.providers)), ("rpm", key.rpm), ("tpm", key.tpm),
                         ("daily-tokens", key.daily_tokens), ("monthly-tokens", key.monthly_tokens),
                         ("max-parallel", key.max_parallel), ("expires", key.expires)):
        if value:
            out[field] = value
    return out


class ClientKeys(Resource):
    """C{/client-keys} and C{/client-keys/<name>}, C{.../rotate}, C{.../reset}."""

    def _keys(self) -> tuple[ClientKey, ...]:
        gen = self.context.generation()
        return gen.config.client_keys if gen is not None else ()

    def _key(self, name: str) -> ClientKey:
        for key in self._keys():
            if key.name == name:
                return key
        raise Refused(404, f"no client key is named {name!r}")

    def report(self, key: ClientKey) -> dict[str, Any]:
        meter = self.context.keys
        return {**_entry(key), "usage": meter.report(key) if meter is not None else {}}

    @route("/client-keys", "GET")
    async def list(self, request: IRequest) -> bytes:
        """Every key (never the key itself), with its usage and what its limits still allow."""
        return respond(request, {"client-keys": [self.report(k) for k in self._keys()]})

    @route("/client-keys/<name>", "GET")
    async def one(self, request: IRequest, name: str) -> bytes:
        return respond(request, self.report(self._key(name)))

    @route("/client-keys", "POST")
    async def add(self, request: IRequest) -> bytes:
        """
        Add a key: C{{"name", ...settings}}. The answer holds the key, once
        (C{"key"}); config.yaml holds only its hash.
        """
        data = read_json(request, dict, fields=SETTABLE)
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise Refused(400, "'name' is required and must be a non-empty string")
        name = name.strip()
        if any(k.name == name for k in self._keys()):
            raise Refused(409, f"a client key is already named {name!r}")
        key = new_key()
        entry = {"name": name, "key": hashed(key), **{k: v for k, v in data.items() if k != "name"}}

        def add(doc: Any) -> None:
            seq = doc.get("client-keys")
            if seq is None:
                set_path(doc, ("client-keys",), [entry])
            elif not isinstance(seq, list):
                raise ValueError("client-keys: is not a list")
            else:
                seq.append(to_node(entry))

        await self.context.edit(add)
        if self.context.keys is not None:
            self.context.keys.reset(name)  # nothing left over from a key of that name before
        return respond(request, {**self.report(self._key(name)), "key": key}, 201)

    @route("/client-keys/<name>", "PATCH")
    async def change(self, request: IRequest, name: str) -> bytes:
        """Change a key's settings: C{{field: value}}, C{null} removing a field (C{{"disabled": true}} disables it)."""
        data = read_json(request, dict, fields=tuple(f for f in SETTABLE if f != "name"))
        self._key(name)

        def change(doc: Any) -> None:
            index = _index(doc, name)
            for field, value in data.items():
                if value is None:
                    delete_path(doc, ("client-keys", index, field))
                else:
                    set_path(doc, ("client-keys", index, field), value)

        await self.context.edit(change)
        return respond(request, self.report(self._key(name)))

    @route("/client-keys/<name>", "DELETE")
    async def remove(self, request: IRequest, name: str) -> bytes:
        """Remove a key, and forget what it used."""
        self._key(name)

        def remove(doc: Any) -> None:
            seq = doc["client-keys"]
            del seq[_index(doc, name)]
            if not seq:
                delete_path(doc, ("client-keys",))

        await self.context.edit(remove)
        if self.context.keys is not None:
            self.context.keys.reset(name)
        return respond(request, {"removed": name})

    @route("/client-keys/<name>/rotate", "POST")
    async def rotate(self, request: IRequest, name: str) -> bytes:
        """A new key for C{name}, shown once; the old one stops working. Its counters go on."""
        self._key(name)
        key = new_key()
        await self.context.edit(lambda doc: set_path(doc, ("client-keys", _index(doc, name), "key"), hashed(key)))
        return respond(request, {**self.report(self._key(name)), "key": key})

    @route("/client-keys/<name>/reset", "POST")
    async def reset(self, request: IRequest, name: str) -> bytes:
        """Forget what C{name} used: its windows start empty."""
        key = self._key(name)
        if self.context.keys is not None:
            self.context.keys.reset(name)
        return respond(request, self.report(key))


def _index(doc: Any, name: str) -> int:
    """Where entry C{name} is in the file's C{client-keys} (the file may have changed since the config loaded)."""
    for i, entry in enumerate(doc.get("client-keys") or ()):
        if hasattr(entry, "get") and entry.get("name") == name:
            return i
    raise Refused(404, f"no client key is named {name!r}")
