"""
The list settings (C{/<name>}, see L{LISTS}): client API keys and the
provider lists. C{GET} answers C{{"<name>": [...]}}; C{PUT} replaces the
list with a JSON array (or C{{"items": [...]}}); C{PATCH} changes one entry,
named by C{index} or by its key or name (C{match}, C{name}, C{old},
C{api-key}), with C{{"value": {fields}}} (a field set to C{null} is
removed), or for the API keys C{{"value"|"new": "key"}}; C{DELETE} removes
the entry C{?index=}, C{?api-key=}, C{?name=} or C{?value=} names.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from cliproxyd.config.edit import delete_path, set_path
from cliproxyd.management.access import Refused
from cliproxyd.management.fields import Under, check_entry, check_fields
from cliproxyd.management.http import Resource, arg, is_read, read_json, respond, whole_number

#: List settings: route -> the field that identifies an entry (for PATCH match and DELETE).
LISTS = {
    "api-keys": None,
    "openai-compatibility": "name",
    "claude-api-key": "api-key",
    "gemini-api-key": "api-key",
    "codex-api-key": "api-key",
    "xai-api-key": "api-key",
    "vertex-api-key": "api-key",
    "interactions-api-key": "api-key",
}

#: CLIProxyAPI's lists of providers cliproxyd does not serve: C{GET} shows
#: what config.yaml has; a write is a 501 saying what to do instead.
READ_ONLY: dict[str, str] = {}


#: What a PATCH body may say: which entry (one of the first five), and its new value.
_PATCH_FIELDS = ("index", "match", "name", "old", "api-key", "value", "new")


class Lists(Resource):
    """The list settings of L{LISTS}."""

    names = {**LISTS, **READ_ONLY}

    async def named(self, request: IRequest, name: str) -> bytes:
        if is_read(request):
            data = await self.context.read_yaml()
            return respond(request, {name: data.get(name) or []})
        if name in READ_ONLY:
            raise Refused(501, READ_ONLY[name])
        kept = Under(name)
        if request.method == b"PUT":
            await self._replace(request, name, kept)
        elif request.method == b"PATCH":
            await self._change(request, name, kept)
        else:
            await self._remove(request, name)
        return respond(request, kept.answer())

    async def _replace(self, request: IRequest, name: str, kept: Under) -> None:
        items = read_json(request)
        if isinstance(items, dict) and isinstance(items.get("items"), list):
            items = items["items"]
        if not isinstance(items, list):
            raise Refused(400, 'the body must be a JSON array or {"items": [...]}')
        if LISTS[name] is not None:
            for i, entry in enumerate(items):
                check_entry(name, f"{name}[{i}]", entry)
        await self.context.edit(lambda doc: _set_list(doc, name, items), kept)

    async def _change(self, request: IRequest, name: str, kept: Under) -> None:
        ident = LISTS[name]
        patch = read_json(request, dict, fields=_PATCH_FIELDS)
        base_url = arg(request, "base-url")

        def apply(doc: Any) -> None:
            seq = _entries(doc, name)
            if ident is None and "old" in patch and "new" in patch and _absent(seq, patch["old"]):
                # CLIProxyAPI's {"old", "new"} adds the new key when the old one is not there.
                new = _key_text(patch["new"])
                if doc.get(name) is None:
                    set_path(doc, (name,), [new])
                else:
                    doc[name].append(new)
                return
            index = _find(seq, patch, ident, base_url)
            if ident is None:
                set_path(doc, (name, index), _key_text(patch.get("value", patch.get("new"))))
                return
            fields = patch.get("value")
            if not isinstance(fields, dict):
                raise Refused(400, '"value" must be an object of the fields to change')
            check_fields(name, f"{name}[{index}]", fields)
            for field_name, field_value in fields.items():
                if field_value is None:
                    delete_path(doc, (name, index, field_name))
                else:
                    set_path(doc, (name, index, field_name), field_value)

        await self.context.edit(apply, kept)

    async def _remove(self, request: IRequest, name: str) -> None:
        which: dict[str, Any] = {}
        index = whole_number(request, "index")
        if index is not None:
            which["index"] = index
        for key in ("api-key", "name", "value"):
            if (given := arg(request, key)) is not None and given.strip():
                which = {"match": given.strip()}  # named, rather than counted, as CLIProxyAPI does
        if not which:
            raise Refused(400, "say which entry: ?index=, ?api-key=, ?name= or ?value=")
        base_url = arg(request, "base-url")

        def remove(doc: Any) -> None:
            seq = _entries(doc, name)
            del seq[_find(seq, which, LISTS[name], base_url)]
            if not seq:
                # An emptied list goes with its key: ruamel would write the comments
                # that were on its items above a "[]" the file could not load.
                delete_path(doc, (name,))

        await self.context.edit(remove)


def _set_list(doc: Any, name: str, items: list[Any]) -> None:
    """Replace the list; an empty one removes the key (see L{Lists._remove})."""
    if items:
        set_path(doc, (name,), items)
    else:
        delete_path(doc, (name,))


def _entries(doc: Any, name: str) -> Any:
    seq = doc.get(name)
    return [] if seq is None else seq


def _key_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Refused(400, "value must be a non-empty string")
    return value.strip()


def _absent(seq: Any, old: Any) -> bool:
    return isinstance(old, str) and old not in list(seq)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _find(seq: Any, patch: dict[str, Any], ident: str | None, base_url: str | None = None) -> int:
    """
    The index of the entry a PATCH or DELETE names: by C{index}, or by
    C{match}/C{name}/C{old}/C{api-key}/C{value}; with C{base_url} (CLIProxyAPI's
    C{?base-url=}, empty for an entry without one) an entry of a key list
    must have that C{base-url} too. A key that names more than one entry
    is refused: say which by C{index} or C{base-url}.
    """
    if "index" in patch:
        index = patch["index"]
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(seq):
            raise Refused(400, f"index must be between 0 and {len(seq) - 1}" if seq else "the list is empty")
        return index
    wanted = next((patch[k] for k in ("match", "name", "old", "api-key") if isinstance(patch.get(k), str)), None)
    if wanted is None and ident is None and isinstance(patch.get("value"), str):
        wanted = patch["value"]
    if wanted is None:
        raise Refused(400, "say which entry: index, or match/name (the entry's key or name)")
    wanted = wanted.strip()
    found = []
    for i, entry in enumerate(seq):
        if ident is None:
            if _text(entry) == wanted:
                found.append(i)
            continue
        if not hasattr(entry, "get") or _text(entry.get(ident)) != wanted:
            continue
        if ident == "api-key" and base_url is not None and _text(entry.get("base-url")) != base_url.strip():
            continue
        found.append(i)
    if not found:
        raise Refused(404, "no such entry")
    if len(found) > 1 and ident == "api-key":
        raise Refused(400, "more than one entry has this api-key: say which by index, or by ?base-url=")
    return found[0]
