"""
OAuth quota groups (C{/quota-groups}): the groups and each credential's
state in them; a manual suspension set or lifted; automatic suspensions
cleared for one group or all.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from cliproxyd.management.access import Refused
from cliproxyd.management.http import Resource, read_json, respond, route

#: The fields that name what a change is about; they must be non-empty strings.
_IDS = ("auth_id", "group_id")


class QuotaGroups(Resource):
    """C{/quota-groups}, C{/quota-groups/manual}, C{/quota-groups/auto-clear} and C{/quota-groups/auto-clear-all}."""

    @route("/quota-groups", "GET")
    async def groups(self, request: IRequest) -> bytes:
        """The groups, and every credential's state in each group that covers its provider."""
        now = self.context.clock.seconds()
        conductor = self.context.conductor()
        groups = conductor.quota_groups
        states = [
            self._entry(cred.id, g.id, now)
            for cred in conductor.creds
            for g in groups
            if cred.provider.lower() in g.providers
        ]
        return respond(request, {"groups": [g.as_json() for g in groups], "states": states})

    @route("/quota-groups/manual", "PATCH")
    async def manual(self, request: IRequest) -> bytes:
        """Suspend a credential in a group, or lift that: C{{"auth_id", "group_id", "manual_suspended", ...}}."""
        data = self._body(request, {"auth_id": str, "group_id": str, "manual_suspended": bool,
                                    "reason": str, "updated_by": str})
        self._target(data)
        self.context.conductor().set_manual(data["auth_id"], data["group_id"], data["manual_suspended"],
                                            data["reason"], data["updated_by"] or "management")
        return respond(request, self._entry(data["auth_id"], data["group_id"], self.context.clock.seconds()))

    @route("/quota-groups/auto-clear", "PATCH")
    async def auto_clear(self, request: IRequest) -> bytes:
        """Clear a credential's automatic suspension in one group."""
        data = self._body(request, {"auth_id": str, "group_id": str})
        self._target(data)
        return respond(request, {"cleared": self.context.conductor().clear_auto(data["auth_id"], [data["group_id"]])})

    @route("/quota-groups/auto-clear-all", "POST")
    async def auto_clear_all(self, request: IRequest) -> bytes:
        """Clear a credential's automatic suspensions in every group."""
        data = self._body(request, {"auth_id": str})
        self._target(data, group=False)
        return respond(request, {"cleared": self.context.conductor().clear_auto(data["auth_id"])})

    def _body(self, request: IRequest, fields: dict[str, type]) -> dict[str, Any]:
        """The JSON object, with C{fields} checked: the ids required, booleans required, strings optional."""
        data = read_json(request, dict, fields=tuple(fields))
        for name, kind in fields.items():
            value = data.get(name)
            if name in _IDS:
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
        conductor = self.context.conductor()
        if conductor.credential(data["auth_id"]) is None:
            raise Refused(404, f"no credential {data['auth_id']!r}")
        if group and conductor.group(data["group_id"]) is None:
            raise Refused(404, f"no quota group {data['group_id']!r}")

    def _entry(self, cred_id: str, group_id: str, now: float) -> dict[str, Any]:
        st = self.context.state.group_state(cred_id, group_id)
        auto = st.auto_active(now)
        return {
            "auth_id": cred_id,
            "group_id": group_id,
            "suspended": st.blocked_until(now) is not None,
            "auto_suspended": auto,
            "auto_suspended_until": st.auto_until if auto else None,
            "auto_reason": st.auto_reason if auto else "",
            "manual_suspended": st.manual,
            "manual_reason": st.manual_reason,
            "updated_by": st.updated_by,
            "updated_at": st.updated_at,
        }
