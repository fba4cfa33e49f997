"""
CLIProxyAPI's usage and quota routes, and its version check:

  - C{GET /api-key-usage}: per provider, per API key (C{"BASE_URL|KEY"},
    the entry's configured C{base-url}, empty when it has none), its
    successes and failures since start-up and its recent request windows
    (L{cliproxyd.management.recent.RecentRequests}). OAuth accounts are not in it (their usage is
    in C{/status} and C{/auth-files}).
  - C{GET /usage-queue?count=N}: the N (default 1) oldest usage records of
    the last minute, each handed out once, in CLIProxyAPI's record shape.
  - C{POST /reset-quota} C{{"auth_index": ...}}: forget a credential's
    cooldowns and automatic quota-group suspensions.
  - C{GET /latest-version}: cliproxyd has no update server, so the answer
    is the running version, saying so; nothing is fetched.
  - C{GET /plugins}: cliproxyd has no plugins, so the list is empty (the
    Management Center's OAuth page asks for it); the other plugin routes
    answer 501 (L{cliproxyd.management.catalog}).
"""

from __future__ import annotations

import time
from typing import Any

from twisted.web.iweb import IRequest

from cliproxyd._version import __version__
from cliproxyd.conductor.conductor import Attempt
from cliproxyd.credentials.model import API_KEY_PROVIDERS, Credential
from cliproxyd.management.access import Refused
from cliproxyd.management.http import Resource, arg, read_json, respond, route
from cliproxyd.management.usagequeue import UsageRecords

#: What C{/latest-version} says beside the version.
NO_UPDATE_SERVER = (
    "cliproxyd does not look for releases: there is no update server. This is the version running; "
    "upgrade with your package manager"
)


def _configured_base_urls(gen: Any) -> dict[tuple[str, str], str]:
    """("kind|base url used", api key) -> the entry's C{base-url} as configured ("" for the provider's default)."""
    out: dict[tuple[str, str], str] = {}
    if gen is None:
        return out
    config = gen.config
    for spec in API_KEY_PROVIDERS:
        for entry in getattr(config, spec.kind.replace("-", "_")):
            out.setdefault((spec.kind + "|" + (entry.base_url or spec.base_url), entry.api_key), entry.base_url)
    return out


def _auth_type(cred: Credential | None) -> str:
    if cred is None:
        return "unknown"
    return "oauth" if cred.account is not None else "apikey"


class KeyUsage(Resource):
    """C{/api-key-usage}, C{/usage-queue}, C{/reset-quota} and C{/latest-version}."""

    @property
    def records(self) -> UsageRecords:
        return self.context.records

    @route("/api-key-usage", "GET")
    async def api_key_usage(self, request: IRequest) -> bytes:
        """Per provider, per C{base-url|api-key}: successes, failures and the recent windows."""
        bases = _configured_base_urls(self.context.generation())
        recent = self.context.recent
        out: dict[str, dict[str, Any]] = {}
        for cred in self.context.conductor().creds:
            if cred.account is not None or not cred.api_key:
                continue
            base = bases.get((cred.kind + "|" + cred.base_url, cred.api_key), cred.base_url)
            success, failed = self.records.totals(cred.id)
            out.setdefault(cred.provider.lower(), {})[f"{base}|{cred.api_key}"] = {
                "success": success,
                "failed": failed,
                "recent_requests": recent.snapshot(cred.id) if recent is not None else [],
            }
        return respond(request, out)

    @route("/usage-queue", "GET")
    async def usage_queue(self, request: IRequest) -> bytes:
        """The C{?count=} (default 1) oldest usage records, removed from the queue."""
        given = arg(request, "count")
        count = 1
        if given is not None and given.strip():
            try:
                count = int(given.strip())
            except ValueError:
                count = 0
            if count <= 0:
                raise Refused(400, "count must be a positive integer")
        conductor = self.context.conductor()
        return respond(request, [self._record(at, a, conductor.credential(a.cred_id))
                                 for at, a in self.records.pop(count)])

    @staticmethod
    def _record(at: float, attempt: Attempt, cred: Credential | None) -> dict[str, Any]:
        """One usage record in CLIProxyAPI's shape (no token counts: cliproxyd does not count tokens)."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"
        return {
            "timestamp": stamp,
            "latency_ms": int(round(attempt.latency * 1000)),
            "source": cred.fingerprint if cred is not None else "",
            "auth_index": attempt.cred_id,
            "tokens": {"input_tokens": 0, "output_tokens": 0, "reasoning_tokens": 0, "cached_tokens": 0,
                       "total_tokens": 0},
            "failed": not attempt.ok,
            "fail": {"status_code": attempt.status or 0, "body": "" if attempt.ok else attempt.error[:300]},
            "provider": attempt.provider,
            "executor_type": cred.kind if cred is not None else "unknown",
            "model": attempt.model,
            "alias": attempt.model,
            "auth_type": _auth_type(cred),
        }

    @route("/reset-quota", "POST")
    async def reset_quota(self, request: IRequest) -> bytes:
        """Forget a credential's cooldowns and automatic quota-group suspensions: C{{"auth_index": id}}."""
        body = read_json(request, dict, fields=("auth_index",))
        index = body.get("auth_index")
        if not isinstance(index, str) or not index.strip():
            raise Refused(400, "auth_index is required: a credential id as GET /credentials shows it")
        conductor = self.context.conductor()
        cred = conductor.credential(index.strip()) or next(
            (c for c in conductor.creds if c.account is not None and c.fingerprint == index.strip()), None)
        if cred is None:
            raise Refused(404, f"no credential {index.strip()!r}")
        models = conductor.reset_cooldowns(cred.id)
        groups = conductor.clear_auto(cred.id)
        return respond(request, {"status": "ok", "auth_index": cred.id, "models": models, "groups": groups})

    @route("/plugins", "GET")
    async def plugins(self, request: IRequest) -> bytes:
        """No plugins: CLIProxyAPI's list, empty."""
        return respond(request, {"plugins_enabled": False, "plugins_dir": "", "plugins": []})

    @route("/latest-version", "GET")
    async def latest_version(self, request: IRequest) -> bytes:
        """The running version: there is no update server to ask."""
        return respond(request, {"latest-version": __version__, "current-version": __version__,
                                 "message": NO_UPDATE_SERVER})
