"""
Device-flow logins (RFC 8628), for the providers whose CLI tools log in
that way: xAI (Grok CLI; its endpoints found through OpenID discovery),
Kimi and Qwen (Qwen Code, whose device flow carries a PKCE S256 challenge and
its verifier, as CLIProxyAPI sent them before it dropped Qwen).

L{start_device} asks for a device code; the user opens the verification
address (anywhere) and enters or confirms the user code; L{poll_device}
asks the token endpoint every C{interval} seconds on the injected clock
(C{slow_down} adds five) until it grants tokens, refuses, or the code
expires. L{device_record} is the credential file CLIProxyAPI writes for the
account. C{python -m cliproxyd login xai} (L{device_login}) and the
management API's C{/xai-auth-url} and C{/kimi-auth-url} run the same flow.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, TextIO

from attrs import field, frozen
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from cliproxyd.credentials.authfiles import XAI_API_BASE_URL, format_time
from cliproxyd.credentials.providers import OAuthProvider
from cliproxyd.credentials.tokens import TOKEN_TIMEOUT, TokenError, TokenGrant, _grant, _post, discover

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: The shortest wait between polls, and what C{slow_down} adds (RFC 8628's five seconds).
POLL_INTERVAL = 5.0
#: The longest a login waits for the user, whatever the code's own lifetime says.
MAX_WAIT = 15 * 60.0

#: The providers that log in with a device code.
DEVICE_PROVIDERS = ("xai", "kimi", "qwen")
#: The providers whose device flow carries PKCE (RFC 7636 S256).
PKCE_DEVICE_PROVIDERS = ("qwen",)


@frozen
class DeviceCode:
    """A device authorization: what the user is shown, and what the polls send."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: float
    interval: float
    token_url: str
    #: Kimi's X-Msh-Device-Id, kept in its file
    device_id: str = ""
    #: the PKCE verifier whose challenge the authorization carried (Qwen), sent with every poll
    code_verifier: str = field(default="", repr=False)

    @property
    def url(self) -> str:
        """Where the user goes: the address with the code in it, when the server gave one."""
        return self.verification_uri_complete or self.verification_uri


def _device_headers(provider: OAuthProvider, device_id: str) -> dict[str, str]:
    return {"x-msh-platform": "cliproxyd", "x-msh-device-id": device_id} if provider.type == "kimi" else {}


async def start_device(client: Any, provider: OAuthProvider, *, clock: IReactorTime,
                       timeout: float = TOKEN_TIMEOUT) -> DeviceCode:
    """
    Ask the provider for a device code (xAI: at the device endpoint its
    discovery document names).

    @raise TokenError: the server refused, or its answer lacks a code or an address.
    """
    device_url, token_url = provider.device_url, provider.token_url
    if provider.discovery_url:
        found = await discover(client, provider, clock=clock, timeout=timeout)
        device_url = found.get("device_authorization_endpoint", device_url)
        token_url = found["token_endpoint"]
    if not device_url:
        raise TokenError(0, f"{provider.type} has no device authorization endpoint")
    device_id = str(uuid.uuid4()) if provider.type == "kimi" else ""
    fields = {"client_id": provider.client_id}
    if provider.scopes:
        fields["scope"] = " ".join(provider.scopes)
    verifier = ""
    if provider.type in PKCE_DEVICE_PROVIDERS:
        from cliproxyd.credentials.login import make_pkce

        verifier, fields["code_challenge"] = make_pkce()
        fields["code_challenge_method"] = "S256"
    raw = await _post(client, provider, device_url, fields, (), clock, timeout,
                      extra_headers=_device_headers(provider, device_id), need_token=False)
    code, user = raw.get("device_code"), raw.get("user_code")
    uri, complete = raw.get("verification_uri") or "", raw.get("verification_uri_complete") or ""
    if not isinstance(code, str) or not code or not isinstance(user, str) or not user:
        raise TokenError(200, "the device authorization answer has no device_code or user_code")
    if not isinstance(uri, str) or not isinstance(complete, str) or not (uri or complete):
        raise TokenError(200, "the device authorization answer has no verification address")
    return DeviceCode(code, user, uri, complete, _number(raw.get("expires_in"), MAX_WAIT),
                      max(_number(raw.get("interval"), POLL_INTERVAL), POLL_INTERVAL), token_url, device_id,
                      verifier)


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else default


async def poll_device(client: Any, provider: OAuthProvider, code: DeviceCode, *, clock: IReactorTime,
                      pending: Callable[[], bool] = lambda: True, timeout: float = TOKEN_TIMEOUT) -> TokenGrant:
    """
    Poll the token endpoint until the user has approved: the grant. Polls
    stop (a L{TokenError}) when the user denies, the code expires, the
    server answers another error, or C{pending()} turns false (the login
    was cancelled).
    """
    deadline = clock.seconds() + min(code.expires_in, MAX_WAIT)
    interval = code.interval
    fields = {"grant_type": DEVICE_GRANT, "device_code": code.device_code, "client_id": provider.client_id}
    if code.code_verifier:
        fields["code_verifier"] = code.code_verifier
    while True:
        if not pending():
            raise TokenError(0, "the login was cancelled", permanent=True)
        if clock.seconds() >= deadline:
            raise TokenError(0, "the device code expired before the login was approved", permanent=True)
        try:
            raw = await _post(client, provider, code.token_url, fields, (code.device_code, code.code_verifier),
                              clock, timeout,
                              extra_headers=_device_headers(provider, code.device_id), need_token=False,
                              errors_in_body=True)
        except TokenError as e:
            if e.status != 0:
                raise
            raw = {"error": "authorization_pending"}  # no answer this time: ask again
        error = raw.get("error")
        if not error and isinstance(raw.get("access_token"), str) and raw["access_token"]:
            return _grant(raw, "")
        if error == "slow_down":
            interval += POLL_INTERVAL
        elif error != "authorization_pending":
            reason = {"access_denied": "the user denied the login", "expired_token": "the device code expired"}
            raise TokenError(400, reason.get(str(error), f"the token endpoint refused: {error or 'no token'}"),
                             permanent=True)
        await deferLater(clock, interval, lambda: None)


def device_record(provider: OAuthProvider, grant: TokenGrant, code: DeviceCode, now: float,
                  claims: dict[str, Any], alias: str = "") -> tuple[str, dict[str, Any]]:
    """
    The file name and fields CLIProxyAPI writes for a device login
    (C{claims}: the id_token's, if any; C{alias}: Qwen's email or alias,
    which its answer does not name and the user gives).
    """
    from cliproxyd.credentials.login import _safe_name

    expired = format_time(now + grant.expires_in) if grant.expires_in else None
    token_type = grant.raw.get("token_type") if isinstance(grant.raw.get("token_type"), str) else None
    if provider.type == "xai":
        email, subject = str(claims.get("email") or ""), str(claims.get("sub") or "")
        record: dict[str, Any] = {
            "type": "xai", "auth_kind": "oauth", "access_token": grant.access_token,
            "refresh_token": grant.refresh_token, "id_token": grant.id_token or None, "token_type": token_type,
            "expires_in": int(grant.expires_in) if grant.expires_in else None, "expired": expired,
            "last_refresh": format_time(now), "email": email or None, "sub": subject or None,
            "base_url": XAI_API_BASE_URL, "token_endpoint": code.token_url,
        }
        name = f"xai-{email or subject or int(now * 1000)}.json"
    elif provider.type == "qwen":
        # Qwen's answer names no account: the alias the user gave, else the time (as CLIProxyAPI's panel login).
        alias = alias or str(int(now * 1000))
        resource = grant.raw.get("resource_url")
        record = {"type": "qwen", "access_token": grant.access_token, "refresh_token": grant.refresh_token,
                  "last_refresh": format_time(now), "resource_url": resource if isinstance(resource, str) else "",
                  "email": alias, "expired": expired}
        name = f"qwen-{alias}.json"
    else:
        scope = grant.raw.get("scope") if isinstance(grant.raw.get("scope"), str) else ""
        record = {"type": "kimi", "access_token": grant.access_token, "refresh_token": grant.refresh_token,
                  "token_type": token_type, "scope": scope, "timestamp": int(now * 1000), "expired": expired,
                  "device_id": code.device_id or None}
        name = f"kimi-{int(now * 1000)}.json"
    return _safe_name(name), {k: v for k, v in record.items() if v is not None}


#: The fields a device login writes; a re-login into the same file keeps the others.
OWNED = frozenset({"type", "auth_kind", "access_token", "refresh_token", "id_token", "token_type", "expires_in",
                   "expired", "last_refresh", "email", "sub", "base_url", "token_endpoint", "scope", "timestamp",
                   "device_id", "resource_url"})


def write_device_login(auth_dir: str, provider: OAuthProvider, grant: TokenGrant, code: DeviceCode,
                       now: float, alias: str = "") -> str:
    """Write a device login's credential file (atomically, mode 0600); blocking. Answers its path."""
    from cliproxyd.credentials.login import jwt_claims, save_credential

    claims = jwt_claims(grant.id_token) if grant.id_token else {}
    name, record = device_record(provider, grant, code, now, claims, alias)
    return save_credential(auth_dir, name, record, OWNED)


async def device_login(reactor: Any, provider: OAuthProvider, auth_dir: str, *, client: Any,
                       clock: IReactorTime | None = None, out: TextIO, alias: str = "") -> str:
    """
    The whole login in a terminal: the address and code printed, the
    approval awaited, the file written (Qwen's named after C{alias}).
    """
    from cliproxyd.credentials.login import LoginError

    clock = clock or reactor
    try:
        code = await start_device(client, provider, clock=clock)
        out.write(f"Open this address in a browser (on any machine) and log in to {provider.type}:\n\n"
                  f"    {code.url}\n\nand confirm the code {code.user_code}. Waiting for the approval...\n")
        out.flush()
        grant = await poll_device(client, provider, code, clock=clock)
    except TokenError as e:
        raise LoginError(f"the {provider.type} login failed: {e.message}") from None
    path = write_device_login(auth_dir, provider, grant, code, clock.seconds(), alias)
    out.write(f"Logged in to {provider.type}; credential saved to {path}\n")
    return path
