"""
The management API at C{/v0/management}, following CLIProxyAPI's routes and
conventions so its tools and scripts keep working.

Off (every route 404) unless C{remote-management.secret-key} is set; who may
use it is L{ManagementAccess}'s decision. Changes to config.yaml go through
L{ConfigFile} (re-read, comments kept, validated, written atomically keeping
the mode, serialized) and then a reload, so they are in effect when the
answer is sent. Credential files are written the same way, atomically and
one at a time, in C{auth-dir}.

Conventions: scalar settings answer C{GET} with C{{"<name>": value}} and
take C{{"value": ...}} with C{PUT} or C{PATCH}; list settings take a JSON
array (or C{{"items": [...]}}) with C{PUT}, C{{"index"|"match"|"name": ...,
"value": {...}}} with C{PATCH} and C{?index=}, C{?api-key=}, C{?name=} or
C{?value=} with C{DELETE}. A bad body is a 400 naming what is wrong; a
change the config would not accept is a 400 naming the YAML path.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable

import yaml
from klein import Klein
from twisted.internet.defer import DeferredLock, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException

from cliproxyd._version import __version__
from cliproxyd.config import ConfigError
from cliproxyd.config.edit import ConfigFile, delete_path, set_path
from cliproxyd.config.model import STRATEGIES, RemoteManagement
from cliproxyd.conductor.conductor import Conductor
from cliproxyd.credentials.authfiles import AuthFileError, OAuthAccount, auth_file_names, parse_account
from cliproxyd.fileio import atomic_write
from cliproxyd.management.access import ManagementAccess, Refused
from cliproxyd.management.usage import Usage
from cliproxyd.state import StateStore

JSON = b"application/json"

def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Refused(400, "value must be true or false")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Refused(400, "value must be a whole number, 0 or more")
    return value


def _positive(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise Refused(400, "value must be a number above 0")
    return value


def _strategy(value: Any) -> str:
    if not isinstance(value, str) or value.strip().lower() not in STRATEGIES:
        raise Refused(400, "value must be round-robin (rr) or fill-first (ff)")
    return STRATEGIES[value.strip().lower()]


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise Refused(400, "value must be a string")
    return value.strip()


#: Scalar settings: route -> (YAML path, value check, default shown when unset).
SCALARS: dict[str, tuple[tuple[str, ...], Callable[[Any], Any], Any]] = {
    "debug": (("debug",), _bool, False),
    "request-retry": (("request-retry",), _count, 0),
    "max-retry-interval": (("max-retry-interval",), _count, 0),
    "max-retry-credentials": (("max-retry-credentials",), _count, 0),
    "force-model-prefix": (("force-model-prefix",), _bool, False),
    "disable-cooling": (("disable-cooling",), _bool, False),
    "max-body-mb": (("max-body-mb",), _positive, 8),
    "routing/strategy": (("routing", "strategy"), _strategy, "round-robin"),
    "routing/session-affinity": (("routing", "session-affinity"), _bool, False),
    "proxy-url": (("proxy-url",), _text, ""),
}

#: List settings: route -> the field that identifies an entry (for PATCH match and DELETE).
LISTS = {
    "api-keys": None,
    "openai-compatibility": "name",
    "claude-api-key": "api-key",
    "gemini-api-key": "api-key",
    "codex-api-key": "api-key",
}

_AUTH_NAME = re.compile(r"^[^/\\\x00]+\.json$")


class ManagementAPI:
    app = Klein()
    log = Logger()

    def __init__(
        self,
        settings: RemoteManagement,
        conductor: Conductor | Callable[[], Conductor],
        state: StateStore,
        clock: IReactorTime,
        in_flight: Callable[[], int],
        *,
        config_file: ConfigFile | None = None,
        runtime: Any = None,
        refresher: Any = None,
        usage: Usage | None = None,
        warmups: Any = None,
        run_in_thread: Callable[..., Any] = deferToThread,
    ) -> None:
        self._state = state
        self._clock = clock
        self._in_flight = in_flight
        self._started = clock.seconds()
        self._config = config_file
        self._runtime = runtime
        self._refresher = refresher
        self.usage = usage
        self._warmups = warmups
        self._settings = settings
        self._run = run_in_thread
        self._auth_lock = DeferredLock()
        self.access = ManagementAccess(settings.secret_key, settings.allow_remote, clock,
                                       run_in_thread=run_in_thread)
        self._conductor: Callable[[], Conductor] = conductor if callable(conductor) else (lambda: conductor)

    def use(self, settings: RemoteManagement) -> None:
        """Apply a reloaded config's settings (bans and verified keys survive)."""
        self._settings = settings
        try:
            self.access.reconfigure(settings.secret_key, settings.allow_remote)
        except ValueError as e:
            self.log.error("management settings not applied: {error}", error=e)

    @property
    def enabled(self) -> bool:
        return self.access.enabled

    def _authorize(self, request: IRequest):
        gen = self._runtime.current if self._runtime is not None else None
        if gen is not None and gen.config.remote_management is not self._settings:
            self.use(gen.config.remote_management)  # a reload changed them
        return maybeDeferred(self.access.check, request)

    # -- helpers ------------------------------------------------------------------------

    def _json(self, request: IRequest, body: Any, status: int = 200) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", JSON)
        return json.dumps(body).encode("utf-8")

    def _read_json(self, request: IRequest) -> Any:
        try:
            return json.loads(request.content.read() or b"null")
        except (ValueError, UnicodeDecodeError):
            raise Refused(400, "the body is not valid JSON") from None

    def _value(self, request: IRequest) -> Any:
        data = self._read_json(request)
        if not isinstance(data, dict) or "value" not in data:
            raise Refused(400, 'the body must be {"value": ...}')
        return data["value"]

    def _config_file(self) -> ConfigFile:
        if self._config is None:
            raise Refused(409, "this daemon runs without a config file (--demo): nothing to change")
        return self._config

    async def _edit(self, mutate: Callable[[Any], Any]) -> Any:
        """Change config.yaml, then reload so the change is in effect before we answer."""
        try:
            _, result = await self._config_file().edit(mutate)
        except ConfigError as e:
            raise Refused(400, f"the config would not load: {e}") from None
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise Refused(400, str(e).strip("'\"")) from None
        await self._reload()
        return result

    async def _reload(self) -> None:
        if self._runtime is not None:
            await self._runtime.reload("management API")

    async def _current_yaml(self) -> dict[str, Any]:
        raw = await self._config_file().read()
        data = yaml.safe_load(raw) if raw else {}
        return data if isinstance(data, dict) else {}

    def _arg(self, request: IRequest, name: str) -> str | None:
        values = request.args.get(name.encode())
        return values[0].decode("utf-8") if values else None

    @app.route("/status", methods=["GET"])
    async def status(self, request: IRequest) -> bytes:
        """Uptime, in-flight requests and every credential with its counters."""
        await self._authorize(request)
        creds = []
        for cred in self._conductor().creds:
            entry: dict[str, Any] = {
                "id": cred.id,
                "provider": cred.provider,
                "type": cred.kind,
                "key": cred.fingerprint,
                "base_url": cred.base_url,
                "priority": cred.priority,
                "models": sorted({r.name for r in cred.routes}),
            }
            entry.update(self._state.stats(cred.id).as_json())
            creds.append(entry)
        body = {
            "version": __version__,
            "uptime_seconds": round(self._clock.seconds() - self._started, 3),
            "in_flight": self._in_flight(),
            "usage": {model: u.as_json() for model, u in sorted(self._state.usage().items())},
            "warmups": self._warmup_status(),
            "credentials": creds,
        }
        request.setHeader(b"content-type", JSON)
        return json.dumps(body).encode("utf-8")

    def _warmup_status(self) -> dict[str, Any]:
        settings = self._conductor().settings.warmup
        if self._warmups is None or not settings.enabled:
            return {"enabled": False}
        return self._warmups.status(settings)

    @app.route("/credentials", methods=["GET"])
    async def credentials(self, request: IRequest) -> bytes:
        """
        Every credential with its routing state: per-model cooldowns, when
        it can next be used, its last error and its counters.
        """
        await self._authorize(request)
        now = self._clock.seconds()
        out = []
        for cred in self._conductor().creds:
            states = self._state.model_states(cred.id)
            models = {
                key: {
                    "cooling": state.blocked(now),
                    "next_retry_at": state.next_retry_at,
                    "retry_in_seconds": round(state.next_retry_at - now, 3) if state.blocked(now) else None,
                    "reason": state.reason,
                    "backoff_level": state.backoff_level,
                    "quota_exceeded": state.quota_exceeded,
                    "last_status": state.last_status,
                    "last_error": state.last_error,
                }
                for key, state in sorted(states.items())
            }
            blocked = [s.next_retry_at for s in states.values() if s.blocked(now)]
            served = {r.state_key for r in cred.routes}
            all_cooling = bool(served) and served <= {k for k, s in states.items() if s.blocked(now)}
            stats = self._state.stats(cred.id)
            out.append({
                "id": cred.id,
                "provider": cred.provider,
                "type": cred.kind,
                "key": cred.fingerprint,
                "priority": cred.priority,
                "disabled": cred.disabled,
                "models": sorted({r.name for r in cred.routes}),
                "unavailable": all_cooling,
                "next_retry_at": min(blocked) if all_cooling else None,
                "model_states": models,
                "last_error": stats.last_error,
                "counters": stats.as_json(),
            })
        request.setHeader(b"content-type", JSON)
        return json.dumps({"now": now, "credentials": out}).encode("utf-8")

    # -- quota groups ---------------------------------------------------------------

    def _body(self, request: IRequest, fields: dict[str, type]) -> dict[str, Any]:
        try:
            data = json.loads(request.content.read() or b"null")
        except (ValueError, UnicodeDecodeError):
            raise Refused(400, "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise Refused(400, "the body must be a JSON object")
        for name, kind in fields.items():
            value = data.get(name)
            if name in ("auth_id", "group_id"):
                if not isinstance(value, str) or not value:
                    raise Refused(400, f"{name!r} is required and must be a non-empty string")
            elif kind is bool:
                if not isinstance(value, bool):
                    raise Refused(400, f"{name!r} is required and must be true or false")
            elif value is None:
                data[name] = ""
            elif not isinstance(value, str):
                raise Refused(400, f"{name!r} must be a string")
        return data

    def _target(self, data: dict[str, Any], group: bool = True) -> None:
        if self._conductor().credential(data["auth_id"]) is None:
            raise Refused(404, f"no credential {data['auth_id']!r}")
        if group and self._conductor().group(data["group_id"]) is None:
            raise Refused(404, f"no quota group {data['group_id']!r}")

    def _group_entry(self, cred_id: str, group_id: str, now: float) -> dict[str, Any]:
        st = self._state.group_state(cred_id, group_id)
        return {
            "auth_id": cred_id,
            "group_id": group_id,
            "suspended": st.blocked_until(now) is not None,
            "auto_suspended": st.auto_active(now),
            "auto_suspended_until": st.auto_until if st.auto_active(now) else None,
            "auto_reason": st.auto_reason if st.auto_active(now) else "",
            "manual_suspended": st.manual,
            "manual_reason": st.manual_reason,
            "updated_by": st.updated_by,
            "updated_at": st.updated_at,
        }

    @app.route("/quota-groups", methods=["GET"])
    async def quota_groups(self, request: IRequest) -> bytes:
        """The groups, and every credential's state in each group that covers its provider."""
        await self._authorize(request)
        now = self._clock.seconds()
        groups = self._conductor().quota_groups
        states = [
            self._group_entry(cred.id, g.id, now)
            for cred in self._conductor().creds
            for g in groups
            if cred.provider.lower() in g.providers
        ]
        request.setHeader(b"content-type", JSON)
        return json.dumps({"groups": [g.as_json() for g in groups], "states": states}).encode("utf-8")

    @app.route("/quota-groups/manual", methods=["PATCH"])
    async def quota_groups_manual(self, request: IRequest) -> bytes:
        await self._authorize(request)
        data = self._body(request, {"auth_id": str, "group_id": str, "manual_suspended": bool,
                                    "reason": str, "updated_by": str})
        self._target(data)
        self._conductor().set_manual(data["auth_id"], data["group_id"], data["manual_suspended"],
                                   data["reason"], data["updated_by"] or "management")
        request.setHeader(b"content-type", JSON)
        return json.dumps(self._group_entry(data["auth_id"], data["group_id"], self._clock.seconds())).encode()

    @app.route("/quota-groups/auto-clear", methods=["PATCH"])
    async def quota_groups_auto_clear(self, request: IRequest) -> bytes:
        await self._authorize(request)
        data = self._body(request, {"auth_id": str, "group_id": str})
        self._target(data)
        cleared = self._conductor().clear_auto(data["auth_id"], [data["group_id"]])
        request.setHeader(b"content-type", JSON)
        return json.dumps({"cleared": cleared}).encode()

    @app.route("/quota-groups/auto-clear-all", methods=["POST"])
    async def quota_groups_auto_clear_all(self, request: IRequest) -> bytes:
        await self._authorize(request)
        data = self._body(request, {"auth_id": str})
        self._target(data, group=False)
        cleared = self._conductor().clear_auto(data["auth_id"])
        request.setHeader(b"content-type", JSON)
        return json.dumps({"cleared": cleared}).encode()


    # -- config -------------------------------------------------------------------------

    @app.route("/config", methods=["GET"])
    async def config_json(self, request: IRequest) -> bytes:
        """The config as JSON; the listener, the management settings and auth-dir are left out."""
        await self._authorize(request)
        data = await self._current_yaml()
        for hidden in ("host", "port", "remote-management", "auth-dir"):
            data.pop(hidden, None)
        return self._json(request, data)

    @app.route("/config.yaml", methods=["GET"])
    async def config_yaml_get(self, request: IRequest) -> bytes:
        await self._authorize(request)
        request.setHeader(b"content-type", b"application/yaml; charset=utf-8")
        return await self._config_file().read()

    @app.route("/config.yaml", methods=["PUT"])
    async def config_yaml_put(self, request: IRequest) -> bytes:
        """Replace the file, if the new text loads; 422 with the reason if it does not."""
        await self._authorize(request)
        data = request.content.read()
        try:
            await self._config_file().replace(data)
        except ConfigError as e:
            return self._json(request, {"error": "invalid_config", "message": str(e)}, 422)
        await self._reload()
        return self._json(request, {"ok": True, "changed": ["config"]})

    # -- scalar settings ----------------------------------------------------------------

    @app.route("/<path:name>", methods=["GET", "PUT", "PATCH", "DELETE"])
    async def setting(self, request: IRequest, name: str) -> bytes:
        await self._authorize(request)
        method = request.method.decode()
        if name in SCALARS:
            return await self._scalar(request, method, name)
        if name in LISTS:
            return await self._list(request, method, name)
        raise Refused(404, "not found")

    async def _scalar(self, request: IRequest, method: str, name: str) -> bytes:
        path, check, default = SCALARS[name]
        key = name.rsplit("/", 1)[-1]
        if method == "GET":
            node: Any = await self._current_yaml()
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            return self._json(request, {key: default if node is None else node})
        if method == "DELETE":
            await self._edit(lambda doc: delete_path(doc, path))
        else:
            value = check(self._value(request))
            await self._edit(lambda doc: set_path(doc, path, value))
        return self._json(request, {"status": "ok"})

    async def _list(self, request: IRequest, method: str, name: str) -> bytes:
        ident = LISTS[name]
        if method == "GET":
            data = await self._current_yaml()
            return self._json(request, {name: data.get(name) or []})
        if method == "PUT":
            items = self._read_json(request)
            if isinstance(items, dict) and isinstance(items.get("items"), list):
                items = items["items"]
            if not isinstance(items, list):
                raise Refused(400, 'the body must be a JSON array or {"items": [...]}')
            await self._edit(lambda doc: set_path(doc, (name,), items))
            return self._json(request, {"status": "ok"})
        if method == "PATCH":
            patch = self._read_json(request)
            if not isinstance(patch, dict):
                raise Refused(400, "the body must be a JSON object")

            def apply(doc: Any) -> None:
                seq = doc.get(name)
                if seq is None:
                    raise Refused(404, f"{name} is empty")
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

            await self._edit(apply)
            return self._json(request, {"status": "ok"})
        # DELETE
        which: dict[str, Any] = {}
        index = self._arg(request, "index")
        if index is not None:
            if not index.isdigit():
                raise Refused(400, "index must be a whole number")
            which["index"] = int(index)
        for arg in ("api-key", "name", "value"):
            if (given := self._arg(request, arg)) is not None:
                which["match"] = given
        if not which:
            raise Refused(400, "say which entry: ?index=, ?api-key=, ?name= or ?value=")

        def remove(doc: Any) -> None:
            seq = doc.get(name)
            if seq is None:
                raise Refused(404, f"{name} is empty")
            del seq[_find(seq, which, ident)]

        await self._edit(remove)
        return self._json(request, {"status": "ok"})

    # -- credentials ----------------------------------------------------------------------

    @app.route("/credentials/reset", methods=["POST"])
    async def credentials_reset(self, request: IRequest) -> bytes:
        """Clear a credential's cooldowns: C{{"id": ..., "model": optional}}."""
        await self._authorize(request)
        data = self._read_json(request)
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise Refused(400, 'the body must be {"id": "<credential id>", "model": optional}')
        model = data.get("model")
        if model is not None and not isinstance(model, str):
            raise Refused(400, "model must be a string")
        conductor = self._conductor()
        if conductor.credential(data["id"]) is None:
            raise Refused(404, f"no credential {data['id']!r}")
        reset = conductor.reset_cooldowns(data["id"], model)
        return self._json(request, {"status": "ok", "reset": reset})

    @app.route("/usage", methods=["GET"])
    async def usage_route(self, request: IRequest) -> bytes:
        await self._authorize(request)
        limit = self._arg(request, "limit")
        if limit is not None and not limit.isdigit():
            raise Refused(400, "limit must be a whole number")
        body = self.usage.as_json(int(limit) if limit else None) if self.usage else {}
        return self._json(request, {"usage": body})

    # -- auth files -----------------------------------------------------------------------

    def _auth_dir(self) -> str:
        gen = self._runtime.current if self._runtime is not None else None
        if gen is None or not gen.config.auth_dir:
            raise Refused(409, "auth-dir is not set in the config")
        return gen.config.auth_dir

    def _auth_name(self, name: str | None) -> str:
        if not name or not _AUTH_NAME.match(name) or name.startswith("."):
            raise Refused(400, "name must be a file name ending in .json, with no path")
        return name

    @app.route("/auth-files", methods=["GET"])
    async def auth_files(self, request: IRequest) -> bytes:
        await self._authorize(request)
        directory = self._auth_dir()
        gen = self._runtime.current
        by_name = {c.account.name: c for c in gen.creds if c.account is not None}
        now = self._clock.seconds()
        names = await self._run(_json_files, directory)
        files = []
        for name, size, mtime in names:
            cred = by_name.get(name)
            account: OAuthAccount | None = cred.account if cred else gen.accounts.get(name)
            entry: dict[str, Any] = {"name": name, "size": size, "modtime": mtime}
            problem = gen.problems.get(name)
            if account is None:
                entry.update(status="error" if problem else "ignored", status_message=problem or
                             "not an OAuth credential cliproxyd serves")
                files.append(entry)
                continue
            refresh = self._refresher.status(account) if self._refresher else None
            states = self._state.model_states(cred.id) if cred else {}
            blocked = [s.next_retry_at for s in states.values() if s.blocked(now)]
            disabled = bool(cred and cred.disabled)
            entry.update(
                id=cred.id if cred else None,
                type=account.type,
                provider=account.type,
                email=account.email,
                label=account.email or name,
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
        return self._json(request, {"files": files})

    @app.route("/auth-files/download", methods=["GET"])
    async def auth_files_download(self, request: IRequest) -> bytes:
        await self._authorize(request)
        name = self._auth_name(self._arg(request, "name"))
        path = os.path.join(self._auth_dir(), name)
        try:
            data = await self._run(_read_file, path)
        except FileNotFoundError:
            raise Refused(404, f"no auth file {name!r}") from None
        request.setHeader(b"content-type", JSON)
        request.setHeader(b"content-disposition", f'attachment; filename="{name}"'.encode())
        return data

    @app.route("/auth-files", methods=["POST"])
    async def auth_files_upload(self, request: IRequest) -> bytes:
        """Add or replace one credential file: the JSON body, C{?name=x.json}."""
        await self._authorize(request)
        name = self._auth_name(self._arg(request, "name"))
        raw = request.content.read()
        try:
            account = parse_account(name, raw)
        except AuthFileError as e:
            raise Refused(400, f"{name}: {e}") from None
        if account is None:
            raise Refused(400, f"{name}: type must be one of claude, codex, gemini (gemini-cli), antigravity")
        path = os.path.join(self._auth_dir(), name)
        await self._auth_lock.run(self._run, atomic_write, path, raw)
        await self._reload()
        return self._json(request, {"status": "ok", "name": name})

    @app.route("/auth-files", methods=["DELETE"])
    async def auth_files_delete(self, request: IRequest) -> bytes:
        await self._authorize(request)
        directory = self._auth_dir()
        if (self._arg(request, "all") or "").lower() in ("true", "1", "*"):
            names = [n for n, _, _ in await self._run(_json_files, directory)]
        else:
            names = [self._auth_name(v.decode("utf-8")) for v in request.args.get(b"name", [])]
            if not names:
                raise Refused(400, "give ?name=x.json (repeatable) or ?all=true")
        deleted, missing = [], []
        for name in names:
            try:
                await self._auth_lock.run(self._run, os.unlink, os.path.join(directory, name))
                deleted.append(name)
            except FileNotFoundError:
                missing.append(name)
        await self._reload()
        if missing and not deleted:
            raise Refused(404, f"no auth file {missing[0]!r}")
        return self._json(request, {"status": "ok", "deleted": deleted, "missing": missing})

    @app.route("/auth-files/status", methods=["PATCH"])
    async def auth_files_status(self, request: IRequest) -> bytes:
        """Enable or disable a credential file: C{{"name": ..., "disabled": true|false}}."""
        await self._authorize(request)
        data = self._read_json(request)
        if not isinstance(data, dict) or not isinstance(data.get("disabled"), bool):
            raise Refused(400, 'the body must be {"name": "x.json", "disabled": true|false}')
        disabled = data["disabled"]
        await self._patch_auth_file(data.get("name"), lambda d: d.__setitem__("disabled", disabled))
        return self._json(request, {"status": "ok"})

    @app.route("/auth-files/fields", methods=["PATCH"])
    async def auth_files_fields(self, request: IRequest) -> bytes:
        """Change C{prefix}, C{proxy_url}, C{priority} or C{note} of a credential file (empty or 0 removes it)."""
        await self._authorize(request)
        data = self._read_json(request)
        if not isinstance(data, dict):
            raise Refused(400, "the body must be a JSON object")
        fields = {k: data[k] for k in ("prefix", "proxy_url", "priority", "note") if k in data}
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

        await self._patch_auth_file(data.get("name"), change)
        return self._json(request, {"status": "ok"})

    async def _patch_auth_file(self, name: Any, change: Callable[[dict[str, Any]], None]) -> None:
        name = self._auth_name(name if isinstance(name, str) else None)
        path = os.path.join(self._auth_dir(), name)

        def rewrite() -> None:
            # Read, change and write under the lock, in a thread: never a stale copy.
            with open(path, "rb") as f:
                raw = f.read()
            account = parse_account(path, raw)
            if account is None:
                raise AuthFileError("not an OAuth credential cliproxyd serves")
            change(account.data)
            data = account.to_bytes()
            parse_account(path, data)
            atomic_write(path, data)

        try:
            await self._auth_lock.run(self._run, rewrite)
        except FileNotFoundError:
            raise Refused(404, f"no auth file {name!r}") from None
        except AuthFileError as e:
            raise Refused(400, f"{name}: {e}") from None
        await self._reload()

    # -- errors ---------------------------------------------------------------------------

    @app.handle_errors(Refused)
    def _refused(self, request: IRequest, failure: Failure) -> bytes:
        e: Refused = failure.value
        if getattr(e, "retry_after", None):
            request.setHeader(b"retry-after", str(e.retry_after).encode())
        return self._json(request, {"error": e.message}, e.status)

    @app.handle_errors(Exception)
    def _other(self, request: IRequest, failure: Failure) -> bytes:
        # Unknown routes: 404 whether or not the API is on, without saying more.
        if failure.check(HTTPException):
            status = failure.value.code
        else:
            status = 500
            self.log.failure("unhandled management error on {path}", failure, path=request.path)
        return self._json(request, {"error": "not found" if status == 404 else "error"}, status)


def _find(seq: Any, patch: dict[str, Any], ident: str | None) -> int:
    """The index of the entry a PATCH or DELETE names: by C{index}, or by C{match}/C{name}/C{old}/C{value}."""
    if "index" in patch:
        index = patch["index"]
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(seq):
            raise Refused(400, f"index must be between 0 and {len(seq) - 1}")
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


def _json_files(directory: str) -> list[tuple[str, int, float]]:
    out = []
    try:
        names = auth_file_names(directory)
    except FileNotFoundError:
        return []
    for name in names:
        try:
            st = os.stat(os.path.join(directory, name))
        except OSError:
            continue
        out.append((name, st.st_size, st.st_mtime))
    return out


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
