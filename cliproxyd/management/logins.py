"""
OAuth logins from the Management Center (C{/<provider>-auth-url},
C{/get-auth-status}, C{/oauth-callback}, C{/oauth-session}), as
CLIProxyAPI runs them.

C{GET /anthropic-auth-url} (or C{codex-}, C{gemini-cli-},
C{antigravity-}) starts a login: a fresh PKCE verifier and C{state}, and
the provider's authorization URL, answered as C{{"status": "ok", "url",
"state"}}. The browser, after consent, is sent to the provider's
registered loopback callback (C{http://localhost:<port><path>}, the CLI
tool's): while the login is pending the daemon listens there on
127.0.0.1, so a browser on the same machine completes it by itself; from
anywhere else the user pastes that address into the panel, which posts it
to C{/oauth-callback}. Either way the state must be a pending login's, the
code is exchanged for tokens (L{cliproxyd.credentials.tokens}), the
account is read and its file written atomically into C{auth-dir}
(L{cliproxyd.credentials.login.write_login}: CLIProxyAPI's names and
fields), then a reload picks it up. C{GET /get-auth-status?state=} says
C{wait}, C{ok} or C{error} with the reason.

C{GET /iflow-auth-url} starts an iFlow login the same way (iFlow's own
authorization form, its callback on port 11451; the account's API key comes
from its user info). C{GET /xai-auth-url}, C{/kimi-auth-url} and
C{/qwen-auth-url} (a Qwen file is named after the time, as CLIProxyAPI's
panel login named it) start device-code logins
(L{cliproxyd.credentials.device}): the answer's C{url} is where the user
approves the C{user_code}, and the daemon polls the token endpoint until
then; no callback comes, C{/get-auth-status} follows them the same way.

A pending login expires after L{PENDING_SECONDS} on the injected clock (its
callback port is closed then); a finished one is remembered
L{FINISHED_SECONDS} for the panel's last poll, then forgotten.
"""

from __future__ import annotations

import os
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource as WebResource
from twisted.web.server import Site

from cliproxyd.credentials.device import DeviceCode, poll_device, start_device, write_device_login
from cliproxyd.credentials.iflow_cookie import CookieError, cookie_login
from cliproxyd.credentials.login import (
    BASE_ENV,
    LoginError,
    authorization_url,
    make_pkce,
    read_account,
    redirect_uri,
    write_login,
)
from cliproxyd.credentials.providers import PROVIDERS, OAuthProvider, at_base
from cliproxyd.credentials.tokens import TokenError, exchange_code
from cliproxyd.management.access import Refused
from cliproxyd.management.http import Resource, arg, read_json, respond, route

#: Seconds a started login waits for its callback (CLIProxyAPI waits five minutes).
PENDING_SECONDS = 300.0
#: Seconds a finished (or failed) login is still answered by C{/get-auth-status}.
FINISHED_SECONDS = 60.0
#: Logins pending at once; past this the oldest is dropped.
MAX_PENDING = 32

#: The provider of each name the panel uses, by the file type it logs in.
NAMES = {"anthropic": "claude", "claude": "claude", "codex": "codex", "gemini-cli": "gemini-cli",
         "gemini": "gemini-cli", "antigravity": "antigravity", "kimi": "kimi", "xai": "xai", "qwen": "qwen",
         "iflow": "iflow"}

_STATE = re.compile(r"[A-Za-z0-9._-]{1,128}")


def default_providers() -> dict[str, OAuthProvider]:
    """The providers by type, all pointed at C{$CLIPROXYD_OAUTH_BASE} when it is set (trials)."""
    base = os.environ.get(BASE_ENV, "")
    return {t: (at_base(p, base) if base else p) for t, p in PROVIDERS.items()}


@define(eq=False)
class Login:
    """One login under way: what the exchange needs, and how it is going."""

    provider: OAuthProvider
    panel_name: str
    state: str
    verifier: str
    redirect: str
    project_id: str
    expires_at: float
    status: str = "wait"  # wait | ok | error
    error: str = ""
    #: once the code has come: the exchange under way, then done
    taken: bool = False
    file: str = ""
    timer: Any = field(default=None, repr=False)
    #: a device-code login (xAI, Kimi): the daemon polls the token endpoint, no callback comes
    device: bool = False


class _Callback(WebResource):
    """A provider's loopback callback: hands the browser's answer to the pending login its state names."""

    isLeaf = True

    def __init__(self, logins: OAuthLogins, provider_type: str) -> None:
        super().__init__()
        self._logins = logins
        self._type = provider_type

    def render_GET(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        params = {k.decode("utf-8", "replace"): v[0].decode("utf-8", "replace") for k, v in request.args.items()}
        try:
            self._logins.take(params.get("state", ""), params.get("code", ""),
                              params.get("error") or params.get("error_description") or "", self._type)
        except Refused as e:
            request.setResponseCode(e.status)
            return _page("Login failed", e.message)
        return _page("Logged in", "cliproxyd has the answer and is finishing the login. You can close this tab.")


def _panel_name(request: IRequest) -> str:
    """The provider of a C{/<provider>-auth-url} request, as the panel names it."""
    return request.path.decode("ascii", "replace").rsplit("/", 1)[-1].removesuffix("-auth-url")


def _page(title: str, text: str) -> bytes:
    import html

    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>cliproxyd login</title></head>"
            f"<body style=\"font-family: sans-serif; margin: 3em\"><h2>{html.escape(title)}</h2>"
            f"<p>{html.escape(text)}</p></body></html>").encode()


class _QuietSite(Site):
    noisy = False

    def log(self, request: Any) -> None:
        pass  # the callback's URL holds the code


class OAuthLogins(Resource):
    """The web OAuth login routes; the logins under way are kept here, in memory."""

    log = Logger()

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._providers: dict[str, OAuthProvider] | None = None
        self._logins: dict[str, Login] = {}
        #: provider type -> its listening callback port
        self._ports: dict[str, Any] = {}
        self._running: set[Deferred[None]] = set()

    def providers(self) -> dict[str, OAuthProvider]:
        if self._providers is None:
            self._providers = dict(self.context.oauth_providers or default_providers())
        return self._providers

    # -- starting -------------------------------------------------------------------------

    @route("/anthropic-auth-url", "GET")
    @route("/codex-auth-url", "GET")
    @route("/gemini-cli-auth-url", "GET")
    @route("/antigravity-auth-url", "GET")
    @route("/iflow-auth-url", "GET")
    async def start(self, request: IRequest) -> bytes:
        """Start a Claude (C{anthropic}), Codex, Gemini CLI (C{?project_id=} goes in its file) or Antigravity login."""
        if request.method == b"HEAD":
            return respond(request, {"status": "ok"})  # a HEAD starts nothing
        return await self._start(request, _panel_name(request))

    @route("/iflow-auth-url", "POST")
    async def iflow_cookie(self, request: IRequest) -> bytes:
        """
        iFlow's browser-cookie login, C{{"cookie": "...BXAuth=...;"}}: the
        platform issues the account's key and its file is written at once
        (C{{"status": "ok", "saved_path", "email", "expired"}}); a cookie
        whose BXAuth a file already has is a 409 naming the file.
        """
        body = read_json(request, dict, "the body must be {\"cookie\": ...}")
        cookie = body.get("cookie") if isinstance(body, dict) else None
        if not isinstance(cookie, str) or not cookie.strip():
            raise Refused(400, "cookie is required")
        gen = self.context.generation()
        if gen is None or not gen.config.auth_dir:
            raise Refused(409, "auth-dir is not set in the config: a login has nowhere to write its file")
        if self.context.client is None:
            raise Refused(500, "this daemon has no outbound HTTP client")
        provider = self.providers()["iflow"]
        try:
            path, key = await cookie_login(self.context.client, cookie, gen.config.auth_dir,
                                           clock=self.context.clock, run_in_thread=self.context.run_in_thread,
                                           url=provider.platform_url)
        except CookieError as e:
            if e.existing:
                return respond(request, {"status": "error", "error": "duplicate BXAuth found",
                                         "existing_file": e.existing}, 409)
            raise Refused(400, str(e)) from None
        self.log.info("iFlow cookie login wrote {file}", file=os.path.basename(path))
        await self.context.reload()
        return respond(request, {"status": "ok", "saved_path": path, "email": key.name, "expired": key.expire_time})

    @route("/kimi-auth-url", "GET")
    @route("/xai-auth-url", "GET")
    @route("/qwen-auth-url", "GET")
    async def device(self, request: IRequest) -> bytes:
        """
        Start a Kimi or xAI login, a device flow: the answer's C{url} is
        where the user approves (C{user_code} is the code to confirm), and
        the daemon polls the token endpoint until then (C{/get-auth-status}
        follows it, C{DELETE /oauth-session} gives it up).
        """
        if request.method == b"HEAD":
            return respond(request, {"status": "ok"})
        gen = self.context.generation()
        if gen is None or not gen.config.auth_dir:
            raise Refused(409, "auth-dir is not set in the config: a login has nowhere to write its file")
        client, clock = self.context.client, self.context.clock
        if client is None:
            raise Refused(500, "this daemon has no outbound HTTP client")
        panel_name = _panel_name(request)
        provider = self.providers()[NAMES[panel_name]]
        try:
            code = await start_device(client, provider, clock=clock)
        except TokenError as e:
            self.log.warn("web login to {provider}: no device code: {error}", provider=provider.type, error=e.message)
            raise Refused(502, f"failed to start device authorization flow: {e.message}") from None
        now = clock.seconds()
        self._expire(now)
        state = f"{panel_name}-{secrets.token_urlsafe(18)}"
        login = Login(provider, panel_name, state, "", "", "", now + PENDING_SECONDS, device=True)
        self._logins[state] = login
        d = Deferred.fromCoroutine(self._poll(login, code))
        self._running.add(d)
        d.addErrback(lambda f: self.log.failure("web login to {provider} crashed", f, provider=provider.type))
        d.addBoth(lambda _: self._running.discard(d))
        self.log.info("web login to {provider} started; waiting for the device code's approval",
                      provider=provider.type)
        body: dict[str, Any] = {"status": "ok", "url": code.url, "state": state, "flow": "device",
                                "user_code": code.user_code, "expires_in": int(code.expires_in)}
        return respond(request, body)

    async def _poll(self, login: Login, code: DeviceCode) -> None:
        """Wait for the approval, write the account's file and reload: the login is then C{ok}."""
        provider, clock = login.provider, self.context.clock
        try:
            try:
                grant = await poll_device(self.context.client, provider, code, clock=clock,
                                          pending=lambda: login.status == "wait")
            except TokenError as e:
                if login.status != "wait":
                    return  # cancelled, or the daemon stopped: already failed
                raise LoginError(f"the {provider.type} login failed: {e.message}") from None
            path = await self._write(write_device_login, provider, grant, code, clock.seconds())
        except LoginError as e:
            self._fail(login, str(e))
            return
        await self._written(login, path)

    async def _write(self, write: Any, *args: Any) -> str:
        """C{write(auth_dir, *args)} in a thread: a finished login's file, in the running config's auth-dir."""
        gen = self.context.generation()
        if gen is None or not gen.config.auth_dir:
            raise LoginError("auth-dir is not set in the config any more")
        return await self.context.run_in_thread(write, gen.config.auth_dir, *args)

    async def _written(self, login: Login, path: str) -> None:
        """The login's file is written: reload, and the login is C{ok}."""
        login.file = os.path.basename(path)
        await self.context.reload()
        self.log.info("web login to {provider} wrote {file}", provider=login.provider.type, file=login.file)
        self._finish(login, "ok")

    async def _start(self, request: IRequest, panel_name: str) -> bytes:
        gen = self.context.generation()
        if gen is None or not gen.config.auth_dir:
            raise Refused(409, "auth-dir is not set in the config: a login has nowhere to write its file")
        provider = self.providers()[NAMES[panel_name]]
        now = self.context.clock.seconds()
        self._expire(now)
        verifier, challenge = make_pkce()
        state = secrets.token_urlsafe(24)
        port = self._listen(provider)
        login = Login(provider, panel_name, state, verifier, redirect_uri(provider, port),
                      (arg(request, "project_id") or "").strip(), now + PENDING_SECONDS)
        login.timer = self.context.clock.callLater(PENDING_SECONDS, self._time_out, login)
        self._logins[state] = login
        pending = [s for s, one in self._logins.items() if one.status == "wait" and not one.taken]
        for old in pending[:-MAX_PENDING]:
            self._fail(self._logins[old], "dropped: too many logins were started after it")
        url = authorization_url(provider, login.redirect, challenge, state)
        self.log.info("web login to {provider} started; waiting for its callback", provider=provider.type)
        return respond(request, {"status": "ok", "url": url, "state": state})

    def _listen(self, provider: OAuthProvider) -> int:
        """Listen on the provider's callback port (once for all its logins); the port the redirect names."""
        listening = self._ports.get(provider.type)
        if listening is not None:
            return listening.getHost().port
        reactor = self.context.reactor
        if reactor is None or not hasattr(reactor, "listenTCP"):
            return provider.callback_port
        try:
            listening = reactor.listenTCP(provider.callback_port, _QuietSite(_Callback(self, provider.type)),
                                          interface="127.0.0.1")
        except CannotListenError as e:
            self.log.warn("cannot listen for {provider} login callbacks on 127.0.0.1:{port} ({error}): "
                          "paste the address the browser is sent to into the panel instead",
                          provider=provider.type, port=provider.callback_port, error=e.socketError)
            return provider.callback_port
        self._ports[provider.type] = listening
        return listening.getHost().port

    def _unlisten(self, provider_type: str) -> None:
        """Close the provider's callback port once none of its logins waits for a callback."""
        if any(one.provider.type == provider_type and one.status == "wait" and not one.taken
               for one in self._logins.values()):
            return
        listening = self._ports.pop(provider_type, None)
        if listening is not None:
            listening.stopListening()

    def close(self) -> None:
        """The daemon is stopping: every waiting login fails, its timer is cancelled and its port closed."""
        for login in list(self._logins.values()):
            if login.status == "wait":
                self._fail(login, "the daemon stopped before the login finished")
        for provider_type in list(self._ports):
            self._ports.pop(provider_type).stopListening()

    # -- the state of a login -------------------------------------------------------------

    def _expire(self, now: float) -> None:
        """Forget finished logins past L{FINISHED_SECONDS}."""
        for state, one in list(self._logins.items()):
            if one.status != "wait" and one.expires_at <= now:
                del self._logins[state]

    def _time_out(self, login: Login) -> None:
        login.timer = None
        if login.status == "wait" and not login.taken:
            self._fail(login, "timed out waiting for the OAuth callback")

    def _finish(self, login: Login, status: str, error: str = "") -> None:
        login.status, login.error = status, error
        login.expires_at = self.context.clock.seconds() + FINISHED_SECONDS
        if login.timer is not None and login.timer.active():
            login.timer.cancel()
        login.timer = None
        self._unlisten(login.provider.type)

    def _fail(self, login: Login, error: str) -> None:
        self.log.warn("web login to {provider} failed: {error}", provider=login.provider.type, error=error)
        self._finish(login, "error", error)

    def _find(self, state: str) -> Login | None:
        self._expire(self.context.clock.seconds())
        return self._logins.get(state)

    @route("/get-auth-status", "GET")
    async def auth_status(self, request: IRequest) -> bytes:
        """C{?state=}'s login: C{{"status": "wait"}}, C{{"status": "ok"}} or C{{"status": "error", "error"}}."""
        state = (arg(request, "state") or "").strip()
        if not state:
            return respond(request, {"status": "ok"})
        if not _STATE.fullmatch(state):
            return respond(request, {"status": "error", "error": "invalid state"}, 400)
        login = self._find(state)
        if login is None:
            return respond(request, {"status": "error", "error": "unknown or expired state"})
        if login.status == "error":
            return respond(request, {"status": "error", "error": login.error})
        body: dict[str, Any] = {"status": login.status}
        if login.file:
            body["file"] = login.file
        return respond(request, body)

    @route("/oauth-session", "DELETE")
    async def cancel(self, request: IRequest) -> bytes:
        """Give up the pending login C{?state=}."""
        state = (arg(request, "state") or "").strip()
        login = self._find(state) if _STATE.fullmatch(state) else None
        if login is None or login.status != "wait" or login.taken:
            raise Refused(404, "no pending login with that state")
        self._fail(login, "cancelled")
        del self._logins[state]
        return respond(request, {"status": "ok"})

    # -- the callback ---------------------------------------------------------------------

    @route("/oauth-callback", "POST")
    async def callback_posted(self, request: IRequest) -> bytes:
        """
        The address the browser was sent to, pasted into the panel:
        C{{"provider", "redirect_url"}} (or C{code}, C{state}, C{error}).
        """
        data = read_json(request, dict, fields=("provider", "redirect_url", "code", "state", "error"))
        for key, value in data.items():
            if not isinstance(value, str):
                raise Refused(400, f"{key} must be a string")
        state, code, error = (data.get(k, "").strip() for k in ("state", "code", "error"))
        if data.get("redirect_url", "").strip():
            parts = urlsplit(data["redirect_url"].strip())
            if not parts.scheme and not parts.query:
                raise Refused(400, "invalid redirect_url: paste the whole address the browser was sent to")
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            query.update({k: v[0] for k, v in parse_qs(parts.fragment).items() if k not in query})
            state = state or query.get("state", "").strip()
            code = code or query.get("code", "").strip()
            error = error or query.get("error", query.get("error_description", "")).strip()
        return self._answer(request, state, code, error, data.get("provider", ""))

    @route("/oauth-callback", "GET")
    async def callback_query(self, request: IRequest) -> bytes:
        """The provider's answer as query parameters: C{?state=&code=} (or C{&error=}), C{&provider=}."""
        error = arg(request, "error") or arg(request, "error_description") or ""
        return self._answer(request, (arg(request, "state") or "").strip(), (arg(request, "code") or "").strip(),
                            error.strip(), arg(request, "provider") or "")

    def _answer(self, request: IRequest, state: str, code: str, error: str, provider: str) -> bytes:
        try:
            self.take(state, code, error, provider.strip().lower(), by_name=True)
        except Refused as e:
            return respond(request, {"status": "error", "error": e.message}, e.status)
        return respond(request, {"status": "ok"})

    def take(self, state: str, code: str, error: str, provider: str, by_name: bool = False) -> None:
        """
        Hand a callback's answer to its pending login, which then exchanges
        the code in the background (C{/get-auth-status} follows it).

        @param provider: the provider the answer claims to be for (a panel
            name with C{by_name}, a provider type otherwise); empty takes the login's.
        @raise Refused: as CLIProxyAPI answers: 400 for no or a malformed
            state, no code nor error, or another provider; 404 for a state no
            login has (or had); 409 for a login that is no longer waiting.
        """
        if not state:
            raise Refused(400, "state is required")
        if not _STATE.fullmatch(state):
            raise Refused(400, "invalid state")
        if not code and not error:
            raise Refused(400, "code or error is required")
        login = self._find(state)
        if login is None:
            raise Refused(404, "unknown or expired state")
        if login.status == "ok":
            raise Refused(409, "oauth flow is already completed")
        if login.status == "error":
            raise Refused(409, login.error)
        if login.taken:
            raise Refused(409, "oauth flow is not pending: its answer has come already")
        if login.device:
            raise Refused(400, "this login is a device flow: it finishes when the code is approved, with no callback")
        if provider:
            claimed = NAMES.get(provider) if by_name else provider
            if claimed is None:
                raise Refused(400, "unsupported provider")
            if claimed != login.provider.type:
                raise Refused(400, "provider does not match state")
        if error:
            self._fail(login, "access was denied in the browser" if error == "access_denied"
                       else f"the provider refused the login: {error}")
            return
        login.taken = True
        d = Deferred.fromCoroutine(self._complete(login, code.split("#", 1)[0]))
        self._running.add(d)
        d.addErrback(lambda f: self.log.failure("web login to {provider} crashed", f, provider=login.provider.type))
        d.addBoth(lambda _: self._running.discard(d))

    async def _complete(self, login: Login, code: str) -> None:
        """Exchange the code, read the account, write its file and reload: the login is then C{ok}."""
        provider, clock, client = login.provider, self.context.clock, self.context.client
        if login.timer is not None and login.timer.active():
            login.timer.cancel()
        login.timer = None
        self._unlisten(provider.type)
        try:
            if client is None:
                raise LoginError("this daemon has no outbound HTTP client")
            try:
                grant = await exchange_code(client, provider, code, login.verifier, login.redirect, login.state,
                                            clock=clock)
            except TokenError as e:
                raise LoginError(f"the {provider.type} token endpoint refused the code: {e.message}") from None
            account = await read_account(client, provider, grant, clock)
            path = await self._write(write_login, provider, grant, account, login.project_id, clock.seconds())
        except LoginError as e:
            self._fail(login, str(e))
            return
        await self._written(login, path)
