"""
The credential files of C{auth-dir} (C{/auth-files}): listed with each
account's state, uploaded (a JSON body, or one or several files of a
C{multipart/form-data} form, as the Management Center sends them),
downloaded, deleted, enabled or disabled and edited, and the models each
serves (C{/auth-files/models}) or each channel knows
(C{/model-definitions/<channel>}). The files are read and written through
an L{AuthDir} (atomic writes, one change at a time, off the reactor
thread); every change is followed by a reload, so it is in effect when the
answer is sent.

The answers have CLIProxyAPI's shapes, so its Management Center works
unchanged: list entries carry C{auth_index}, the counters (C{success},
C{failed}, C{recent_requests}), C{unavailable}, C{runtime_only},
C{source}, C{account_type} and, for Codex, the claims of the C{id_token}.
"""

from __future__ import annotations

import json
import re
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Callable
from urllib.parse import quote

from twisted.web.iweb import IRequest

from cliproxyd.credentials.authdir import AuthDir, InvalidName, valid_name
from cliproxyd.credentials.authfiles import (
    DEFAULT_VERTEX_LOCATION,
    OAUTH_MODELS,
    OAUTH_TYPES,
    AuthFileError,
    OAuthAccount,
    daemon_files,
    format_time,
    jwt_claims,
    parse_account,
    parse_time,
)
from cliproxyd.credentials.index import auth_index
from cliproxyd.credentials.model import API_KEY_PROVIDERS
from cliproxyd.management.access import Refused
from cliproxyd.management.http import JSON, Resource, arg, args, parse_json, read_body, read_json, respond, route

#: What a C{PATCH /auth-files/fields} body may hold: field -> the file's key
#: it is kept under (the panel sends some in two spellings).
FIELDS = {
    "prefix": "prefix", "proxy_url": "proxy_url", "headers": "headers", "priority": "priority",
    "weight": "weight", "note": "note", "disable_cooling": "disable_cooling", "disable-cooling": "disable_cooling",
    "websockets": "websockets", "using_api": "using_api", "excluded_models": "excluded_models",
    "excluded-models": "excluded_models", "request_retry": "request_retry", "expired": "expired",
}
#: What identifies the file in a C{fields} or C{status} body (C{auth_index} is the panel's extra).
WHO = ("name", "auth_index")

#: The models of each channel C{/model-definitions/<channel>} knows, with who makes them.
CHANNELS: dict[str, tuple[tuple[str, ...], str]] = {
    "claude": (OAUTH_MODELS["claude"], "anthropic"),
    "codex": (OAUTH_MODELS["codex"], "openai"),
    "gemini-cli": (OAUTH_MODELS["gemini-cli"], "google"),
    "antigravity": (OAUTH_MODELS["antigravity"], "antigravity"),
    "xai": (OAUTH_MODELS["xai"], "xai"),
    "kimi": (OAUTH_MODELS["kimi"], "moonshot"),
    "vertex": (OAUTH_MODELS["vertex"], "google"),
    "qwen": (OAUTH_MODELS["qwen"], "qwen"),
    "iflow": (OAUTH_MODELS["iflow"], "iflow"),
    "gemini": (next(p.models for p in API_KEY_PROVIDERS if p.provider == "gemini"), "google"),
}
_OWNERS = {name: owner for name, (_, owner) in CHANNELS.items()}

_MULTIPART = "multipart/form-data"


def _name(value: Any) -> str:
    try:
        return valid_name(value if isinstance(value, str) else None)
    except InvalidName as e:
        raise Refused(400, str(e)) from None


def _attachment(name: str) -> bytes:
    """A Content-Disposition for the file C{name} (a valid name: no quotes, no control characters)."""
    if name.isascii():
        return f'attachment; filename="{name}"'.encode("ascii")
    fallback = name.encode("ascii", "replace").decode("ascii")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}".encode("ascii")


def _time(seconds: float | None) -> str | None:
    return format_time(seconds) if seconds is not None else None


def id_token_claims(account: OAuthAccount) -> dict[str, Any] | None:
    """What CLIProxyAPI shows of a Codex account's C{id_token}: account id, plan, subscription window."""
    if account.type != "codex" or not isinstance(account.data.get("id_token"), str):
        return None
    auth = jwt_claims(account.data["id_token"]).get("https://api.openai.com/auth")
    if not isinstance(auth, dict):
        return None
    out: dict[str, Any] = {}
    for key, shown in (("chatgpt_account_id", "chatgpt_account_id"), ("chatgpt_plan_type", "plan_type")):
        if isinstance(auth.get(key), str) and auth[key].strip():
            out[shown] = auth[key].strip()
    for key in ("chatgpt_subscription_active_start", "chatgpt_subscription_active_until"):
        if auth.get(key) is not None:
            out[key] = auth[key]
    return out or None


def multipart_files(request: IRequest, raw: bytes) -> list[tuple[str, bytes]] | None:
    """
    The files of a C{multipart/form-data} body, C{(file name, bytes)} in
    order; None for a body of another type.

    @raise Refused: 400, a form without a file, or a file part without a name.
    """
    form = multipart_form(request, raw)
    if form is None:
        return None
    files = form[0]
    if not files:
        raise Refused(400, "no files uploaded: send each file as a 'file' part with a file name")
    return files


def multipart_form(request: IRequest, raw: bytes) -> tuple[list[tuple[str, bytes]], dict[str, str]] | None:
    """
    A C{multipart/form-data} body's files, C{(file name, bytes)} in order,
    and its plain fields (the first of each name); None for a body of another type.

    @raise Refused: 400, a body that is not a multipart form.
    """
    kind = (request.getHeader(b"content-type") or b"").decode("latin-1")
    if kind.split(";")[0].strip().lower() != _MULTIPART:
        return None
    head = f"Content-Type: {kind}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(head + raw)
    if not message.is_multipart():
        raise Refused(400, "invalid multipart form: no parts (is the boundary right?)")
    files, fields = [], {}
    for part in message.iter_parts():
        if part.get_content_disposition() != "form-data":
            continue
        if part.get_param("filename", header="content-disposition") is None:
            name = part.get_param("name", header="content-disposition")
            if isinstance(name, str):
                fields.setdefault(name, (part.get_payload(decode=True) or b"").decode("utf-8", "replace"))
            continue
        filename = part.get_filename() or ""
        files.append((filename.replace("\\", "/").rsplit("/", 1)[-1], part.get_payload(decode=True) or b""))
    return files, fields


def _check_field(key: str, value: Any) -> Any:
    """C{value} for the file's C{key}, or None to remove it; a 400 naming the field for a wrong type."""
    if key in ("prefix", "proxy_url", "note"):
        if value is not None and not isinstance(value, str):
            raise Refused(400, f"{key} must be a string")
        return value.strip() or None if isinstance(value, str) else None
    if key in ("priority", "weight", "request_retry"):
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise Refused(400, f"{key} must be a whole number")
        if key != "priority" and value < 0:
            raise Refused(400, f"{key} must not be negative")
        return value if value or key != "priority" else None
    if key in ("disable_cooling", "websockets", "using_api"):
        if value is not None and not isinstance(value, bool):
            raise Refused(400, f"{key} must be true or false")
        return value
    if key == "headers":
        if value is None:
            return None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise Refused(400, "headers must be an object of strings")
        return {k.strip(): v for k, v in value.items() if k.strip() and v.strip()} or None
    if key == "excluded_models":
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise Refused(400, f"{key} must be a list of strings")
        return [v.strip() for v in value if v.strip()] or None
    # expired
    if not isinstance(value, str) or parse_time(value) is None:
        raise Refused(400, "expired must be a time (RFC 3339)")
    return value


class AuthFiles(Resource):
    """C{/auth-files}, C{/auth-files/download}, C{/auth-files/status}, C{/auth-files/fields},
    C{/auth-files/models} and C{/model-definitions/<channel>}."""

    _dir: AuthDir | None = None

    def _store(self) -> AuthDir:
        """The running config's auth-dir (a 409 when it has none), without the daemon's own files."""
        gen = self.context.generation()
        if gen is None or not gen.config.auth_dir:
            raise Refused(409, "auth-dir is not set in the config")
        skip = daemon_files(gen.config)
        if self._dir is None or self._dir.directory != gen.config.auth_dir or self._dir.skip != skip:
            self._dir = AuthDir(gen.config.auth_dir, self.context.run_in_thread, skip)
        return self._dir

    @route("/auth-files", "GET")
    async def files(self, request: IRequest) -> bytes:
        """
        Every C{*.json} file with the account in it and that account's
        state, or why it is not used; C{?name=} or C{?auth_index=} keep one.
        """
        store = self._store()
        only_name, only_index = arg(request, "name"), arg(request, "auth_index")
        gen = self.context.generation()
        by_name: dict[str, list[Any]] = {}
        for c in gen.creds:
            if c.account is not None:
                by_name.setdefault(c.account.name, []).append(c)
        files = []
        for info in await store.files():
            if only_name is not None and info.name != only_name:
                continue
            creds = by_name.get(info.name) or [None]
            # A Gemini CLI file split into one credential per project
            # (quota-exceeded.switch-project) lists each further project as an
            # entry of its own, as CLIProxyAPI lists its per-project auths.
            entries = [self._entry(info, creds[0])] + [self._project_entry(info, c) for c in creds[1:]]
            files.extend(e for e in entries if only_index is None or e["auth_index"] == only_index)
        return respond(request, {"files": files})

    def _project_entry(self, info: Any, cred: Any) -> dict[str, Any]:
        """The entry of one further project of a file: its own state, runtime only (the file is the first's)."""
        entry = self._entry(info, cred)
        entry.update(runtime_only=True, project_id=cred.project,
                     label=f"{cred.account.email or info.name} [{cred.project}]")
        return entry

    def _entry(self, info: Any, cred: Any) -> dict[str, Any]:
        """One file of the listing, in CLIProxyAPI's shape (and a few fields of ours)."""
        gen = self.context.generation()
        now = self.context.clock.seconds()
        account: OAuthAccount | None = cred.account if cred else gen.accounts.get(info.name)
        entry: dict[str, Any] = {
            "id": info.name, "auth_index": None, "name": info.name, "size": info.size,
            "modtime": format_time(info.mtime), "updated_at": format_time(info.mtime),
            "source": "file", "path": f"{gen.config.auth_dir.rstrip('/')}/{info.name}", "runtime_only": False,
            "disabled": False, "unavailable": False, "success": 0, "failed": 0, "recent_requests": [],
        }
        problem = gen.problems.get(info.name)
        if account is None:
            entry.update(status="error" if problem else "ignored", status_message=problem or
                         "not an OAuth credential cliproxyd serves")
            return entry
        refresh = self.context.refresher.status(account) if self.context.refresher else None
        states = self.context.state.model_states(cred.id) if cred else {}
        blocked = [s.next_retry_at for s in states.values() if s.blocked(now)]
        served = {r.state_key for r in cred.routes} if cred else set()
        unavailable = bool(served) and served <= {k for k, s in states.items() if s.blocked(now)}
        disabled = bool(cred.disabled) if cred else bool(account.data.get("disabled") is True)
        stats = self.context.state.stats(cred.id) if cred else None
        recent = self.context.recent
        data = account.data
        last_refresh = refresh.last_refresh if refresh else account.last_refresh
        if disabled:
            status, message = "disabled", "disabled via management API"
        elif problem:
            status, message = "error", problem
        else:
            status = "error" if unavailable else ("cooling" if blocked else "active")
            message = (refresh.last_error if refresh else "") or (stats.last_error if unavailable and stats else "")
        entry.update(
            id=cred.id if cred else info.name,
            auth_index=auth_index(cred) if cred else None,
            type=account.type,
            provider=account.type,
            email=account.email,
            label=account.email or info.name,
            account_type="oauth",
            account=account.email,
            disabled=disabled,
            unavailable=unavailable,
            status=status,
            status_message=message,
            success=stats.successes if stats else 0,
            failed=stats.failures if stats else 0,
            recent_requests=recent.snapshot(cred.id) if recent is not None and cred else [],
            priority=cred.priority if cred else 0,
            prefix=cred.prefix if cred else "",
            note=str(data.get("note") or ""),
            expires_at=_time(account.expires_at),
            last_refresh=_time(last_refresh),
            refreshing=bool(refresh and refresh.refreshing),
            next_retry_after=_time(min(blocked)) if blocked else None,
            models=sorted({r.name for r in cred.routes}) if cred else [],
        )
        if account.project_id:
            entry["project_id"] = account.project_id
        for key in ("weight", "request_retry"):
            if isinstance(data.get(key), int) and not isinstance(data.get(key), bool):
                entry[key] = data[key]
        for key in ("websockets", "disable_cooling", "using_api"):
            if isinstance(data.get(key), bool):
                entry[key] = data[key]
        claims = id_token_claims(account)
        if claims:
            entry["id_token"] = claims
            if "plan_type" in claims:
                entry["plan_type"] = claims["plan_type"]
        return entry

    @route("/auth-files/models", "GET")
    async def models(self, request: IRequest) -> bytes:
        """The models the file C{?name=} serves, as clients name them: C{{"models": [{"id", "type", "owned_by"}]}}."""
        name = arg(request, "name")
        if not name:
            raise Refused(400, "name is required (?name=x.json)")
        gen = self.context.generation()
        cred = next((c for c in gen.creds if c.account is not None and c.account.name == name), None)
        if cred is None:
            if name not in gen.accounts and name not in gen.problems:
                raise Refused(404, f"no auth file {name!r} is loaded")
            return respond(request, {"models": []})
        owner = _OWNERS.get(cred.provider, cred.provider)
        return respond(request, {"models": [{"id": m, "object": "model", "type": cred.provider, "owned_by": owner}
                                            for m in sorted({r.name for r in cred.routes})]})

    @route("/model-definitions/<channel>", "GET")
    async def definitions(self, request: IRequest, channel: str) -> bytes:
        """The models a channel (C{claude}, C{codex}, C{gemini-cli}, C{antigravity}, C{gemini}) serves by default."""
        key = channel.strip().lower().replace("_", "-")
        if key not in CHANNELS:
            return respond(request, {"error": f"unknown channel: one of {', '.join(CHANNELS)}",
                                     "channel": channel}, 400)
        models, owner = CHANNELS[key]
        return respond(request, {"channel": key, "models": [
            {"id": m, "object": "model", "type": key, "owned_by": owner} for m in models]})

    @route("/vertex/import", "POST")
    async def vertex(self, request: IRequest) -> bytes:
        """
        The panel's Vertex import: a service account's key file (the form's
        C{file}; or the key as the body) and an optional C{location} (form
        field or query; C{us-central1} by default) become
        C{vertex-PROJECT.json}, with CLIProxyAPI's fields.
        """
        raw = read_body(request)
        form = multipart_form(request, raw)
        location = ""
        if form is not None:
            files, fields = form
            if not files:
                raise Refused(400, "file required")
            raw, location = files[0][1], fields.get("location", "")
        try:
            sa = parse_json(raw)
        except ValueError as e:
            raise Refused(400, f"invalid json: {e}") from None
        if not isinstance(sa, dict):
            raise Refused(400, "invalid service account: not a JSON object")
        project = str(sa.get("project_id") or "").strip()
        if not project:
            raise Refused(400, "project_id missing")
        location = location.strip() or (arg(request, "location") or "").strip() or DEFAULT_VERTEX_LOCATION
        email = str(sa.get("client_email") or "").strip()
        name = _name(f"vertex-{re.sub(r'[^A-Za-z0-9._-]+', '-', project).strip('-') or 'project'}.json")
        record = {"service_account": sa, "project_id": project, "email": email, "location": location,
                  "type": "vertex"}
        data = json.dumps(record, indent=2).encode() + b"\n"
        await self._store().write(name, self._checked(name, data))
        await self.context.reload()
        return respond(request, {"status": "ok", "auth-file": name, "project_id": project, "email": email,
                                 "location": location})

    @route("/auth-files/download", "GET")
    async def download(self, request: IRequest) -> bytes:
        """The file C{?name=}, as an attachment."""
        name = _name(arg(request, "name"))
        try:
            data = await self._store().read(name)
        except FileNotFoundError:
            raise Refused(404, f"no auth file {name!r}") from None
        request.setHeader(b"content-type", JSON)
        request.setHeader(b"content-disposition", _attachment(name))
        return data

    @route("/auth-files", "POST")
    async def upload(self, request: IRequest) -> bytes:
        """
        Add or replace credential files: the JSON body, C{?name=x.json}; or
        the files of a C{multipart/form-data} form (the Management Center's
        upload), each under its own file name. One bad file of several does
        not stop the others: the answer is a 207 naming it.
        """
        raw = read_body(request)
        parts = multipart_files(request, raw)
        if parts is None:
            name = _name(arg(request, "name"))
            await self._store().write(name, self._checked(name, raw))
            await self.context.reload()
            return respond(request, {"status": "ok", "name": name})
        store = self._store()
        uploaded, failed = [], []
        for filename, data in parts:
            try:
                name = _name(filename)
                checked = self._checked(name, data)
            except Refused as e:
                if len(parts) == 1:
                    raise
                failed.append({"name": filename, "error": e.message})
                continue
            await store.write(name, checked)
            uploaded.append(name)
        if uploaded:
            await self.context.reload()
        body = {"status": "partial" if failed else "ok", "uploaded": len(uploaded), "files": uploaded,
                "failed": failed}
        if failed and not uploaded:
            return respond(request, {**body, "status": "error", "error": failed[0]["error"]}, 400)
        return respond(request, body, 207 if failed else 200)

    @staticmethod
    def _checked(name: str, raw: bytes) -> bytes:
        """C{raw} when it is a credential file we serve; a 400 saying why not."""
        try:
            parse_json(raw)  # strictly, and not too deep, before the account is read from it
        except ValueError as e:
            raise Refused(400, f"{name}: not JSON: {e}") from None
        try:
            account = parse_account(name, raw)
        except AuthFileError as e:
            raise Refused(400, f"{name}: {e}") from None
        if account is None:
            raise Refused(400, f"{name}: type must be one of {', '.join(sorted(OAUTH_TYPES))}")
        return raw

    @route("/auth-files", "DELETE")
    async def delete(self, request: IRequest) -> bytes:
        """
        Remove the files C{?name=x.json} (repeatable) or C{{"names": [...]}},
        or all of them with C{?all=true}. The answer counts them
        (C{deleted}) and names them (C{files}); a name that is no file is a
        404 alone, and among others a 207 naming it in C{failed}.
        """
        store = self._store()
        if (arg(request, "all") or "").lower() in ("true", "1", "*"):
            names = [info.name for info in await store.files()]
        else:
            names = [_name(v) for v in args(request, "name")]
            body = read_json(request, fields=("names", "name")) if not names else None
            if isinstance(body, dict):
                listed = body.get("names", [body["name"]] if "name" in body else [])
                if not isinstance(listed, list):
                    raise Refused(400, "names must be a list of file names")
                names = [_name(v) for v in listed]
            elif body is not None:
                raise Refused(400, 'the body must be {"names": ["x.json", ...]}')
            names = list(dict.fromkeys(names))
            if not names:
                raise Refused(400, 'give ?name=x.json (repeatable), {"names": [...]} or ?all=true')
        deleted, failed = [], []
        for name in names:
            try:
                await store.delete(name)
                deleted.append(name)
            except FileNotFoundError:
                failed.append({"name": name, "error": f"no auth file {name!r}"})
        await self.context.reload()
        if failed and not deleted:
            raise Refused(404, failed[0]["error"])
        body = {"status": "partial" if failed else "ok", "deleted": len(deleted), "files": deleted, "failed": failed}
        return respond(request, body, 207 if failed else 200)

    @route("/auth-files/status", "PATCH")
    async def status(self, request: IRequest) -> bytes:
        """Enable or disable a credential file: C{{"name": ..., "disabled": true|false}}."""
        data = read_json(request, fields=(*WHO, "disabled"))
        if not isinstance(data, dict) or not isinstance(data.get("disabled"), bool):
            raise Refused(400, 'the body must be {"name": "x.json", "disabled": true|false}')
        disabled = data["disabled"]
        await self._edit(data.get("name"), lambda d: d.__setitem__("disabled", disabled))
        return respond(request, {"status": "ok", "disabled": disabled})

    @route("/auth-files/fields", "PATCH")
    async def fields(self, request: IRequest) -> bytes:
        """
        Change fields of a credential file (L{FIELDS}; an empty value, 0
        for C{priority}, or null removes one). C{expired} in the past (the
        panel's "refresh now") also refreshes the account's token now.
        """
        data = read_json(request, dict, fields=(*WHO, *FIELDS))
        changes: dict[str, Any] = {}
        for field, key in FIELDS.items():
            if field not in data:
                continue
            value = _check_field(key, data[field])
            if key in changes and changes[key] != value:
                raise Refused(400, f"{field} and its other spelling disagree")
            changes[key] = value
        if not changes:
            raise Refused(400, f"give at least one of {', '.join(dict.fromkeys(FIELDS.values()))}")

        def change(d: dict[str, Any]) -> None:
            for k, v in changes.items():
                for spelling in (k, k.replace("_", "-")):
                    d.pop(spelling, None)
                if v is not None:
                    d[k] = v

        name = await self._edit(data.get("name"), change)
        refreshed = None
        if "expired" in changes and parse_time(changes["expired"]) <= self.context.clock.seconds():
            refreshed = await self._refresh_now(name)
        body: dict[str, Any] = {"status": "ok"}
        if refreshed is not None:
            body["refreshed"] = refreshed
        return respond(request, body)

    async def _refresh_now(self, name: str) -> bool:
        """Refresh the account of the file C{name} through the refresher; whether a new token is in place."""
        gen = self.context.generation()
        cred = next((c for c in gen.creds if c.account is not None and c.account.name == name), None)
        if cred is None or self.context.refresher is None:
            return False
        return bool(await self.context.refresher.refresh_now(cred))

    async def _edit(self, name: Any, change: Callable[[dict[str, Any]], None]) -> str:
        name = _name(name)
        try:
            await self._store().edit(name, change)
        except FileNotFoundError:
            raise Refused(404, f"no auth file {name!r}") from None
        except AuthFileError as e:
            raise Refused(400, f"{name}: {e}") from None
        await self.context.reload()
        return name
