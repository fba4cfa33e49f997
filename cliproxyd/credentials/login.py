"""
C{python -m cliproxyd login}: log an account of a CLI tool's provider in
and write its credential file to the auth directory.

The flow is OAuth's authorization code with PKCE (S256) (iFlow's: its own
authorization parameters, no PKCE, the client's secret; then its user info
hands out the account's API key). By default a
one-shot web server on C{127.0.0.1:<callback port>} receives the browser
after consent; with C{--no-browser} (a machine with no browser) the user
opens the URL anywhere and pastes back the address the browser was sent to.
Either way the C{state} is checked, the code is exchanged for tokens, the
account's email is read (Claude: the token response; Codex: the id_token;
Google: the userinfo endpoint) and the file is written, mode 0600, with
CLIProxyAPI's file names and field names, so either program reads the
other's files.

L{login} is the whole flow over an injected reactor, provider (tests point
it at L{cliproxyd.testing.authserver.SimulatedAuthServer}), output, input
and browser; L{main} is the command line around it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import os
import re
import secrets
import sys
import threading
import webbrowser
from typing import Any, Awaitable, Callable, NoReturn, TextIO
from urllib.parse import parse_qs, urlencode, urlsplit

import yaml
from attrs import field, frozen
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Site

from cliproxyd.fileio import atomic_write
from cliproxyd.proxies import INHERIT, EnvironmentProxies, ProxySetting, ProxyURLError, parse_proxy_setting
from cliproxyd.credentials.authfiles import format_time, jwt_claims
from cliproxyd.credentials.device import DEVICE_PROVIDERS
from cliproxyd.credentials.providers import PROVIDERS, OAuthProvider, at_base
from cliproxyd.credentials.tokens import TokenError, TokenGrant, exchange_code, iflow_user_info

#: Seconds to wait for the browser's callback, or for the pasted address.
LOGIN_TIMEOUT = 600.0
#: Seconds for the userinfo request (the token requests have their own).
USERINFO_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
DEFAULT_AUTH_DIR = "~/.cli-proxy-api"
#: Points authorize, token and userinfo at one server (tests, trials).
BASE_ENV = "CLIPROXYD_OAUTH_BASE"
#: The providers a login can be for (C{gemini} is also accepted).
LOGIN_PROVIDERS = ("claude", "codex", "gemini-cli", "antigravity", "xai", "kimi", "qwen", "iflow")

ReadLine = Callable[[], "Awaitable[str] | Deferred[str]"]


class LoginError(Exception):
    """A login that cannot go on; the message is one line for the terminal."""


@frozen
class Account:
    email: str
    account_id: str = ""
    plan_type: str = ""
    #: iFlow: the API key its requests carry, from the account's user info
    api_key: str = field(default="", repr=False)


# -- the authorization request ------------------------------------------------------


def make_pkce() -> tuple[str, str]:
    """A fresh PKCE (verifier, S256 challenge); the verifier has 86 characters."""
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=")
    return verifier, challenge.decode("ascii")


def redirect_uri(provider: OAuthProvider, port: int) -> str:
    return f"http://localhost:{port}{provider.callback_path}"


def authorization_url(provider: OAuthProvider, redirect: str, challenge: str, state: str) -> str:
    if provider.type == "iflow":
        # iFlow's own form: a phone login page, the callback as "redirect", no PKCE.
        params = [("loginMethod", "phone"), ("type", "phone"), ("redirect", redirect), ("state", state),
                  ("client_id", provider.client_id)]
        return provider.authorize_url + ("&" if "?" in provider.authorize_url else "?") + urlencode(params)
    params = [
        ("client_id", provider.client_id),
        ("response_type", "code"),
        ("redirect_uri", redirect),
        ("scope", " ".join(provider.scopes)),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", state),
        *provider.authorize_params,
    ]
    sep = "&" if "?" in provider.authorize_url else "?"
    return provider.authorize_url + sep + urlencode(params)


def read_callback(params: dict[str, str], state: str) -> str:
    """
    The authorization code of a callback's query parameters, once its
    C{state} is C{state}.

    @raise LoginError: consent refused (C{error=...}), a state that is not
        ours, or no code.
    """
    if params.get("error"):
        if params["error"] == "access_denied":
            raise LoginError("consent was denied in the browser (access_denied); nothing was saved")
        detail = params.get("error_description") or ""
        raise LoginError(f"the provider refused the login: {params['error']}{': ' + detail if detail else ''}")
    if params.get("state") != state:
        raise LoginError("state mismatch: that answer is not for this login; start the login again")
    if not params.get("code"):
        raise LoginError("the answer has no authorization code")
    return params["code"]


def parse_pasted(text: str, state: str) -> str:
    """
    The code in what was pasted at the C{--no-browser} prompt: the address
    the browser was sent to, its query string, Claude's C{code#state}, or a
    bare code. A state, when there is one, must be ours.
    """
    text = text.strip()
    if not text:
        raise LoginError("nothing was pasted")
    if "://" in text or text.startswith("?") or re.search(r"(^|[?&#])(code|error)=", text):
        parts = urlsplit(text if "://" in text else "x://x/?" + text.lstrip("?"))
        params = {k: v[0] for k, v in parse_qs(parts.fragment).items()}
        params.update({k: v[0] for k, v in parse_qs(parts.query).items()})
        return read_callback(params, state)
    code, sep, pasted_state = text.partition("#")
    if sep:
        return read_callback({"code": code, "state": pasted_state}, state)
    return code


# -- the local callback -------------------------------------------------------------

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>cliproxyd login</title></head>
<body style="font-family: sans-serif; margin: 3em"><h2>{title}</h2><p>{text}</p></body></html>
"""


class _Callback(Resource):
    """Answers the browser's one callback, and hands its code (or its error) on."""

    isLeaf = True

    def __init__(self, path: str, state: str) -> None:
        super().__init__()
        self._path = path.encode()
        self._state = state
        self.code: Deferred[str] = Deferred()

    def render_GET(self, request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        if request.path != self._path:
            request.setResponseCode(404)
            return _page("Not found", "This is the cliproxyd login callback.")
        if self.code.called:
            return _page("Already done", "This login has had its answer. You can close this tab.")
        params = {k.decode(): v[0].decode("utf-8", "replace") for k, v in request.args.items()}
        try:
            code = read_callback(params, self._state)
        except LoginError as e:
            request.setResponseCode(400)
            self.code.errback(e)
            return _page("Login failed", str(e))
        self.code.callback(code)
        return _page("Logged in", "cliproxyd has the answer. You can close this tab.")


def _page(title: str, text: str) -> bytes:
    return _PAGE.format(title=html.escape(title), text=html.escape(text)).encode()


class _CallbackSite(Site):
    noisy = False

    def log(self, request) -> None:
        pass  # the callback's URL holds the code


# -- the flow -----------------------------------------------------------------------


async def login(
    reactor: Any,
    provider: OAuthProvider,
    auth_dir: str,
    *,
    no_browser: bool = False,
    project_id: str = "",
    callback_port: int | None = None,
    client: Any = None,
    clock: IReactorTime | None = None,
    out: TextIO | None = None,
    read_line: ReadLine | None = None,
    open_browser: Callable[[str], object] | None = None,
    timeout: float = LOGIN_TIMEOUT,
    proxy: ProxySetting = INHERIT,
) -> str:
    """
    Log an account in and write its credential file; answer the file's path.

    @param reactor: listens for the callback (and makes the HTTP client).
    @param provider: the provider, endpoints included (L{at_base} points
        them at a simulated server).
    @param callback_port: the callback's port (the provider's by default;
        0 is any free port, for providers that accept any loopback port).
    @param client: a treq C{HTTPClient}; by default one is made (through C{proxy}: the
        config's C{proxy-url}, else the environment's proxies) and closed.
    @param clock: runs the timeouts (the reactor by default).
    @param out: where the instructions go (stdout by default). No token is
        ever written there.
    @param read_line: answers the pasted line in C{no_browser} mode (by
        default a line of stdin, read in a daemon thread).
    @param open_browser: called with the authorization URL in callback mode
        (C{webbrowser.open} where there is a display).
    @raise LoginError: with a one-line reason; nothing is written then.
    """
    out = out or sys.stdout
    clock = clock or reactor
    verifier, challenge = make_pkce()
    state = secrets.token_urlsafe(32)
    port = provider.callback_port if callback_port is None else callback_port
    pool = None
    if client is None:
        from cliproxyd.outbound import OutboundClients

        pool = OutboundClients(reactor, CONNECT_TIMEOUT, EnvironmentProxies.from_environ(os.environ))
        client = pool.client_for(proxy)
    try:
        if no_browser:
            redirect = redirect_uri(provider, port)
            url = authorization_url(provider, redirect, challenge, state)
            _say(out, f"Open this address in a browser (on any machine) and log in to {provider.type}:\n\n"
                      f"    {url}\n\n"
                      f"The browser then goes to {redirect}?code=..., a page that will not load. "
                      f"Copy that page's whole address from the address bar and paste it here "
                      f"(a bare code, or Claude's code#state, works too):")
            line = await _within(ensureDeferred((read_line or _stdin_line(reactor))()), clock, timeout,
                                 f"no answer pasted within {timeout:g} s")
            code = parse_pasted(line, state)
        else:
            code, redirect = await _browser_login(reactor, provider, port, challenge, state, out,
                                                  open_browser or _open_browser, clock, timeout)
        _say(out, "Exchanging the authorization code for tokens...")
        try:
            grant = await exchange_code(client, provider, code, verifier, redirect, state, clock=clock)
        except TokenError as e:
            raise LoginError(f"the {provider.type} token endpoint refused the code: {e.message}") from None
        account = await read_account(client, provider, grant, clock)
        path = write_login(auth_dir, provider, grant, account, project_id, clock.seconds())
    finally:
        if pool is not None:
            await pool.closeCachedConnections()
    _say(out, f"Logged in to {provider.type} as {account.email}; credential saved to {path}")
    if provider.type == "gemini-cli" and not project_id:
        _say(out, "note: no --project-id was given, so the file's project_id is empty")
    return path


async def _browser_login(reactor: Any, provider: OAuthProvider, port: int, challenge: str, state: str,
                         out: TextIO, open_browser: Callable[[str], object], clock: IReactorTime,
                         timeout: float) -> tuple[str, str]:
    callback = _Callback(provider.callback_path, state)
    try:
        listening = reactor.listenTCP(port, _CallbackSite(callback), interface="127.0.0.1")
    except CannotListenError:
        raise LoginError(
            f"cannot listen for the login callback on 127.0.0.1:{port} (is another login or program using it?); "
            f"use --no-browser, or --callback-port N if the provider accepts another port"
        ) from None
    try:
        redirect = redirect_uri(provider, listening.getHost().port)
        url = authorization_url(provider, redirect, challenge, state)
        _say(out, f"Log in to {provider.type} in your browser. If it does not open, visit:\n\n    {url}\n")
        try:
            opened = open_browser(url)
        except Exception:
            opened = False
        if opened is False:
            _say(out, "(could not open a browser here: open the address above yourself, "
                      "or use --no-browser when the browser is on another machine)")
        _say(out, f"Waiting for the browser at {redirect} ...")
        code = await _within(callback.code, clock, timeout, f"no answer from the browser within {timeout:g} s")
        return code, redirect
    finally:
        await listening.stopListening()


async def read_account(client: Any, provider: OAuthProvider, grant: TokenGrant, clock: IReactorTime) -> Account:
    """
    Whose tokens these are: Claude says in the token response, Codex in the
    id_token, Google at userinfo, iFlow in its user info (with the API key).
    """
    if provider.type == "iflow":
        account = await _iflow_account(client, provider, grant, clock)
    elif provider.userinfo_url:
        email = await _userinfo_email(client, provider.userinfo_url, grant.access_token, clock)
        account = Account(email)
    elif provider.type == "codex":
        claims = jwt_claims(grant.id_token)
        auth = claims.get("https://api.openai.com/auth")
        auth = auth if isinstance(auth, dict) else {}
        account = Account(_text(claims.get("email")), _text(auth.get("chatgpt_account_id")),
                          _text(auth.get("chatgpt_plan_type")))
    else:
        info = grant.raw.get("account")
        info = info if isinstance(info, dict) else {}
        account = Account(_text(info.get("email_address")), _text(info.get("uuid")))
    if not account.email:
        raise LoginError(f"the {provider.type} answer does not say which account logged in (no email); "
                         f"nothing was saved")
    return account


async def _iflow_account(client: Any, provider: OAuthProvider, grant: TokenGrant, clock: IReactorTime) -> Account:
    """iFlow's getUserInfo (the access token in the query): the account's email, or phone, and its API key."""
    try:
        api_key, email = await iflow_user_info(client, provider, grant.access_token, clock=clock,
                                               timeout=USERINFO_TIMEOUT)
    except TokenError as e:
        raise LoginError(f"cannot read the iflow account: {e.message}; nothing was saved") from None
    return Account(email.strip(), api_key=api_key)


async def _userinfo_email(client: Any, url: str, access_token: str, clock: IReactorTime) -> str:
    async def call() -> tuple[int, bytes]:
        response = await client.get(url, headers={"authorization": f"Bearer {access_token}",
                                                  "accept": "application/json"})
        return response.code, await response.content()

    try:
        status, body = await _within(Deferred.fromCoroutine(call()), clock, USERINFO_TIMEOUT,
                                     f"the userinfo endpoint did not answer within {USERINFO_TIMEOUT:g} s")
    except LoginError:
        raise
    except Exception as e:
        raise LoginError(f"cannot reach the userinfo endpoint: {type(e).__name__}") from None
    if status != 200:
        raise LoginError(f"the userinfo endpoint answered {status}; nothing was saved")
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    return _text(data.get("email")) if isinstance(data, dict) else ""


# -- the credential file ------------------------------------------------------------

#: The fields a login writes, per provider: on a re-login these are replaced
#: (or dropped), and every other field of the old file (prefix, priority,
#: note, proxy_url, ...) is kept.
_OWNED = {
    "claude": frozenset({"type", "access_token", "refresh_token", "id_token", "email", "expired", "last_refresh"}),
    "codex": frozenset({"type", "id_token", "access_token", "refresh_token", "account_id", "email", "expired",
                        "last_refresh"}),
    "gemini-cli": frozenset({"type", "email", "project_id", "token"}),
    "antigravity": frozenset({"type", "access_token", "refresh_token", "expires_in", "timestamp", "expired",
                              "email", "project_id"}),
    "iflow": frozenset({"type", "access_token", "refresh_token", "last_refresh", "expired", "api_key", "email",
                        "token_type", "scope", "cookie"}),
}


def credential_record(provider: OAuthProvider, grant: TokenGrant, account: Account, project_id: str,
                      now: float) -> tuple[str, dict[str, Any]]:
    """The file name and contents of a new credential, in CLIProxyAPI's shape."""
    email = account.email
    expired = format_time(now + grant.expires_in) if grant.expires_in is not None else None
    kind = provider.type
    if kind == "claude":
        record: dict[str, Any] = {"type": "claude", "access_token": grant.access_token,
                                  "refresh_token": grant.refresh_token}
        if grant.id_token:
            record["id_token"] = grant.id_token
        record.update(email=email, expired=expired, last_refresh=format_time(now))
        name = f"claude-{email}.json"
    elif kind == "codex":
        record = {"type": "codex", "id_token": grant.id_token, "access_token": grant.access_token,
                  "refresh_token": grant.refresh_token, "account_id": account.account_id, "email": email,
                  "expired": expired, "last_refresh": format_time(now)}
        plan = "-".join(re.findall(r"[a-z0-9]+", account.plan_type.lower()))
        name = f"codex-{email}-{plan}.json" if plan else f"codex-{email}.json"
    elif kind == "gemini-cli":
        token = {"access_token": grant.access_token, "refresh_token": grant.refresh_token,
                 "token_type": _text(grant.raw.get("token_type")) or "Bearer", "expiry": expired,
                 "token_uri": provider.token_url, "client_id": provider.client_id,
                 "client_secret": provider.client_secret, "scopes": list(provider.scopes)}
        record = {"type": "gemini", "email": email, "project_id": project_id,
                  "token": {k: v for k, v in token.items() if v is not None}}
        if project_id.lower() == "all" or "," in project_id:
            name = f"gemini-{email}-all.json"
        else:
            name = f"gemini-{email}-{project_id}.json" if project_id else f"gemini-{email}.json"
    elif kind == "antigravity":
        record = {"type": "antigravity", "access_token": grant.access_token, "refresh_token": grant.refresh_token,
                  "expires_in": int(grant.expires_in or 0), "timestamp": int(now * 1000), "expired": expired,
                  "email": email}
        if project_id:
            record["project_id"] = project_id
        name = f"antigravity-{email}.json"
    elif kind == "iflow":
        record = {"type": "iflow", "access_token": grant.access_token, "refresh_token": grant.refresh_token,
                  "last_refresh": format_time(now), "expired": expired, "api_key": account.api_key, "email": email,
                  "token_type": _text(grant.raw.get("token_type")), "scope": _text(grant.raw.get("scope")),
                  "cookie": ""}
        name = f"iflow-{email}-{int(now)}.json"
    else:
        raise LoginError(f"cannot log in to {kind}")
    return _safe_name(name), {k: v for k, v in record.items() if v is not None}


def write_login(auth_dir: str, provider: OAuthProvider, grant: TokenGrant, account: Account, project_id: str,
                now: float) -> str:
    """
    Write the credential file of a finished login (L{credential_record},
    L{save_credential}: atomically, mode 0600, a re-login keeping the old
    file's own fields); blocking. Answers the file's path.
    """
    filename, record = credential_record(provider, grant, account, project_id, now)
    return save_credential(auth_dir, filename, record, _OWNED[provider.type])


def save_credential(auth_dir: str, filename: str, record: dict[str, Any], owned: frozenset[str]) -> str:
    """
    Write C{record} to C{auth_dir/filename} atomically, mode 0600 (a file
    there already keeps its mode and its fields outside C{owned}); the
    directory is made 0700 when missing.
    """
    path = os.path.join(auth_dir, filename)
    try:
        if not os.path.isdir(auth_dir):
            os.makedirs(auth_dir, mode=0o700, exist_ok=True)
            os.chmod(auth_dir, 0o700)
        kept: dict[str, Any] = {}
        try:
            with open(path, "rb") as f:
                old = json.loads(f.read())
            if isinstance(old, dict):
                kept = {k: v for k, v in old.items() if k not in owned}
        except (OSError, ValueError):
            pass  # no file, or one not worth keeping anything of
        atomic_write(path, json.dumps({**record, **kept}, indent=2).encode() + b"\n", default_mode=0o600)
    except OSError as e:
        raise LoginError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def _safe_name(name: str) -> str:
    """A file name with no path separators or odd characters (emails may hold anything)."""
    return re.sub(r"[^A-Za-z0-9@._+-]", "_", name)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


# -- small helpers ------------------------------------------------------------------


def _say(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()


def _within(d: Deferred, clock: IReactorTime, timeout: float, message: str) -> Deferred:
    def timed_out(result: object, seconds: float) -> NoReturn:
        raise LoginError(message)

    return d.addTimeout(timeout, clock, onTimeoutCancel=timed_out)


def _stdin_line(reactor: Any) -> ReadLine:
    """Reads one line of stdin in a daemon thread (which never holds up the process's exit)."""

    def read() -> Deferred[str]:
        d: Deferred[str] = Deferred()

        def deliver(line: str) -> None:
            if not d.called:
                d.callback(line)

        def run() -> None:
            try:
                line = sys.stdin.readline()
            except (OSError, ValueError):
                line = ""
            reactor.callFromThread(deliver, line)

        threading.Thread(target=run, name="login-stdin", daemon=True).start()
        return d.addCallback(_not_eof)

    return read


def _not_eof(line: str) -> str:
    if not line:
        raise LoginError("standard input ended before an answer was pasted")
    return line


def _open_browser(url: str) -> bool:
    """
    C{webbrowser.open}, where a graphical browser can be: with no display a
    text-mode browser would take over the terminal the login talks on.
    """
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    return webbrowser.open(url)


# -- the command line ---------------------------------------------------------------


def add_command(subparsers: Any) -> None:
    """Add C{login} to C{python -m cliproxyd}'s sub-commands."""
    p = subparsers.add_parser(
        "login",
        help="log an OAuth account in and write its credential file",
        description="Log an account in with OAuth (PKCE) and write its credential file to the auth directory.",
    )
    p.add_argument("provider_name", nargs="?", metavar="PROVIDER",
                   help="whose account to log in: " + ", ".join(LOGIN_PROVIDERS) + " (or --provider)")
    p.add_argument("--provider", metavar="{" + ",".join(LOGIN_PROVIDERS) + "}",
                   help="whose account to log in")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--auth-dir", metavar="DIR", help=f"where the file goes (default: {DEFAULT_AUTH_DIR})")
    where.add_argument("--config", metavar="FILE", help="take the auth directory from this config's auth-dir")
    p.add_argument("--no-browser", action="store_true",
                   help="print the address to open anywhere and read the answer pasted on stdin")
    p.add_argument("--project-id", default="", metavar="ID",
                   help="the Google Cloud project (gemini-cli, antigravity)")
    p.add_argument("--callback-port", type=int, metavar="N",
                   help="port of the local callback (default: the provider's)")
    p.add_argument("--cookie", default="", metavar="COOKIE",
                   help="iflow: log in with a platform.iflow.cn browser session's cookie (its BXAuth) instead")
    p.add_argument("--email", default="", metavar="EMAIL",
                   help="qwen: the email address or alias its file is named after (asked for when not given)")
    p.add_argument("--oauth-base", default=None, help=argparse.SUPPRESS)
    p.set_defaults(run=main)


def resolve_auth_dir(auth_dir: str | None, config: str | None) -> str:
    """C{--auth-dir}, else the C{auth-dir} of C{--config}, else C{~/.cli-proxy-api}; C{~} expanded."""
    if auth_dir:
        return os.path.expanduser(auth_dir)
    if config:
        try:
            with open(config, "rb") as f:
                data = yaml.safe_load(f)
        except OSError as e:
            raise LoginError(f"cannot read {config}: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise LoginError(f"{config} is not valid YAML: {str(e).splitlines()[0]}") from None
        value = data.get("auth-dir") if isinstance(data, dict) else None
        if isinstance(value, str) and value.strip():
            return os.path.expanduser(value.strip())
    return os.path.expanduser(DEFAULT_AUTH_DIR)


def resolve_proxy(config: str | None) -> ProxySetting:
    """The C{proxy-url} of C{--config} (token calls leave as the daemon's do), else the environment's."""
    if not config:
        return INHERIT
    try:
        with open(config, "rb") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return INHERIT  # resolve_auth_dir has said what is wrong with the file
    value = data.get("proxy-url") if isinstance(data, dict) else None
    if value is None:
        return INHERIT
    if not isinstance(value, str):
        raise LoginError(f"{config}: proxy-url must be a string")
    try:
        return parse_proxy_setting(value)
    except ProxyURLError as e:
        raise LoginError(f"{config}: proxy-url: {e}") from None


def main(args: argparse.Namespace) -> NoReturn:
    """Run C{login} as parsed by L{add_command}: exit 0 with the file written, or 1 with one line on stderr."""
    from twisted.internet.task import react

    try:
        given = args.provider or getattr(args, "provider_name", None)
        if not given or (args.provider and getattr(args, "provider_name", None)):
            raise LoginError(f"name one provider (login PROVIDER, or --provider): one of {', '.join(LOGIN_PROVIDERS)}")
        name = given.strip().lower()
        if name not in LOGIN_PROVIDERS and name != "gemini":
            raise LoginError(f"unknown provider {given!r}; one of: {', '.join(LOGIN_PROVIDERS)}")
        provider = PROVIDERS[name]
        base = args.oauth_base or os.environ.get(BASE_ENV, "")
        if base:
            provider = at_base(provider, base)
        if args.callback_port is not None and not 0 <= args.callback_port <= 65535:
            raise LoginError(f"--callback-port must be between 0 and 65535, not {args.callback_port}")
        cookie = getattr(args, "cookie", "") or ""
        if cookie and provider.type != "iflow":
            raise LoginError("--cookie is for iflow logins only")
        auth_dir = resolve_auth_dir(args.auth_dir, args.config)
        proxy = resolve_proxy(args.config)
        EnvironmentProxies.from_environ(os.environ)
    except ProxyURLError as e:
        _fail(LoginError(f"the environment's proxy setting is not usable: {e}"))
    except LoginError as e:
        _fail(e)

    async def run(reactor: Any) -> None:
        try:
            if cookie:
                await _iflow_cookie(reactor, cookie, auth_dir, proxy, provider.platform_url)
            elif provider.type in DEVICE_PROVIDERS:
                alias = (getattr(args, "email", "") or "").strip()
                if provider.type == "qwen" and not alias:
                    alias = await ask_alias(_stdin_line(reactor), sys.stdout, reactor)
                await _device(reactor, provider, auth_dir, proxy, alias)
            else:
                await login(reactor, provider, auth_dir, no_browser=args.no_browser, project_id=args.project_id,
                            callback_port=args.callback_port, proxy=proxy)
        except LoginError as e:
            _fail(e)
        except Exception as e:  # react would log it where nobody looks
            _fail(LoginError(f"unexpected error: {type(e).__name__}: {e}"))

    react(run)


async def ask_alias(read_line: ReadLine, out: TextIO, clock: IReactorTime, timeout: float = LOGIN_TIMEOUT) -> str:
    """
    Qwen's answer names no account: the email address or alias the user
    gives, which its file is named after (as CLIProxyAPI asked for it).
    """
    _say(out, "Qwen does not say which account logs in. Your email address or an alias for it "
              "(the file is named qwen-ALIAS.json):")
    line = await _within(ensureDeferred(read_line()), clock, timeout, f"no alias given within {timeout:g} s")
    alias = line.strip()
    if not alias:
        raise LoginError("an email address or alias is required for a qwen login (--email)")
    return alias


async def _device(reactor: Any, provider: OAuthProvider, auth_dir: str, proxy: ProxySetting,
                  alias: str = "") -> str:
    """A device-code login (xAI, Kimi, Qwen) in the terminal, its calls leaving as C{proxy} says."""
    from cliproxyd.credentials.device import device_login
    from cliproxyd.outbound import OutboundClients

    pool = OutboundClients(reactor, CONNECT_TIMEOUT, EnvironmentProxies.from_environ(os.environ))
    try:
        return await device_login(reactor, provider, auth_dir, client=pool.client_for(proxy), out=sys.stdout,
                                  alias=alias)
    finally:
        await pool.closeCachedConnections()


async def _iflow_cookie(reactor: Any, cookie: str, auth_dir: str, proxy: ProxySetting, url: str) -> str:
    """iFlow's browser-cookie login in the terminal (L{cliproxyd.credentials.iflow_cookie})."""
    from cliproxyd.credentials.iflow_cookie import CookieError, cookie_login
    from cliproxyd.outbound import OutboundClients

    pool = OutboundClients(reactor, CONNECT_TIMEOUT, EnvironmentProxies.from_environ(os.environ))
    try:
        path, key = await cookie_login(pool.client_for(proxy), cookie, auth_dir, clock=reactor,
                                       url=url)
    except CookieError as e:
        raise LoginError(f"the iflow cookie login failed: {e}") from None
    finally:
        await pool.closeCachedConnections()
    _say(sys.stdout, f"Logged in to iflow as {key.name} (its key expires {key.expire_time or 'at an unknown time'}); "
                     f"credential saved to {path}")
    return path


def _fail(error: LoginError) -> NoReturn:
    sys.stderr.write(f"cliproxyd login: {error}\n")
    sys.stderr.flush()
    raise SystemExit(1)
