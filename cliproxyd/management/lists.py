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
from cliproxyd.management.http import Resource, arg, read_json, respond, whole_number

#: List settings: route -> the field that identifies an entry (for PATCH match and DELETE).
LISTS = {
    "api-keys": None,
    "openai-compatibility": "name",
    "claude-api-key": "api-key",
    "gemini-api-key": "api-key",
    "codex-api-key": "api-key",
}


#: What a PATCH body may say: which entry (one of the first five), and its new value.
_PATCH_FIELDS = ("index", "match", "name", "old", "api-key", "value", "new")


class Lists(Resource):
    """The list settings of L{LISTS}."""

    names = LISTS

    async def named(self, request: IRequest, name: str) -> bytes:
        if request.method == b"GET":
            data = await self.context.read_yaml()
            return respond(request, {name: data.get(name) or []})
        if request.method == b"PUT":
            await self._replace(request, name)
        elif request.method == b"PATCH":
            await self._change(request, name)
        else:
            await self._remove(request, name)
        return respond(request, {"status": "ok"})

    async def _replace(self, request: IRequest, name: str) -> None:
        items = read_json(request)
        if isinstance(items, dict) and isinstance(items.get("items"), list):
            items = items["items"]
        if not isinstance(items, list):
            raise Refused(400, 'the body must be a JSON array or {"items": [...]}')
        await self.context.edit(lambda doc: set_path(doc, (name,), items))

    async def _change(self, request: IRequest, name: str) -> None:
        ident = LISTS[name]
        patch = read_json(request, dict, fields=_PATCH_FIELDS)

        def apply(doc: Any) -> None:
            seq = _entries(doc, name)
            index = _find(seq, patch, ident)
            if ident is None:
                value = patch.get("value", patch.get("new"))
                if not isinstance(value, str) or not value.strip():
                    raise Refused(400, "value must be a non-empty string")
                set_path(doc, (name, index), value.strip())
                return
            fields = patch.get("value")
            if not isinstance(fields, dict):
                raise Refused(400, '"value" must be an object of the fields to change')
            for field_name, field_value in fields.items():
                if field_value is None:
                    delete_path(doc, (name, index, field_name))
                else:
                    set_path(doc, (name, index, field_name), field_value)

        await self.context.edit(apply)

    async def _remove(self, request: IRequest, name: str) -> None:
        which: dict[str, Any] = {}
        index = whole_number(request, "index")
        if index is not None:
            which["index"] = index
        for key in ("api-key", "name", "value"):
            if (given := arg(request, key)) is not None:
                which["match"] = given
        if not which:
            raise Refused(400, "say which entry: ?index=, ?api-key=, ?name= or ?value=")

        def remove(doc: Any) -> None:
            seq = _entries(doc, name)
            del seq[_find(seq, which, LISTS[name])]

        await self.context.edit(remove)


def _entries(doc: Any, name: str) -> Any:
    seq = doc.get(name)
    if seq is None:
        raise Refused(404, f"{name} is empty")
    return seq


def _find(seq: Any, patch: dict[str, Any], ident: str | None) -> int:
    """The index of the entry a PATCH or DELETE names: by C{index}, or by C{match}/C{name}/C{old}/C{value}."""
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
    for i, entry in enumerate(seq):
        key = entry if ident is None else (entry.get(ident) if hasattr(entry, "get") else None)
        if key == wanted:
            return i
    raise Refused(404, "no such entry")
