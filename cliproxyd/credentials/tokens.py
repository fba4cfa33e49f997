"""
The OAuth token endpoint: refreshing an access token, and exchanging a
login's authorization code for the first one.

Both speak to C{provider.token_url} (or an override) in the body encoding
the provider wants (C{provider.token_body}: JSON for Claude, a form for
Codex and Google) and answer a L{TokenGrant}, or raise L{TokenError}.

No token ever reaches an error message: the refresh token, the
authorization code, the PKCE verifier and the client secret sent are
replaced by their fingerprints wherever the server's error text echoes
them, and only the error fields of an error answer are quoted.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import urlencode

from attrs import field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from cliproxyd.logging import fingerprint
from cliproxyd.credentials.providers import OAuthProvider

#: Seconds a token request may take, connection to last body byte.
TOKEN_TIMEOUT = 30.0

#: OAuth error codes that mean the grant (the refresh token, the code) is
#: dead for good: asking again cannot help, the account must log in again.
PERMANENT_ERRORS = frozenset({
    "invalid_grant",
    "invalid_client",
    "unauthorized_client",
    "refresh_token_expired",
    "refresh_token_reused",
    "refresh_token_invalidated",
})

#: HTTP statuses that, whatever the body says, mean the same.
PERMANENT_STATUSES = frozenset({400, 401})

#: How much of a server's error text an error message quotes.
DETAIL_LIMIT = 300


@frozen
class TokenGrant:
    """
    What the token endpoint granted.

    @ivar refresh_token: the new refresh token, or the one sent when the
        server returned none (Google does not rotate them).
    @ivar expires_in: the access token's lifetime in seconds, from the
        response; C{None} when it did not say.
    @ivar raw: the whole decoded response (account details, scope, ...).
    """

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: float | None
    id_token: str = field(default="", repr=False)
    raw: dict = field(factory=dict, repr=False)
    #: other fields of the account's file this grant changes (Qwen's C{resource_url}, iFlow's C{api_key})
    fields: dict = field(factory=dict, repr=False)


class TokenError(Exception):
    """
    The token endpoint did not grant a token.

    @ivar status: the HTTP status, or 0 when there was no answer (refused
        connection, timeout, TLS failure).
    @ivar message: one line for a log or a terminal; never holds a token.
    @ivar permanent: the grant is dead (C{invalid_grant}, a 400 or a 401):
        retrying cannot help, the account must log in again. Transient
        failures (no answer, 429, 5xx, an unreadable 200) are worth retrying.
    """

    def __init__(self, status: int, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.permanent = permanent

    def __repr__(self) -> str:
        return f"TokenError(status={self.status}, message={self.message!r}, permanent={self.permanent})"


async def refresh(
    client: Any,
    provider: OAuthProvider,
    refresh_token: str,
    *,
    client_id: str | None = None,
    client_secret: str | None = None,
    token_url: str | None = None,
    clock: IReactorTime,
    timeout: float = TOKEN_TIMEOUT,
    headers: dict[str, str] | None = None,
) -> TokenGrant:
    """
    Trade C{refresh_token} for a new access token (C{headers}: more request
    headers, as Kimi's device headers).

    @param client: a treq C{HTTPClient} (or C{StubTreq}).
    @param client_id, client_secret, token_url: override the provider's
        (a credential file may name its own client, as Gemini CLI files do).
    @param clock: runs the C{timeout}.
    @raise TokenError: on any failure, C{permanent} when the refresh token
        is dead.
    """
    if not refresh_token:
        raise TokenError(0, "no refresh token to refresh with", permanent=True)
    fields = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": client_id if client_id is not None else provider.client_id,
    }
    secret = client_secret if client_secret is not None else provider.client_secret
    if secret:
        fields["client_secret"] = secret
    url = token_url or provider.token_url or await discover_token_url(client, provider, clock=clock, timeout=timeout)
    raw = await _post(client, provider, url, fields, (refresh_token, secret), clock, timeout, extra_headers=headers)
    return _grant(raw, refresh_token)


async def discover_token_url(client: Any, provider: OAuthProvider, *, clock: IReactorTime,
                             timeout: float = TOKEN_TIMEOUT) -> str:
    """The C{token_endpoint} of the provider's OpenID discovery document (xAI's)."""
    return (await discover(client, provider, clock=clock, timeout=timeout))["token_endpoint"]


async def discover(client: Any, provider: OAuthProvider, *, clock: IReactorTime,
                   timeout: float = TOKEN_TIMEOUT) -> dict[str, str]:
    """
    The token and device endpoints of the provider's OpenID discovery
    document, checked to be http(s) URLs.

    @raise TokenError: no document, or one without a usable token endpoint.
    """
    if not provider.discovery_url:
        raise TokenError(0, f"{provider.type} has no token endpoint to use", permanent=True)
    raw = await get_json(client, provider.discovery_url, clock=clock, timeout=timeout, what="the discovery document")
    out = {}
    for name in ("token_endpoint", "device_authorization_endpoint"):
        value = raw.get(name)
        if isinstance(value, str) and value.startswith(("https://", "http://")):
            out[name] = value
    if "token_endpoint" not in out:
        raise TokenError(0, "the discovery document names no token_endpoint")
    return out


async def get_json(client: Any, url: str, *, clock: IReactorTime, timeout: float = TOKEN_TIMEOUT,
                   headers: dict[str, str] | None = None, secrets: tuple[str, ...] = (),
                   what: str = "the server") -> dict:
    """GET a JSON object (a discovery document, iFlow's user details), within C{timeout}; else L{TokenError}."""
    async def call() -> tuple[int, bytes]:
        response = await client.get(url, headers={"accept": "application/json", **(headers or {})})
        return response.code, await response.content()

    status, content = await _timed(call(), clock, timeout, secrets, what)
    if not 200 <= status < 300:
        raise _error(status, content, secrets, what)
    try:
        raw = json.loads(content)
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        raise TokenError(status, f"{what} answered {status} with something that is not a JSON object")
    return raw


async def refresh_iflow(client: Any, provider: OAuthProvider, refresh_token: str, *,
                        clock: IReactorTime, timeout: float = TOKEN_TIMEOUT) -> TokenGrant:
    """
    An iFlow refresh: new tokens, then the account's details (with the new
    access token), whose C{apiKey} is what iFlow's API takes; the grant's
    C{fields} carry it (and the account's email) into the file.
    """
    grant = await refresh(client, provider, refresh_token, clock=clock, timeout=timeout)
    api_key, email = await iflow_user_info(client, provider, grant.access_token, clock=clock, timeout=timeout)
    fields = {"api_key": api_key}
    if email:
        fields["email"] = email
    return TokenGrant(grant.access_token, grant.refresh_token, grant.expires_in, grant.id_token, grant.raw, fields)


async def iflow_user_info(client: Any, provider: OAuthProvider, access_token: str, *,
                          clock: IReactorTime, timeout: float = TOKEN_TIMEOUT) -> tuple[str, str]:
    """
    iFlow's getUserInfo (the access token in the query): the account's API
    key and its email (or phone; "" when it names neither).

    @raise TokenError: no answer, or one with no API key.
    """
    url = f"{provider.userinfo_url}?{urlencode({'accessToken': access_token})}"
    info = await get_json(client, url, clock=clock, timeout=timeout, secrets=(access_token,),
                          what="iFlow's user info")
    data = info.get("data") if isinstance(info.get("data"), dict) else {}
    api_key = data.get("apiKey")
    if not info.get("success") or not isinstance(api_key, str) or not api_key:
        raise TokenError(200, "iFlow's user info has no apiKey")
    email = data.get("email") or data.get("phone")
    return api_key, email if isinstance(email, str) else ""


#: The lifetime asked of a service account's access token (Google's maximum).
ASSERTION_LIFETIME = 3600
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def service_account_assertion(key: Any, email: str, audience: str, scopes: tuple[str, ...], now: float,
                              key_id: str = "") -> str:
    """A Google service account's signed JWT (RS256) asking C{audience} for a token of C{scopes}."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    header = {"alg": "RS256", "typ": "JWT", **({"kid": key_id} if key_id else {})}
    issued = int(now)
    claims = {"iss": email, "scope": " ".join(scopes), "aud": audience, "iat": issued,
              "exp": issued + ASSERTION_LIFETIME}
    signing_input = _b64(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64(signature)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


async def service_account_token(client: Any, provider: OAuthProvider, key: Any, email: str, *,
                                token_url: str | None = None, key_id: str = "", clock: IReactorTime,
                                timeout: float = TOKEN_TIMEOUT) -> TokenGrant:
    """
    An access token for a service account (Vertex): a JWT signed with its
    private key, traded at its C{token_uri} (RFC 7523's jwt-bearer grant).
    """
    url = token_url or provider.token_url
    assertion = service_account_assertion(key, email, url, provider.scopes, clock.seconds(), key_id)
    fields = {"grant_type": JWT_BEARER, "assertion": assertion}
    raw = await _post(client, provider, url, fields, (assertion,), clock, timeout)
    return _grant(raw, "")


async def exchange_code(
    client: Any,
    provider: OAuthProvider,
    code: str,
    verifier: str,
    redirect_uri: str,
    state: str = "",
    *,
    token_url: str | None = None,
    clock: IReactorTime,
    timeout: float = TOKEN_TIMEOUT,
) -> TokenGrant:
    """
    Trade a login's authorization C{code} (with its PKCE C{verifier} and the
    C{redirect_uri} the authorization used) for the first tokens. Claude
    (a JSON token endpoint) also gets the C{state}.

    @raise TokenError: on any failure.
    """
    fields = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": provider.client_id,
        "code_verifier": verifier,
    }
    if provider.client_secret:
        fields["client_secret"] = provider.client_secret
    if provider.token_body == "json" and state:
        fields["state"] = state
    raw = await _post(client, provider, token_url or provider.token_url, fields,
                      (code, verifier, provider.client_secret), clock, timeout)
    return _grant(raw, "")


# -- the request --------------------------------------------------------------------


async def _post(
    client: Any,
    provider: OAuthProvider,
    url: str,
    fields: dict[str, str],
    secrets: tuple[str, ...],
    clock: IReactorTime,
    timeout: float,
    *,
    extra_headers: dict[str, str] | None = None,
    need_token: bool = True,
    errors_in_body: bool = False,
) -> dict:
    """
    POST C{fields} to C{url}: the answer's JSON object. C{need_token}: it
    must grant an C{access_token}; C{errors_in_body}: an OAuth error answer
    (a 4xx whose body has C{error}, as a device flow's polls get) is
    returned, not raised.
    """
    if provider.token_body == "json":
        body = json.dumps(fields).encode()
        content_type = "application/json"
    else:
        body = urlencode(fields).encode()
        content_type = "application/x-www-form-urlencoded"
    headers = {"content-type": content_type, "accept": "application/json", **(extra_headers or {})}
    if provider.basic_auth:
        pair = f"{provider.client_id}:{provider.client_secret}".encode()
        headers["authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")

    async def call() -> tuple[int, bytes]:
        response = await client.post(url, data=body, headers=headers)
        return response.code, await response.content()

    status, content = await _timed(call(), clock, timeout, secrets, "the token endpoint")
    try:
        raw = json.loads(content)
    except ValueError:
        raw = None
    if errors_in_body and 400 <= status < 500 and isinstance(raw, dict) and isinstance(raw.get("error"), str):
        return raw
    if not 200 <= status < 300:
        raise _error(status, content, secrets)
    if not isinstance(raw, dict):
        raise TokenError(status, f"the token endpoint answered {status} with something that is not a JSON object")
    if need_token and (not isinstance(raw.get("access_token"), str) or not raw["access_token"]):
        raise TokenError(status, f"the token endpoint answered {status} without an access_token")
    return raw


async def _timed(call: Any, clock: IReactorTime, timeout: float, secrets: tuple[str, ...],
                 what: str) -> tuple[int, bytes]:
    """Run the request coroutine C{call} within C{timeout}: (status, body), else L{TokenError}."""
    def timed_out(result: object, seconds: float) -> None:
        # Whatever the cancelled request failed with (CancelledError,
        # ResponseNeverReceived, ...), the reason is the timeout.
        raise TokenError(0, f"{what} did not answer within {seconds:g} s")

    d = Deferred.fromCoroutine(call)
    d.addTimeout(timeout, clock, onTimeoutCancel=timed_out)
    try:
        return await d
    except TokenError:
        raise
    except Exception as e:
        reason = _scrub(f"{type(e).__name__}: {e}", secrets)
        raise TokenError(0, f"cannot reach {what}: {_one_line(reason)}") from None


#: Top-level fields of a token answer that belong in the account's file (Qwen names its API host).
_GRANT_FIELDS = ("resource_url",)


def _grant(raw: dict, sent_refresh_token: str) -> TokenGrant:
    refresh_token = raw.get("refresh_token")
    id_token = raw.get("id_token")
    return TokenGrant(
        access_token=raw["access_token"],
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else sent_refresh_token,
        expires_in=_seconds(raw.get("expires_in")),
        id_token=id_token if isinstance(id_token, str) else "",
        raw=raw,
        fields={k: raw[k] for k in _GRANT_FIELDS if isinstance(raw.get(k), str) and raw[k]},
    )


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


# -- errors -------------------------------------------------------------------------


def _error(status: int, content: bytes, secrets: tuple[str, ...], what: str = "the token endpoint") -> TokenError:
    """A TokenError for a non-2xx answer, quoting only its error fields."""
    code, detail = _error_fields(content)
    permanent = status in PERMANENT_STATUSES or (code in PERMANENT_ERRORS and status != 429 and status < 500)
    text = ": ".join(part for part in (code, detail) if part) or "no error message"
    text = _one_line(_scrub(text, secrets))
    return TokenError(status, f"{what} answered {status}: {text}", permanent)


def _error_fields(content: bytes) -> tuple[str, str]:
    """
    (error code, description) of an error body. OAuth's C{{error,
    error_description}}, OpenAI's and Anthropic's C{{error: {type|code,
    message}}}; plain text is quoted; other JSON is not (it might hold
    anything).
    """
    text = content.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return "", text
    if not isinstance(data, dict):
        return "", ""
    error = data.get("error")
    if isinstance(error, dict):
        code = error.get("code") or error.get("type") or ""
        message = error.get("message") or ""
    else:
        code = error or ""
        message = data.get("error_description") or data.get("message") or ""
    return (code if isinstance(code, str) else str(code)), (message if isinstance(message, str) else "")


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, fingerprint(secret))
    return text


def _one_line(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 3] + "..."
