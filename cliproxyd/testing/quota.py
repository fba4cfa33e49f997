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
