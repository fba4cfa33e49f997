"""
The management API at C{/v0/management}.

Off (every route 404) unless C{remote-management.secret-key} is set. The key
is required from every client, localhost included, as C{Authorization:
Bearer} or C{X-Management-Key}; clients not on loopback are refused unless
C{remote-management.allow-remote} is true.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import Any, Callable

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException

from cliproxyd._version import __version__
from cliproxyd.config.model import RemoteManagement
from cliproxyd.conductor.conductor import Conductor
from cliproxyd.state import StateStore

JSON = b"application/json"


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ManagementAPI:
    app = Klein()
    log = Logger()

    def __init__(
        self,
        settings: RemoteManagement,
        conductor: Conductor,
        state: StateStore,
        clock: IReactorTime,
        in_flight: Callable[[], int],
    ) -> None:
        self.use(settings, conductor)
        self._state = state
        self._clock = clock
        self._in_flight = in_flight
        self._started = clock.seconds()

    def use(self, settings: RemoteManagement, conductor: Conductor) -> None:
        """Apply a reloaded config's settings and conductor."""
        self._secret = settings.secret_key.encode("utf-8")
        self._allow_remote = settings.allow_remote
        self._conductor = conductor

    @property
    def enabled(self) -> bool:
        return bool(self._secret)

    def _authorize(self, request: IRequest) -> None:
        if not self._secret:
            raise _Refused(404, "not found")
        host = getattr(request.getClientAddress(), "host", "")
        if not self._allow_remote and not _is_loopback(host):
            raise _Refused(403, "remote management is disabled; set remote-management.allow-remote")
        presented = request.getHeader(b"x-management-key")
        auth = request.getHeader(b"authorization")
        if presented is None and auth:
            scheme, _, rest = auth.partition(b" ")
            presented = rest.strip() if scheme.lower() == b"bearer" else auth.strip()
        if not presented:
            raise _Refused(401, "missing management key")
        if not hmac.compare_digest(presented, self._secret):
            raise _Refused(401, "invalid management key")

    @app.route("/status", methods=["GET"])
    def status(self, request: IRequest) -> bytes:
        """Uptime, in-flight requests and every credential with its counters."""
        self._authorize(request)
        creds = []
        for cred in self._conductor.creds:
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
            "warmups": self._conductor.warmups.status() if self._conductor.warmups else {"enabled": False},
            "credentials": creds,
        }
        request.setHeader(b"content-type", JSON)
        return json.dumps(body).encode("utf-8")

    @app.route("/credentials", methods=["GET"])
    def credentials(self, request: IRequest) -> bytes:
        """
        Every credential with its routing state: per-model cooldowns, when
        it can next be used, its last error and its counters.
        """
        self._authorize(request)
        now = self._clock.seconds()
        out = []
        for cred in self._conductor.creds:
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
            raise _Refused(400, "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise _Refused(400, "the body must be a JSON object")
        for name, kind in fields.items():
            value = data.get(name)
            if name in ("auth_id", "group_id"):
                if not isinstance(value, str) or not value:
                    raise _Refused(400, f"{name!r} is required and must be a non-empty string")
            elif kind is bool:
                if not isinstance(value, bool):
                    raise _Refused(400, f"{name!r} is required and must be true or false")
            elif value is None:
                data[name] = ""
            elif not isinstance(value, str):
                raise _Refused(400, f"{name!r} must be a string")
        return data

    def _target(self, data: dict[str, Any], group: bool = True) -> None:
        if self._conductor.credential(data["auth_id"]) is None:
            raise _Refused(404, f"no credential {data['auth_id']!r}")
        if group and self._conductor.group(data["group_id"]) is None:
            raise _Refused(404, f"no quota group {data['group_id']!r}")

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
    def quota_groups(self, request: IRequest) -> bytes:
        """The groups, and every credential's state in each group that covers its provider."""
        self._authorize(request)
        now = self._clock.seconds()
        groups = self._conductor.quota_groups
        states = [
            self._group_entry(cred.id, g.id, now)
            for cred in self._conductor.creds
            for g in groups
            if cred.provider.lower() in g.providers
        ]
        request.setHeader(b"content-type", JSON)
        return json.dumps({"groups": [g.as_json() for g in groups], "states": states}).encode("utf-8")

    @app.route("/quota-groups/manual", methods=["PATCH"])
    def quota_groups_manual(self, request: IRequest) -> bytes:
        self._authorize(request)
        data = self._body(request, {"auth_id": str, "group_id": str, "manual_suspended": bool,
                                    "reason": str, "updated_by": str})
        self._target(data)
        self._conductor.set_manual(data["auth_id"], data["group_id"], data["manual_suspended"],
                                   data["reason"], data["updated_by"] or "management")
        request.setHeader(b"content-type", JSON)
        return json.dumps(self._group_entry(data["auth_id"], data["group_id"], self._clock.seconds())).encode()

    @app.route("/quota-groups/auto-clear", methods=["PATCH"])
    def quota_groups_auto_clear(self, request: IRequest) -> bytes:
        self._authorize(request)
        data = self._body(request, {"auth_id": str, "group_id": str})
        self._target(data)
        cleared = self._conductor.clear_auto(data["auth_id"], [data["group_id"]])
        request.setHeader(b"content-type", JSON)
        return json.dumps({"cleared": cleared}).encode()

    @app.route("/quota-groups/auto-clear-all", methods=["POST"])
    def quota_groups_auto_clear_all(self, request: IRequest) -> bytes:
        self._authorize(request)
        data = self._body(request, {"auth_id": str})
        self._target(data, group=False)
        cleared = self._conductor.clear_auto(data["auth_id"])
        request.setHeader(b"content-type", JSON)
        return json.dumps({"cleared": cleared}).encode()

    @app.handle_errors(_Refused)
    def _refused(self, request: IRequest, failure: Failure) -> bytes:
        e: _Refused = failure.value
        request.setResponseCode(e.status)
        request.setHeader(b"content-type", JSON)
        return json.dumps({"error": e.message}).encode("utf-8")

    @app.handle_errors(Exception)
    def _other(self, request: IRequest, failure: Failure) -> bytes:
        # Unknown routes: 404 whether or not the API is on, without saying more.
        if failure.check(HTTPException):
            status = failure.value.code
        else:
            status = 500
            self.log.failure("unhandled management error on {path}", failure, path=request.path)
        request.setResponseCode(status)
        request.setHeader(b"content-type", JSON)
        return json.dumps({"error": "not found" if status == 404 else "error"}).encode("utf-8")
