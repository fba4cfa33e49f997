"""
The credential files of C{auth-dir} (C{/auth-files}): listed with each
account's state, uploaded, downloaded, deleted, enabled or disabled and
edited. The files are read and written through an L{AuthDir} (atomic
writes, one change at a time, off the reactor thread); every change is
followed by a reload, so it is in effect when the answer is sent.
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import quote

from twisted.web.iweb import IRequest

from cliproxyd.credentials.authdir import AuthDir, InvalidName, valid_name
from cliproxyd.credentials.authfiles import AuthFileError, OAuthAccount, daemon_files, parse_account
from cliproxyd.management.access import Refused
from cliproxyd.management.http import JSON, Resource, arg, args, parse_json, read_body, read_json, respond, route

#: The fields of a credential file C{PATCH /auth-files/fields} changes.
FIELDS = ("prefix", "proxy_url", "priority", "note")


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


class AuthFiles(Resource):
    """C{/auth-files}, C{/auth-files/download}, C{/auth-files/status} and C{/auth-files/fields}."""

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
        """Every C{*.json} file with the account in it and that account's state, or why it is not used."""
        store = self._store()
        gen = self.context.generation()
        by_name = {c.account.name: c for c in gen.creds if c.account is not None}
        now = self.context.clock.seconds()
        refresher = self.context.refresher
        files = []
        for info in await store.files():
            cred = by_name.get(info.name)
            account: OAuthAccount | None = cred.account if cred else gen.accounts.get(info.name)
            entry: dict[str, Any] = {"name": info.name, "size": info.size, "modtime": info.mtime}
            problem = gen.problems.get(info.name)
            if account is None:
                entry.update(status="error" if problem else "ignored", status_message=problem or
                             "not an OAuth credential cliproxyd serves")
                files.append(entry)
                continue
            refresh = refresher.status(account) if refresher else None
            states = self.context.state.model_states(cred.id) if cred else {}
            blocked = [s.next_retry_at for s in states.values() if s.blocked(now)]
            disabled = bool(cred and cred.disabled)
            entry.update(
                id=cred.id if cred else None,
                type=account.type,
                provider=account.type,
                email=account.email,
                label=account.email or info.name,
                disabled=disabled,
                status="disabled" if disabled else ("error" if problem else ("cooling" if blocked else "active")),
                status_message=problem or (refresh.last_error if refresh else ""),
                priority=cred.priority if cred else 0,
                prefix=cred.prefix if cred else "",
                note=str(account.data.get("note") or ""),
                expires_at=account.expires_at,
                last_refresh=refresh.last_refresh if refresh else account.last_refresh,
                refreshing=bool(refresh and refresh.refreshing),
                next_retry_after=min(blocked) if blocked else None,
                models=sorted({r.name for r in cred.routes}) if cred else [],
            )
            files.append(entry)
        return respond(request, {"files": files})

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
        """Add or replace one credential file: the JSON body, C{?name=x.json}."""
        name = _name(arg(request, "name"))
        raw = read_body(request)
        try:
            parse_json(raw)  # strictly, and not too deep, before the account is read from it
        except ValueError as e:
            raise Refused(400, f"{name}: not JSON: {e}") from None
        try:
            account = parse_account(name, raw)
        except AuthFileError as e:
            raise Refused(400, f"{name}: {e}") from None
        if account is None:
            raise Refused(400, f"{name}: type must be one of claude, codex, gemini (gemini-cli), antigravity")
        await self._store().write(name, raw)
        await self.context.reload()
        return respond(request, {"status": "ok", "name": name})

    @route("/auth-files", "DELETE")
    async def delete(self, request: IRequest) -> bytes:
        """Remove the files C{?name=x.json} (repeatable), or all of them with C{?all=true}."""
        store = self._store()
        if (arg(request, "all") or "").lower() in ("true", "1", "*"):
            names = [info.name for info in await store.files()]
        else:
            names = [_name(v) for v in args(request, "name")]
            if not names:
                raise Refused(400, "give ?name=x.json (repeatable) or ?all=true")
        deleted, missing = [], []
        for name in names:
            try:
                await store.delete(name)
                deleted.append(name)
            except FileNotFoundError:
                missing.append(name)
        await self.context.reload()
        if missing and not deleted:
            raise Refused(404, f"no auth file {missing[0]!r}")
        return respond(request, {"status": "ok", "deleted": deleted, "missing": missing})

    @route("/auth-files/status", "PATCH")
    async def status(self, request: IRequest) -> bytes:
        """Enable or disable a credential file: C{{"name": ..., "disabled": true|false}}."""
        data = read_json(request, fields=("name", "disabled"))
        if not isinstance(data, dict) or not isinstance(data.get("disabled"), bool):
            raise Refused(400, 'the body must be {"name": "x.json", "disabled": true|false}')
        disabled = data["disabled"]
        await self._edit(data.get("name"), lambda d: d.__setitem__("disabled", disabled))
        return respond(request, {"status": "ok"})

    @route("/auth-files/fields", "PATCH")
    async def fields(self, request: IRequest) -> bytes:
        """Change C{prefix}, C{proxy_url}, C{priority} or C{note} of a credential file (empty or 0 removes it)."""
        data = read_json(request, dict, fields=("name", *FIELDS))
        fields = {k: data[k] for k in FIELDS if k in data}
        if not fields:
            raise Refused(400, "give at least one of prefix, proxy_url, priority, note")
        for k, v in fields.items():
            if k == "priority" and (isinstance(v, bool) or not isinstance(v, int)):
                raise Refused(400, "priority must be a whole number")
            if k != "priority" and not isinstance(v, str):
                raise Refused(400, f"{k} must be a string")

        def change(d: dict[str, Any]) -> None:
            for k, v in fields.items():
                if v in ("", 0):
                    d.pop(k, None)
                else:
                    d[k] = v

        await self._edit(data.get("name"), change)
        return respond(request, {"status": "ok"})

    async def _edit(self, name: Any, change: Callable[[dict[str, Any]], None]) -> None:
        name = _name(name)
        try:
            await self._store().edit(name, change)
        except FileNotFoundError:
            raise Refused(404, f"no auth file {name!r}") from None
        except AuthFileError as e:
            raise Refused(400, f"{name}: {e}") from None
        await self.context.reload()
