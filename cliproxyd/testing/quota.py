"""
The providers' account quota endpoints the Management Center's quota page
reads through C{/api-call}, simulated: Claude's C{/api/oauth/usage} and
C{/api/oauth/profile}, Codex's C{/backend-api/wham/usage} and its
rate-limit reset credits, Antigravity's C{v1internal:retrieveUserQuotaSummary}
and C{v1internal:loadCodeAssist}. Any host reaches it through a stub; each
wants C{Authorization: Bearer <token>} with a token C{valid} accepts (401
otherwise), and answers a small body of the real one's shape.

L{requests} records what came: C{(method, path, headers, body)}, headers
lower-cased.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest

JSON = b"application/json"


class SimulatedQuota:
    app = Klein()

    def __init__(self, valid: Callable[[str], bool] = bool) -> None:
        self.valid = valid
        #: when set, requests get no answer (until the client gives up)
        self.hang = False
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []

    def resource(self) -> Any:
        return self.app.resource()

    def _take(self, request: IRequest) -> Any:
        """Record the request; the 401 body when its token is not good (a Deferred that never fires, hanging)."""
        headers = {k.decode("latin-1").lower(): v[0].decode("latin-1")
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        self.requests.append((request.method.decode(), request.path.decode(), headers, request.content.read()))
        if self.hang:
            return Deferred()
        request.setHeader(b"content-type", JSON)
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not self.valid(auth[7:]):
            request.setResponseCode(401)
            return json.dumps({"error": {"type": "authentication_error", "message": "invalid token"}}).encode()
        return None

    @app.route("/api/oauth/usage", methods=["GET"])
    def claude_usage(self, request: IRequest) -> bytes:
        return self._take(request) or json.dumps({
            "five_hour": {"utilization": 12.0, "resets_at": "2026-12-02T05:00:00Z"},
            "seven_day": {"utilization": 40.0, "resets_at": "2026-12-07T00:00:00Z"},
        }).encode()

    @app.route("/api/oauth/profile", methods=["GET"])
    def claude_profile(self, request: IRequest) -> bytes:
        return self._take(request) or json.dumps({"account": {"email": "a@x.com", "has_claude_max": True}}).encode()

    @app.route("/backend-api/wham/usage", methods=["GET"])
    def codex_usage(self, request: IRequest) -> bytes:
        return self._take(request) or json.dumps({
            "plan_type": "plus",
            "rate_limit": {"primary_window": {"used_percent": 20, "limit_window_seconds": 18000}},
        }).encode()

    @app.route("/backend-api/wham/rate-limit-reset-credits", methods=["GET"])
    def codex_credits(self, request: IRequest) -> bytes:
        return self._take(request) or json.dumps({"available": 1}).encode()

    @app.route("/backend-api/wham/rate-limit-reset-credits/consume", methods=["POST"])
    def codex_consume(self, request: IRequest) -> bytes:
        return self._take(request) or json.dumps({"consumed": True}).encode()

    @app.route("/v1internal:retrieveUserQuotaSummary", methods=["POST"])
    def antigravity_quota(self, request: IRequest) -> bytes:
        return self._take(request) or json.dumps({"models": {"gemini-3-pro": {"remainingFraction": 0.5}}}).encode()

    @app.route("/v1internal:loadCodeAssist", methods=["POST"])
    def antigravity_code_assist(self, request: IRequest) -> bytes:
        return self._take(request) or json.dumps({"currentTier": {"id": "g1-pro-tier", "name": "Pro"}}).encode()


# -- the usage answers a reset probe reads, in their real shapes (L{AccountQuota}) --


def _rfc3339(at: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class AccountQuota:
    """
    One account's quota as its provider's usage endpoint reports it: the
    fraction C{left} (0 to 1) of its tightest window, which resets at
    C{reset_at} (epoch seconds); a second, roomier window rides along as
    the real answers have one.
    """

    def __init__(self, left: float, reset_at: float) -> None:
        self.left = left
        self.reset_at = reset_at

    def claude(self) -> dict[str, Any]:
        """C{GET /api/oauth/usage}: utilization in percent used, RFC 3339 resets; null windows as Anthropic sends."""
        return {
            "five_hour": {"utilization": round((1 - self.left) * 100, 1), "resets_at": _rfc3339(self.reset_at)},
            "seven_day": {"utilization": 35.0, "resets_at": _rfc3339(self.reset_at + 5 * 86400)},
            "seven_day_oauth_apps": None, "seven_day_opus": None, "seven_day_sonnet": None,
            "extra_usage": {"is_enabled": False, "monthly_limit": 0, "used_credits": 0, "utilization": None},
        }

    def codex(self, now: float) -> dict[str, Any]:
        """C{GET /backend-api/wham/usage}: the 5-hour (primary) and weekly (secondary) windows."""
        spent = self.left <= 0
        return {
            "plan_type": "plus",
            "rate_limit": {
                "allowed": not spent, "limit_reached": spent,
                "primary_window": {"used_percent": int(round((1 - self.left) * 100)), "limit_window_seconds": 18000,
                                   "reset_after_seconds": max(0, int(self.reset_at - now)),
                                   "reset_at": int(self.reset_at)},
                "secondary_window": {"used_percent": 30, "limit_window_seconds": 604800,
                                     "reset_after_seconds": int(self.reset_at - now) + 86400,
                                     "reset_at": int(self.reset_at) + 86400},
            },
            "credits": {"has_credits": False, "unlimited": False, "balance": "0"},
        }

    def _google(self) -> dict[str, Any]:
        # proto3 JSON leaves a zero out: a spent bucket has its resetTime and no remainingFraction.
        info: dict[str, Any] = {"resetTime": _rfc3339(self.reset_at)}
        if self.left > 0:
            info["remainingFraction"] = self.left
        return info

    def gemini_cli(self, models: tuple[str, ...]) -> dict[str, Any]:
        """C{POST v1internal:retrieveUserQuota}: a bucket per model (and token type)."""
        return {"buckets": [{"modelId": m, "tokenType": "REQUESTS", **self._google()} for m in models]}

    def antigravity(self, models: tuple[str, ...]) -> dict[str, Any]:
        """C{POST v1internal:fetchAvailableModels}: each model with its C{quotaInfo}."""
        return {"models": {m: {"displayName": m, "quotaInfo": self._google()} for m in models}}
