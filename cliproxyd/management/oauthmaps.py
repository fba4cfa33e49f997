"""
The per-channel maps of OAuth accounts, with CLIProxyAPI's routes and body
shapes: C{/oauth-excluded-models} (provider -> model patterns an account
of that provider never serves), C{/oauth-model-alias} (channel ->
C{{name, alias, fork}} entries renaming an account's models) and
C{/oauth-request-scoped-errors} (channel -> C{{status, match, action}}
rules, C{PATCH} C{{"channel", "rules"}}).

  - C{GET} answers C{{"<name>": {channel: [...]}}}, cleaned as CLIProxyAPI
    cleans it (channels in lower case; patterns trimmed, lower case, once
    each; aliases without a name or alias, or equal to their name, or given
    twice, left out).
  - C{PUT} replaces the map: the map itself or C{{"items": map}}.
  - C{PATCH} sets one channel: C{{"provider", "models"}} for exclusions,
    C{{"channel"|"provider", "aliases"}} for aliases; an empty list removes
    the channel (a 404 when it is not there).
  - C{DELETE ?provider=} (exclusions) or C{?channel=}/C{?provider=}
    (aliases) removes one channel.

Changes go to config.yaml and are in effect (the credentials' models are
rebuilt by the reload) when the answer is sent.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.web.iweb import IRequest

from cliproxyd.config.edit import delete_path, set_path
from cliproxyd.management.access import Refused
from cliproxyd.management.fields import Under, check_aliases
from cliproxyd.management.http import Resource, arg, is_read, read_json, respond

EXCLUDED = "oauth-excluded-models"
ALIASES = "oauth-model-alias"
SCOPED = "oauth-request-scoped-errors"


def clean_patterns(channel: str, models: Any) -> list[str]:
    """A channel's exclusions as CLIProxyAPI keeps them; 400 for anything but a list of strings."""
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise Refused(400, f"{EXCLUDED}.{channel}: must be a list of model names or patterns")
    out: list[str] = []
    for model in models:
        model = model.strip().lower()
        if model and model not in out:
            out.append(model)
    return out


def clean_aliases(channel: str, aliases: Any) -> list[dict[str, Any]]:
    """A channel's aliases as CLIProxyAPI keeps them; 400 for a malformed entry."""
    where = f"{ALIASES}.{channel}"
    if not isinstance(aliases, list):
        raise Refused(400, f"{where}: must be a list of {{name, alias}} entries")
    check_aliases(where, aliases)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, entry in enumerate(aliases):
        if not isinstance(entry, dict):
            raise Refused(400, f"{where}[{i}]: must be a mapping with name and alias")
        for key in ("name", "alias", "display-name"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise Refused(400, f"{where}[{i}].{key}: must be a string")
        for key in ("fork", "force-mapping"):
            if entry.get(key) is not None and not isinstance(entry[key], bool):
                raise Refused(400, f"{where}[{i}].{key}: must be true or false")
        name, alias = (entry.get("name") or "").strip(), (entry.get("alias") or "").strip()
        if not name or not alias or name.lower() == alias.lower() or alias.lower() in seen:
            continue
        seen.add(alias.lower())
        clean: dict[str, Any] = {"name": name, "alias": alias}
        for key in ("fork", "force-mapping"):
            if entry.get(key):
                clean[key] = True
        if (display := (entry.get("display-name") or "").strip()):
            clean["display-name"] = display
        out.append(clean)
    return out


def clean_rules(channel: str, rules: Any) -> list[dict[str, Any]]:
    """A channel's request-scoped error rules, as sent: the config loader checks each (naming its path)."""
    if not isinstance(rules, list) or not all(isinstance(rule, dict) for rule in rules):
        raise Refused(400, f"{SCOPED}.{channel}: must be a list of rules ({{status, match, action}})")
    return rules


#: map -> how one channel's list is cleaned
_CLEAN: dict[str, Callable[[str, Any], list[Any]]] = {
    EXCLUDED: clean_patterns, ALIASES: clean_aliases, SCOPED: clean_rules,
}
#: map -> what a PATCH names its list
_ITEMS = {EXCLUDED: "models", ALIASES: "aliases", SCOPED: "rules"}


def _channel(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Refused(400, f"{what} must be a non-empty string")
    return value.strip().lower()


def _clean_map(name: str, data: Any, clean: Callable[[str, Any], list[Any]]) -> dict[str, list[Any]]:
    """A whole map, cleaned: channels in lower case, empty ones left out."""
    if not isinstance(data, dict):
        raise Refused(400, f"{name} must be a mapping of channel to list")
    out: dict[str, list[Any]] = {}
    for channel, value in data.items():
        key = _channel(channel, "a channel name")
        items = clean(key, value)
        if items:
            out[key] = items
    return out


class OAuthMaps(Resource):
    """C{/oauth-excluded-models} and C{/oauth-model-alias}."""

    names = (EXCLUDED, ALIASES, SCOPED)

    async def named(self, request: IRequest, name: str) -> bytes:
        clean = _CLEAN[name]
        if is_read(request):
            data = (await self.context.read_yaml()).get(name)
            try:
                shown = _clean_map(name, data or {}, clean)
            except Refused:
                shown = {}  # the file's map does not load; GET /config.yaml shows it as it is
            return respond(request, {name: shown})
        # CLIProxyAPI's alias fields are kept; a rule's fields are the config's own, checked by it
        kept = Under(name) if name != SCOPED else Under.none()
        if request.method == b"PUT":
            body = read_json(request, dict, 'the body must be a JSON object of channel to list (or {"items": ...})')
            if set(body) == {"items"} and isinstance(body["items"], dict):
                body = body["items"]
            whole = _clean_map(name, body, clean)
            await self.context.edit(lambda doc: _set_map(doc, name, whole), kept)
        elif request.method == b"PATCH":
            channel, items = self._patch(request, name, clean)
            await self.context.edit(lambda doc: _set_channel(doc, name, channel, items), kept)
        else:
            key = "provider" if name == EXCLUDED else "channel"
            given = arg(request, key) or (arg(request, "provider") if name != EXCLUDED else None)
            if not given or not given.strip():
                raise Refused(400, f"say which channel: ?{key}=")
            channel = given.strip().lower()
            await self.context.edit(lambda doc: _set_channel(doc, name, channel, []), kept)
        return respond(request, kept.answer())

    def _patch(self, request: IRequest, name: str, clean: Callable[[str, Any], list[Any]]) -> tuple[str, list[Any]]:
        if name == EXCLUDED:
            body = read_json(request, dict, fields=("provider", "models"))
            channel = _channel(body.get("provider"), "provider")
            return channel, clean(channel, body.get("models") or [])
        items = _ITEMS[name]
        body = read_json(request, dict, fields=("channel", "provider", items))
        channel = _channel(body.get("channel", body.get("provider")), "channel")
        return channel, clean(channel, body.get(items) or [])


def _set_map(doc: Any, name: str, whole: dict[str, list[Any]]) -> None:
    if whole:
        set_path(doc, (name,), whole)
    else:
        delete_path(doc, (name,))


def _set_channel(doc: Any, name: str, channel: str, items: list[Any]) -> None:
    """Set one channel's list; an empty list removes the channel, which must be there (404)."""
    current = doc.get(name)
    present = next((k for k in (current or {}) if isinstance(k, str) and k.strip().lower() == channel), None)
    if items:
        if present is not None and present != channel:
            delete_path(doc, (name, present))
        set_path(doc, (name, channel), items)
        return
    if present is None:
        raise Refused(404, f"{name} has no channel {channel!r}")
    delete_path(doc, (name, present))
    if not doc.get(name):
        delete_path(doc, (name,))
