"""
C{POST /api-call}: an upstream call made with a credential's own token, for
the Management Center's quota page (how much of a Claude, Codex or
Antigravity account's quota is used, and its plan).

CLIProxyAPI relays any request to any URL; cliproxyd makes only the calls
that page makes (L{ALLOWED}: method and exact URL, per kind of account),
so the management key cannot be used to send an account's token anywhere
else; and the model listings of the panel's provider forms (a C{GET} of a
path ending in C{/models}, with the key the form has in its headers and no
C{auth_index}: no stored token goes with it). Anything else is a 403 that
names what is allowed. In a header,
C{$TOKEN$} stands for the account's access token, refreshed first (through
the refresher, sharing a refresh under way) when it has expired or is
about to.

The call goes through the daemon's shared HTTP client and is answered as
CLIProxyAPI answers it: C{{"status_code", "header": {name: [values]},
"body": text}}, whatever the upstream's status.
"""

from __future__ import annotations

from typing import Any, NoReturn
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest

from cliproxyd.credentials.index import auth_index
from cliproxyd.management.access import Refused
from cliproxyd.management.http import Resource, read_json, respond, route

#: Seconds an upstream call may take, answer included.
CALL_TIMEOUT = 60.0
#: A token that expires within this many seconds is refreshed before the call.
EXPIRY_SKEW = 30.0
#: The largest upstream answer relayed, in bytes.
MAX_ANSWER = 2 * 1024 * 1024

_ANTIGRAVITY_HOSTS = ("daily-cloudcode-pa.googleapis.com", "daily-cloudcode-pa.sandbox.googleapis.com",
                      "cloudcode-pa.googleapis.com")

#: Per account type, the (method, URL) calls the panel's quota page makes.
ALLOWED: dict[str, frozenset[tuple[str, str]]] = {
    "claude": frozenset({
        ("GET", "https://api.anthropic.com/api/oauth/usage"),
        ("GET", "https://api.anthropic.com/api/oauth/profile"),
    }),
    "codex": frozenset({
        ("GET", "https://chatgpt.com/backend-api/wham/usage"),
        ("GET", "https://chatgpt.com/backend-api/wham/rate-limit-reset-credits"),
        ("POST", "https://chatgpt.com/backend-api/wham/rate-limit-reset-credits/consume"),
    }),
    "antigravity": frozenset(
        ("POST", f"https://{host}/v1internal:{call}")
        for host in _ANTIGRAVITY_HOSTS for call in ("retrieveUserQuotaSummary", "loadCodeAssist")
    ),
}

#: Request headers not passed on (the client sets them itself).
_DROPPED = frozenset({"host", "content-length", "connection", "transfer-encoding", "keep-alive", "upgrade",
                      "proxy-authorization", "te", "trailer"})

_FIELDS = ("auth_index", "authIndex", "AuthIndex", "method", "url", "header", "data", "proxy_url")


def _index_of(data: dict[str, Any]) -> str:
    """The body's auth index, in any spelling the panel uses ("" for none)."""
    return next((data[k].strip() for k in ("auth_index", "authIndex", "AuthIndex")
                 if isinstance(data.get(k), str) and data[k].strip()), "")


def _is_model_listing(method: str, parts: Any) -> bool:
    """A C{GET} of an http(s) path ending in C{/models} (C{?pageToken=} allowed): what the provider forms list."""
    return (method == "GET" and parts.scheme in ("http", "https") and not parts.fragment
            and parts.path.rstrip("/").endswith("/models"))


def _allowed_text(kind: str) -> str:
    calls = sorted(ALLOWED.get(kind, ()), key=lambda c: (c[1], c[0]))
    return "; ".join(f"{m} {u}" for m, u in calls) or "none"


class ApiCall(Resource):
    """C{POST /api-call}."""

    @route("/api-call", "POST")
    async def call(self, request: IRequest) -> bytes:
        data = read_json(request, dict, fields=_FIELDS)
        method = data.get("method")
        url = data.get("url")
        header = data.get("header") or {}
        body = data.get("data") or ""
        if not isinstance(method, str) or not method.strip():
            raise Refused(400, "missing method")
        if not isinstance(url, str) or not url.strip():
            raise Refused(400, "missing url")
        if not isinstance(header, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in header.items()):
            raise Refused(400, "header must be an object of strings")
        for k, v in header.items():
            if not k.strip() or any(c in k + v for c in "\r\n\0") or any(c in k for c in " :"):
                raise Refused(400, f"header {k!r}: a name without spaces or colons, and no line breaks")
        if not isinstance(body, str):
            raise Refused(400, "data must be a string")
        if data.get("proxy_url"):
            raise Refused(400, "proxy_url: api-call goes the way the credential's own requests go")
        method, url = method.strip().upper(), url.strip()
        parts = urlsplit(url)
        if not parts.scheme or not parts.netloc:
            raise Refused(400, "invalid url")
        if not _index_of(data) and _is_model_listing(method, parts):
            return respond(request, await self._list_models(url, header))
        cred = self._credential(data)
        kind = cred.account.type
        target = f"{parts.scheme}://{parts.netloc}{parts.path}"
        if parts.query or parts.fragment or (method, target) not in ALLOWED.get(kind, ()):
            raise Refused(403, f"api-call makes only the quota calls of the Management Center, and "
                               f"{method} {url} is not one of them; for a {kind} account those are: "
                               f"{_allowed_text(kind)}")
        if any("$TOKEN$" in v for v in header.values()):
            token = await self._token(cred)
            header = {k: v.replace("$TOKEN$", token) for k, v in header.items()}
        headers = {k: [v] for k, v in header.items() if k.strip().lower() not in _DROPPED}
        return respond(request, await self._send(cred, method, url, headers, body.encode("utf-8")))

    async def _list_models(self, url: str, header: dict[str, str]) -> dict[str, Any]:
        """A provider form's model listing: the form's own key, sent as the daemon's own calls go."""
        if any("$TOKEN$" in v for v in header.values()):
            raise Refused(403, "a model listing without auth_index sends the key its headers give; $TOKEN$ "
                               "(an account's token) goes only with that account's quota calls")
        headers = {k: [v] for k, v in header.items() if k.strip().lower() not in _DROPPED}
        return await self._send(None, "GET", url, headers, b"")

    def _credential(self, data: dict[str, Any]) -> Any:
        """The OAuth account the body's auth index names (every spelling the panel uses)."""
        index = _index_of(data)
        if not index:
            raise Refused(403, "api-call needs the auth_index of an OAuth credential: cliproxyd makes only "
                               "an account's own quota calls, never calls with a key given in the request")
        gen = self.context.generation()
        for cred in gen.creds if gen is not None else ():
            if auth_index(cred) == index:
                if cred.account is None or cred.account.type not in ALLOWED:
                    raise Refused(403, f"api-call makes quota calls of {', '.join(ALLOWED)} accounts only; "
                                       f"{cred.fingerprint} is a {cred.kind} credential")
                return cred
        raise Refused(404, f"no credential has auth_index {index!r}")

    async def _token(self, cred: Any) -> str:
        """The account's access token, refreshed first when it has expired or is about to."""
        account = cred.account
        expires = account.expires_at
        if expires is not None and expires - self.context.clock.seconds() <= EXPIRY_SKEW:
            refresher = self.context.refresher
            if refresher is None or not await refresher.refresh_now(cred):
                why = refresher.status(account).last_error if refresher is not None else "no refresher"
                raise Refused(400, f"the token of {account.name} has expired and its refresh failed: "
                                   f"{why or 'no refresh token'}")
        if not account.access_token:
            raise Refused(400, f"{account.name} has no access token")
        return account.access_token

    async def _send(self, cred: Any, method: str, url: str, headers: dict[str, list[str]],
                    body: bytes) -> dict[str, Any]:
        """Make the call: as C{cred}'s own requests go (its proxy), or, for no credential, as the daemon's do."""
        client = self.context.client
        if client is None:
            raise Refused(503, "this daemon has no outbound HTTP client")
        for_setting = getattr(client, "for_setting", None)
        if cred is not None and for_setting is not None:
            client = for_setting(cred.proxy)
        who = cred.fingerprint if cred is not None else "a model listing"
        shown = url.partition("?")[0]  # a query may carry a key: never logged

        async def go() -> tuple[Any, bytes]:
            response = await client.request(method, url, headers=headers, data=body or None)
            return response, await response.content()

        def timed_out(result: object, seconds: float) -> NoReturn:
            # Whatever the cancelled request failed with, it was the timeout.
            raise Refused(504, f"{url} did not answer within {seconds:g} s")

        d = Deferred.fromCoroutine(go())
        d.addTimeout(CALL_TIMEOUT, self.context.clock, onTimeoutCancel=timed_out)
        try:
            response, content = await d
        except Refused:
            raise
        except Exception as e:
            self.log.warn("api-call for {cred} to {url} failed: {error}", cred=who, url=shown,
                          error=type(e).__name__)
            raise Refused(502, f"request failed: {type(e).__name__}") from None
        if len(content) > MAX_ANSWER:
            raise Refused(502, f"the answer of {url} is larger than {MAX_ANSWER} bytes")
        self.log.info("api-call for {cred}: {method} {url} answered {status}", cred=who,
                      method=method, url=shown, status=response.code)
        return {
            "status_code": response.code,
            "header": {k.decode("latin-1"): [v.decode("latin-1") for v in vs]
                       for k, vs in response.headers.getAllRawHeaders()},
            "body": content.decode("utf-8", "replace"),
        }
