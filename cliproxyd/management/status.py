"""
The daemon's state: uptime and counters (C{/status}), every credential's
routing state (C{/credentials}), clearing a credential's cooldowns
(C{/credentials/reset}) and the usage counters (C{/usage}).
"""

from __future__ import annotations

import os
from typing import Any

from twisted.web.iweb import IRequest

from cliproxyd._version import __version__
from cliproxyd.management.access import Refused
from cliproxyd.management.http import Resource, read_json, respond, route, whole_number


def process_counts(ctx: Any) -> dict[str, Any]:
    """
    What this process counted that adds up across worker processes (see
    L{cliproxyd.workers.peers.merge}): requests in flight, the attempts it
    made and, unless the StateStore already shares them between processes
    (its C{shares_counters}), usage per model and the counters of each
    credential.
    """
    state = ctx.state
    counts: dict[str, Any] = {
        "in_flight": ctx.in_flight(),
        "attempts": ctx.usage.total if ctx.usage is not None else 0,
    }
    if not getattr(state, "shares_counters", False):
        counts["usage"] = {model: u.as_json() for model, u in state.usage().items()}
        counts["credentials"] = {cred.id: state.stats(cred.id).as_json() for cred in ctx.conductor().creds}
    else:
        # the shared counters are whole already; what stays local is who used a credential last, and how
        latest = {}
        for cred in ctx.conductor().creds:
            stats = state.stats(cred.id)
            if stats.last_used_at is not None:
                latest[cred.id] = {k: getattr(stats, k) for k in _LATEST}
        counts["latest"] = latest
    if ctx.usage is not None:
        # /usage's counters and its most recent attempts (the latest PUBLISHED_RECENT of each worker)
        counts["attempt_usage"] = ctx.usage.as_json(PUBLISHED_RECENT)
    return counts


#: What of a credential's counters only the worker that used it knows.
_LATEST = ("last_status", "last_error", "last_used_at", "last_failed_at")
#: With worker processes, each one's latest attempts this many go into the machine's C{/usage}.
PUBLISHED_RECENT = 100


def machine_stats(counts: dict[str, Any] | None, state: Any, cred_id: str) -> dict[str, Any]:
    """A credential's counters for the whole machine (C{counts}: L{process_counts} merged; None: this process)."""
    if counts is not None and cred_id in counts.get("credentials", {}):
        return counts["credentials"][cred_id]
    stats = state.stats(cred_id).as_json()
    latest = (counts or {}).get("latest", {}).get(cred_id)
    if latest is not None and (latest.get("last_used_at") or 0) >= (stats.get("last_used_at") or 0):
        stats.update({k: latest.get(k) for k in _LATEST})
    return stats


class Status(Resource):
    """C{/status}, C{/credentials}, C{/credentials/reset} and C{/usage}."""

    @route("/status", "GET")
    async def status(self, request: IRequest) -> bytes:
        """
        Uptime, in-flight requests and every credential with its counters:
        with worker processes, every worker's counts added up (and a
        C{workers} list: each one's pid, in-flight and requests).
        """
        ctx = self.context
        conductor = ctx.conductor()
        counts = await ctx.peers.machine() if ctx.peers is not None else process_counts(ctx)
        now = ctx.clock.seconds()
        creds = []
        for cred in conductor.creds:
            entry: dict[str, Any] = {
                "id": cred.id,
                "provider": cred.provider,
                "type": cred.kind,
                "key": cred.fingerprint,
                "base_url": cred.base_url,
                "priority": cred.priority,
                "models": sorted({r.name for r in cred.routes}),
                "proxy": cred.proxy.describe(),  # the password masked
            }
            entry.update(machine_stats(counts, ctx.state, cred.id))
            pacing = conductor.pacing_status(cred, now)
            if pacing:
                entry["pacing"] = pacing
            creds.append(entry)
        answer = {
            "version": __version__,
            "uptime_seconds": round(ctx.clock.seconds() - ctx.started, 3),
            "in_flight": counts["in_flight"],
            "usage": dict(sorted(counts["usage"].items())) if "usage" in counts
            else {model: u.as_json() for model, u in sorted(ctx.state.usage().items())},
            "warmups": ctx.warmup_status(),
            # issue 16: probes sent and their outcomes, picks skipped at a limit or passed over
            "pacing": conductor.pacing_counters(),
            # config changes that wait for a restart (host, port, tls, ...): see runtime.RESTART_ONLY
            "restart_needed": getattr(ctx.runtime, "restart_needed", []),
            # memory (the default) or redis: connected, last error, writes not yet in Redis
            "state_store": ctx.state.describe(),
            "credentials": creds,
        }
        if "workers" in counts:
            answer["workers"] = counts["workers"]
            answer["answered_by"] = {"index": ctx.peers.index, "pid": os.getpid()}
        return respond(request, answer)

    @route("/credentials", "GET")
    async def credentials(self, request: IRequest) -> bytes:
        """
        Every credential with its routing state: per-model cooldowns, when
        it can next be used, its last error and its counters.
        """
        state = self.context.state
        # with worker processes: the counters and last errors of the whole machine
        counts = await self.context.peers.machine() if self.context.peers is not None else None
        now = self.context.clock.seconds()
        out = []
        for cred in self.context.conductor().creds:
            states = state.model_states(cred.id)
            models = {
                key: {
                    "cooling": s.blocked(now),
                    "next_retry_at": s.next_retry_at,
                    "retry_in_seconds": round(s.next_retry_at - now, 3) if s.blocked(now) else None,
                    "reason": s.reason,
                    "backoff_level": s.backoff_level,
                    "quota_exceeded": s.quota_exceeded,
                    "last_status": s.last_status,
                    "last_error": s.last_error,
                }
                for key, s in sorted(states.items())
            }
            blocked = [s.next_retry_at for s in states.values() if s.blocked(now)]
            served = {r.state_key for r in cred.routes}
            all_cooling = bool(served) and served <= {k for k, s in states.items() if s.blocked(now)}
            stats = machine_stats(counts, state, cred.id)
            out.append({
                "id": cred.id,
                "provider": cred.provider,
                "type": cred.kind,
                "key": cred.fingerprint,
                "priority": cred.priority,
                "disabled": cred.disabled,
                "proxy": cred.proxy.describe(),
                "models": sorted({r.name for r in cred.routes}),
                "unavailable": all_cooling,
                "next_retry_at": min(blocked) if all_cooling else None,
                "model_states": models,
                "last_error": stats["last_error"],
                "counters": stats,
            })
        return respond(request, {"now": now, "credentials": out})

    @route("/credentials/reset", "POST")
    async def reset(self, request: IRequest) -> bytes:
        """Clear a credential's cooldowns: C{{"id": ..., "model": optional}}."""
        data = read_json(request, fields=("id", "model"))
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise Refused(400, 'the body must be {"id": "<credential id>", "model": optional}')
        model = data.get("model")
        if model is not None and not isinstance(model, str):
            raise Refused(400, "model must be a string")
        conductor = self.context.conductor()
        if conductor.credential(data["id"]) is None:
            raise Refused(404, f"no credential {data['id']!r}")
        return respond(request, {"status": "ok", "reset": conductor.reset_cooldowns(data["id"], model)})

    @route("/usage", "GET")
    async def usage(self, request: IRequest) -> bytes:
        """
        The usage counters since start-up and the C{?limit=} most recent
        attempts; and each client key's usage by name (C{client-keys}).
        """
        limit = whole_number(request, "limit")
        usage = self.context.usage
        answer: dict[str, Any] = {"usage": usage.as_json(limit) if usage else {}}
        if usage is not None and self.context.peers is not None:
            # worker processes: every worker's counters added up, their recent attempts merged by time
            whole = dict((await self.context.peers.machine()).get("attempt_usage") or answer["usage"])
            if limit is not None:
                whole["recent"] = whole["recent"][-limit:] if limit > 0 else []
            answer["usage"] = whole
        gen, meter = self.context.generation(), self.context.keys
        if gen is not None and meter is not None and gen.config.client_keys:
            answer["client-keys"] = {k.name: meter.report(k) for k in gen.config.client_keys}
        return respond(request, answer)
