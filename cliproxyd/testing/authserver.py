"""
A simulated OAuth authorization server playing one provider (Claude, Codex,
Gemini CLI or Antigravity), for login and token-refresh tests.

Serve it and point a provider at it::

    server = SimulatedAuthServer(PROVIDERS["claude"], reactor)
    port = reactor.listenTCP(0, QuietSite(server.resource()), interface="127.0.0.1")
    provider = server.provider_at(f"http://127.0.0.1:{port.getHost().port}")

(or wrap C{server.resource()} in C{StubTreq} for in-memory tests).

Routes, checked as strictly as the real ones:

    GET  /authorize   client_id, redirect_uri (a loopback URL ending in the
                      provider's callback path), response_type=code, scope
                      (the provider's, space-joined), code_challenge with
                      code_challenge_method=S256, state and the provider's
                      extra parameters. Answers 302 to
                      C{redirect_uri?code=...&state=...} (or C{?error=
                      access_denied&state=...} when C{deny} is set), so a
                      test follows it to a login's local callback.
    POST /token       JSON or form bodies. C{authorization_code}: the code is
                      used once, with the same client, redirect_uri and a
                      PKCE verifier whose S256 is the challenge (and, for a
                      JSON provider, the same state). C{refresh_token}: a
                      live refresh token gets a new access token, and a new
                      refresh token that replaces it (unless C{rotate} is
                      False). Errors are OAuth's C{{"error", "error_description"}}
                      with 400 (C{invalid_grant}) or 401 (C{invalid_client}).
    GET  /userinfo    C{{"email": ...}} for a live Bearer access token (Google's).

Answers look like each provider's: Claude's carries C{account: {email_address,
uuid}} and C{organization}; Codex's an C{id_token} (an unsigned JWT) with
C{email} and C{https://api.openai.com/auth: {chatgpt_account_id,
chatgpt_plan_type}}; Google's only tokens (the email is at /userinfo).

Scripting (the next requests of a grant type, C{"refresh_token"} by default):
L{fail_next} answers a status and body, L{hang_next} never answers.
Observing: L{calls} counts requests by grant type (and C{"authorize"},
C{"userinfo"}); L{last_body} and L{last_format} are the last token request's.
L{issue_refresh_token} mints a live refresh token without a login.

Run it alone with C{python -m cliproxyd.testing.authserver --provider claude
--port 18081}, then C{CLIPROXYD_OAUTH_BASE=http://127.0.0.1:18081 python -m
cliproxyd login --provider claude}.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sys
from collections import Counter, deque
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from attrs import define, field
from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from cliproxyd.credentials.providers import OAuthProvider, at_base

JSON = b"application/json"

#: Seconds an authorization code stays usable.
CODE_LIFETIME = 600.0

#: (access, refresh) token prefixes by provider type
_PREFIXES = {
    "claude": ("sk-ant-oat01-sim-", "sk-ant-ort01-sim-"),
    "codex": ("sim-codex-at-", "rt_sim-"),
    "gemini-cli": ("ya29.sim-", "1//sim-"),
    "antigravity": ("ya29.sim-", "1//sim-"),
    "vertex": ("ya29.sim-sa-", ""),
    "xai": ("sim-xai-at-", "sim-xai-rt-"),
    "kimi": ("sim-kimi-at-", "sim-kimi-rt-"),
    "qwen": ("sim-qwen-at-", "sim-qwen-rt-"),
    "iflow": ("sim-iflow-at-", "sim-iflow-rt-"),
}

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@define
class _Authorization:
    client_id: str
    redirect_uri: str
    challenge: str
    state: str
    issued_at: float
    used: bool = False


@define
class _Fault:
    status: int = 0  # 0: hang
    body: Any = None
    arrived: Deferred[None] | None = None


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of C{verifier}."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def unsigned_jwt(claims: dict[str, Any]) -> str:
    """A JWT with C{alg: none} and no signature, as test id_tokens."""
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@define(slots=False)
class SimulatedAuthServer:
    """
    @ivar provider: the provider it plays (its client id and secret are
        checked; its C{type} shapes the answers).
    @ivar email, account_id, plan_type: the account that logs in.
    @ivar expires_in: lifetime of the access tokens it issues, in seconds.
    @ivar rotate: refreshes return a new refresh token (the old one dies);
        when False they return none and the old one stays live.
    @ivar deny: the user refuses consent: /authorize redirects with
        C{error=access_denied}.
    @ivar calls: requests by grant type, and C{"authorize"}, C{"userinfo"}.
    @ivar last_body: the last token request's body, decoded.
    @ivar last_format: C{"json"} or C{"form"}: how that body was encoded.
    @ivar refresh_tokens: the live refresh tokens, with their account's email.
    @ivar access_tokens: the live access tokens, with their account's email.
    """

    provider: OAuthProvider
    clock: IReactorTime
    email: str = "user@example.com"
    account_id: str = "acct-sim-0001"
    plan_type: str = "plus"
    expires_in: int = 3600
    rotate: bool = True
    deny: bool = False
    calls: Counter[str] = field(factory=Counter)
    last_body: dict[str, Any] | None = None
    last_format: str = ""
    refresh_tokens: dict[str, str] = field(factory=dict)
    access_tokens: dict[str, str] = field(factory=dict)
    _codes: dict[str, _Authorization] = field(factory=dict)
    _faults: dict[str, deque[_Fault]] = field(factory=dict)
    #: device code -> whether the user has approved it (L{approve_devices})
    devices: dict[str, bool] = field(factory=dict)
    #: device code -> the PKCE challenge its authorization carried (Qwen's device flow)
    device_challenges: dict[str, str] = field(factory=dict)
    #: service account email -> its public key (L{service_account})
    service_keys: dict[str, Any] = field(factory=dict)
    #: the claims of the last service-account assertion taken
    last_assertion: dict[str, Any] | None = None
    #: iFlow: the API key its user info (and its platform's cookie login) hands out
    iflow_api_key: str = "sk-iflow-sim-0001"
    #: iFlow: the BXAuth cookie of the platform's logged-in session
    iflow_bxauth: str = "sim-bxauth-0001"
    #: iFlow: when the platform's keys expire, as it writes it
    iflow_key_expiry: str = "2026-12-31 15:04"
    #: Qwen: the API host its token answers name
    resource_url: str = "portal.qwen.ai"
    #: the last token request's headers (lower-case names)
    last_headers: dict[str, str] = field(factory=dict)

    app = Klein()

    def resource(self):
        return self.app.resource()

    def provider_at(self, base: str) -> OAuthProvider:
        """The provider with every endpoint on this server, served at C{base}."""
        return at_base(self.provider, base)

    # -- scripting --------------------------------------------------------------------

    def issue_refresh_token(self, email: str | None = None) -> str:
        """A live refresh token (of C{email}, by default the server's account), as if from a login."""
        token = self._token("refresh")
        self.refresh_tokens[token] = email or self.email
        return token

    def fail_next(self, n: int = 1, status: int = 400, body: Any = None, grant: str = "refresh_token") -> None:
        """
        The next C{n} token requests of C{grant} answer C{status} with
        C{body} (a dict is sent as JSON, bytes or str as they are; by default
        an OAuth C{invalid_grant} error for 400/401, C{server_error}
        otherwise), before any check.
        """
        if body is None:
            error = "invalid_grant" if status in (400, 401) else "server_error"
            body = {"error": error, "error_description": f"simulated failure {status}"}
        queue = self._faults.setdefault(grant, deque())
        queue.extend(_Fault(status, body) for _ in range(n))

    def hang_next(self, n: int = 1, grant: str = "refresh_token") -> Deferred[None]:
        """
        The next C{n} token requests of C{grant} never get an answer (until
        the client goes away). The Deferred fires when the first of them has
        arrived, so a test knows the server is hanging before it advances a
        clock.
        """
        arrived: Deferred[None] = Deferred()
        queue = self._faults.setdefault(grant, deque())
        queue.extend(_Fault(0, None, arrived) for _ in range(n))
        return arrived

    def service_account(self, token_uri: str, project: str = "sim-project",
                        email: str = "robot@sim-project.iam.gserviceaccount.com") -> dict[str, Any]:
        """
        A new Google service-account key (a fresh RSA key) whose assertions
        this server takes at C{token_uri}: the key file as Google issues it.
        """
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.service_keys[email] = key.public_key()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        return {"type": "service_account", "project_id": project, "private_key_id": "sim-key-1",
                "private_key": pem, "client_email": email, "client_id": "100000000000000000002",
                "token_uri": token_uri}

    def approve_devices(self) -> None:
        """The user approves every device code issued so far (a device flow's polls then get tokens)."""
        for code in self.devices:
            self.devices[code] = True

    # -- discovery and device authorization (RFC 8628) --------------------------------

    @app.route("/.well-known/openid-configuration", methods=["GET"])
    def discovery(self, request: IRequest) -> bytes:
        self.calls["discovery"] += 1
        request.setHeader(b"content-type", JSON)
        base = f"http://{request.getHeader(b'host').decode('latin-1')}"
        return json.dumps({"issuer": base, "token_endpoint": base + "/token",
                           "device_authorization_endpoint": base + "/device"}).encode()

    @app.route("/device", methods=["POST"])
    def device(self, request: IRequest) -> bytes:
        self.calls["device"] += 1
        request.setHeader(b"content-type", JSON)
        body = {k: v[0] for k, v in parse_qs(request.content.read().decode(), keep_blank_values=True).items()}
        if body.get("client_id") != self.provider.client_id:
            return self._error(request, 401, "invalid_client", "unknown client_id")
        challenge = body.get("code_challenge", "")
        if self.provider.type == "qwen" and (body.get("code_challenge_method") != "S256" or len(challenge) != 43):
            return self._error(request, 400, "invalid_request", "Qwen's device flow needs an S256 code_challenge")
        code = self._token("code")
        self.devices[code] = False
        if challenge:
            self.device_challenges[code] = challenge
        user_code = secrets.token_hex(4).upper()
        base = f"http://{request.getHeader(b'host').decode('latin-1')}"
        return json.dumps({"device_code": code, "user_code": user_code, "verification_uri": base + "/activate",
                           "verification_uri_complete": f"{base}/activate?user_code={user_code}",
                           "expires_in": 900, "interval": 5}).encode()

    # -- the authorization endpoint ---------------------------------------------------

    @app.route("/authorize", methods=["GET"])
    def authorize(self, request: IRequest) -> bytes:
        self.calls["authorize"] += 1
        args = {k.decode(): v[0].decode() for k, v in request.args.items()}
        if self.provider.type == "iflow":
            # iFlow's own form: the callback as "redirect", a phone login, no PKCE.
            args["redirect_uri"] = args.get("redirect", "")
        problem = self._check_authorize(args)
        if problem:
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return f"invalid_request: {problem}\n".encode()
        if self.deny:
            query = {"error": "access_denied", "error_description": "The user denied access", "state": args["state"]}
        else:
            code = self._token("code")
            self._codes[code] = _Authorization(
                client_id=args["client_id"], redirect_uri=args["redirect_uri"],
                challenge=args.get("code_challenge", ""), state=args["state"], issued_at=self.clock.seconds(),
            )
            query = {"code": code, "state": args["state"]}
        request.setResponseCode(302)
        request.setHeader(b"location", f"{args['redirect_uri']}?{urlencode(query)}".encode())
        return b""

    def _check_authorize(self, args: dict[str, str]) -> str:
        p = self.provider
        if args.get("client_id") != p.client_id:
            return "unknown client_id"
        redirect = urlsplit(args.get("redirect_uri", ""))
        if redirect.scheme != "http" or redirect.hostname not in ("localhost", "127.0.0.1") \
                or redirect.path != p.callback_path or redirect.query:
            return f"redirect_uri must be http://localhost:PORT{p.callback_path}"
        if p.type == "iflow":
            if (args.get("loginMethod"), args.get("type")) != ("phone", "phone"):
                return "loginMethod and type must be phone"
            return "" if args.get("state") else "state is required"
        if args.get("response_type") != "code":
            return "response_type must be code"
        if args.get("scope", "").split() != list(p.scopes):
            return "scope is not the client's"
        if args.get("code_challenge_method") != "S256":
            return "code_challenge_method must be S256"
        if len(args.get("code_challenge", "")) != 43:
            return "code_challenge must be an S256 challenge"
        if not args.get("state"):
            return "state is required"
        for key, value in p.authorize_params:
            if args.get(key) != value:
                return f"{key} must be {value}"
        return ""

    # -- the token endpoint -----------------------------------------------------------

    @app.route("/token", methods=["POST"])
    async def token(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", JSON)
        raw = request.content.read()
        content_type = (request.getHeader(b"content-type") or b"").decode("latin-1")
        try:
            if "json" in content_type:
                body = json.loads(raw)
                fmt = "json"
            else:
                body = {k: v[0] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
                fmt = "form"
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            return self._error(request, 400, "invalid_request", "the body cannot be decoded")
        grant = str(body.get("grant_type", ""))
        self.calls[grant] += 1
        self.last_body, self.last_format = body, fmt
        self.last_headers = {k.decode().lower(): v[0].decode("latin-1")
                             for k, v in request.requestHeaders.getAllRawHeaders()}
        queue = self._faults.get(grant)
        if queue:
            fault = queue.popleft()
            if fault.status == 0:
                if fault.arrived is not None and not fault.arrived.called:
                    fault.arrived.callback(None)
                await Deferred()  # klein cancels this when the client goes away
            request.setResponseCode(fault.status)
            if isinstance(fault.body, dict):
                return json.dumps(fault.body).encode()
            return fault.body.encode() if isinstance(fault.body, str) else fault.body
        if grant == JWT_BEARER:
            return self._assertion(request, body)
        if self.provider.basic_auth and not self._basic_ok(request):
            return self._error(request, 401, "invalid_client", "the client's Basic authentication is missing")
        if body.get("client_id") != self.provider.client_id or (
            self.provider.client_secret and body.get("client_secret") != self.provider.client_secret
        ):
            return self._error(request, 401, "invalid_client", "client authentication failed")
        if grant == "authorization_code":
            return self._exchange(request, body, fmt)
        if grant == "refresh_token":
            return self._refresh(request, body)
        if grant == DEVICE_GRANT and str(body.get("device_code")) in self.devices:
            code = str(body["device_code"])
            challenge = self.device_challenges.get(code)
            if challenge and s256(str(body.get("code_verifier", ""))) != challenge:
                return self._error(request, 400, "invalid_grant", "code_verifier does not match the code_challenge")
            if not self.devices[code]:
                return self._error(request, 400, "authorization_pending", "the user has not approved yet")
            del self.devices[code]
            self.device_challenges.pop(code, None)
            return self._grant(self.email, new_refresh=True)
        return self._error(request, 400, "unsupported_grant_type", f"grant_type {grant!r} is not supported")

    def _exchange(self, request: IRequest, body: dict[str, Any], fmt: str) -> bytes:
        auth = self._codes.get(str(body.get("code", "")))
        if auth is None or auth.used or self.clock.seconds() - auth.issued_at > CODE_LIFETIME:
            return self._error(request, 400, "invalid_grant", "the authorization code is invalid, expired or used")
        auth.used = True  # a code is burnt by its first use, right or wrong
        if body.get("redirect_uri") != auth.redirect_uri:
            return self._error(request, 400, "invalid_grant", "redirect_uri does not match the authorization")
        verifier = str(body.get("code_verifier", ""))
        if auth.challenge and (not 43 <= len(verifier) <= 128 or s256(verifier) != auth.challenge):
            return self._error(request, 400, "invalid_grant", "code_verifier does not match the code_challenge")
        if fmt == "json" and body.get("state") != auth.state:
            return self._error(request, 400, "invalid_grant", "state does not match the authorization")
        return self._grant(self.email, new_refresh=True)

    def _refresh(self, request: IRequest, body: dict[str, Any]) -> bytes:
        old = str(body.get("refresh_token", ""))
        email = self.refresh_tokens.get(old)
        if email is None:
            return self._error(request, 400, "invalid_grant", "the refresh token is invalid or revoked")
        if self.rotate:
            del self.refresh_tokens[old]
        return self._grant(email, new_refresh=self.rotate)

    def _basic_ok(self, request: IRequest) -> bool:
        pair = f"{self.provider.client_id}:{self.provider.client_secret}".encode()
        return request.getHeader(b"authorization") == b"Basic " + base64.b64encode(pair)

    def _assertion(self, request: IRequest, body: dict[str, Any]) -> bytes:
        """RFC 7523: a service account's RS256 JWT, checked against its public key, for an access token."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        def part(text: str) -> bytes:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

        try:
            head, claims_part, signature = str(body.get("assertion", "")).split(".")
            header, claims = json.loads(part(head)), json.loads(part(claims_part))
            key = self.service_keys[claims["iss"]]
            if header.get("alg") != "RS256":
                raise ValueError("alg must be RS256")
            key.verify(part(signature), f"{head}.{claims_part}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except (ValueError, KeyError, TypeError, InvalidSignature) as e:
            return self._error(request, 400, "invalid_grant", f"invalid JWT signature or claims: {e!r}")
        now = self.clock.seconds()
        if not claims.get("aud", "").endswith("/token") or not claims["iat"] - 60 <= now < claims["exp"]:
            return self._error(request, 400, "invalid_grant", "the assertion's audience or times are wrong")
        if claims["exp"] - claims["iat"] > 3600 or not set(claims.get("scope", "").split()) & set(self.provider.scopes):
            return self._error(request, 400, "invalid_scope", "the assertion lives too long or asks no scope")
        self.last_assertion = claims
        return self._grant(claims["iss"], new_refresh=False)

    def _grant(self, email: str, new_refresh: bool) -> bytes:
        access = self._token("access")
        self.access_tokens[access] = email
        answer: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": " ".join(self.provider.scopes),
        }
        if new_refresh:
            answer["refresh_token"] = self.issue_refresh_token(email)
        if self.provider.type == "claude":
            answer["account"] = {"uuid": self.account_id, "email_address": email}
            answer["organization"] = {"uuid": "org-sim-0001", "name": "Simulated Org"}
        elif self.provider.type == "qwen":
            answer["resource_url"] = self.resource_url
        elif self.provider.type == "xai":
            answer["id_token"] = unsigned_jwt({"iss": "https://auth.x.ai", "sub": f"user-{self.account_id}",
                                               "email": email})
        elif self.provider.type == "codex":
            now = int(self.clock.seconds())
            answer["id_token"] = unsigned_jwt({
                "iss": "https://auth.openai.com",
                "aud": [self.provider.client_id],
                "sub": f"user-{self.account_id}",
                "email": email,
                "email_verified": True,
                "iat": now,
                "exp": now + 3600,
                "https://api.openai.com/auth": {
                    "chatgpt_account_id": self.account_id,
                    "chatgpt_plan_type": self.plan_type,
                },
            })
        return json.dumps(answer).encode()

    # -- Google's userinfo ------------------------------------------------------------

    @app.route("/userinfo", methods=["GET"])
    def userinfo(self, request: IRequest) -> bytes:
        self.calls["userinfo"] += 1
        request.setHeader(b"content-type", JSON)
        if self.provider.type == "iflow":
            # iFlow's getUserInfo: the access token in the query, the account's API key in the answer.
            token = request.args.get(b"accessToken", [b""])[0].decode()
            if token not in self.access_tokens:
                return json.dumps({"success": False, "message": "invalid token"}).encode()
            return json.dumps({"success": True, "data": {"apiKey": self.iflow_api_key,
                                                         "email": self.access_tokens[token]}}).encode()
        auth = (request.getHeader(b"authorization") or b"").decode("latin-1")
        email = self.access_tokens.get(auth[7:]) if auth.lower().startswith("bearer ") else None
        if email is None:
            request.setResponseCode(401)
            return json.dumps({"error": {"code": 401, "message": "Invalid Credentials",
                                         "status": "UNAUTHENTICATED"}}).encode()
        return json.dumps({"id": "100000000000000000001", "email": email, "verified_email": True}).encode()

    # -- iFlow's platform: its API key for a logged-in browser's cookie ---------------------

    @app.route("/api/openapi/apikey", methods=["GET", "POST"])
    def iflow_apikey(self, request: IRequest) -> bytes:
        """GET: the account's key (its name, the key masked); POST {"name"}: a fresh key of that name."""
        request.setHeader(b"content-type", JSON)
        self.calls["apikey-" + request.method.decode().lower()] += 1
        cookie = (request.getHeader(b"cookie") or b"").decode("latin-1")
        fields = {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in cookie.split(";"))}
        if fields.get("BXAuth") != self.iflow_bxauth:
            return json.dumps({"success": False, "code": "401", "message": "not logged in"}).encode()
        key = {"name": self.email, "apiKeyMask": "sk-****" + self.iflow_api_key[-4:], "apiKey": "",
               "expireTime": self.iflow_key_expiry, "hasExpired": False}
        if request.method == b"POST":
            try:
                name = json.loads(request.content.read()).get("name")
            except (ValueError, AttributeError):
                name = None
            if name != self.email:
                return json.dumps({"success": False, "code": "400", "message": "no key of that name"}).encode()
            key["apiKey"] = self.iflow_api_key
        return json.dumps({"success": True, "code": "200", "data": key}).encode()

    # -- helpers ----------------------------------------------------------------------

    def _token(self, kind: str) -> str:
        """A new random token, looking like the provider's (C{kind}: access, refresh or code)."""
        access, refresh = _PREFIXES.get(self.provider.type, ("sim-at-", "sim-rt-"))
        prefix = {"access": access, "refresh": refresh}.get(kind, "sim-code-")
        return prefix + secrets.token_urlsafe(24)

    def _error(self, request: IRequest, status: int, error: str, description: str) -> bytes:
        request.setResponseCode(status)
        return json.dumps({"error": error, "error_description": description}).encode()


def main(argv: list[str] | None = None) -> None:
    import argparse

    from twisted.internet import reactor

    from cliproxyd.frontend.site import QuietSite
    from cliproxyd.credentials.providers import PROVIDERS

    parser = argparse.ArgumentParser(
        prog="python -m cliproxyd.testing.authserver",
        description="A simulated OAuth server of one provider, for trying `cliproxyd login`.",
    )
    parser.add_argument("--provider", required=True, choices=sorted(PROVIDERS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--email", default="user@example.com")
    args = parser.parse_args(argv)
    server = SimulatedAuthServer(PROVIDERS[args.provider], reactor, email=args.email)
    port = reactor.listenTCP(args.port, QuietSite(server.resource()), interface=args.host)
    print(f"simulated {args.provider} OAuth server on http://{args.host}:{port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
