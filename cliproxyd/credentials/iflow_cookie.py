"""
iFlow's browser-cookie login, as CLIProxyAPI ran it before it dropped
iFlow: the user copies the C{BXAuth} cookie of a logged-in
platform.iflow.cn session; the platform's API-key endpoint
(L{APIKEY_URL}) names the account's key (C{GET}) and issues it afresh
(C{POST {"name": ...}}); the file holds the key, its expiry, the account's
name as C{email}, and the cookie's C{BXAuth} only.

C{python -m cliproxyd login iflow --cookie} and the management API's
C{POST /iflow-auth-url {"cookie": ...}} run it. A cookie whose C{BXAuth} a
file in the auth directory already holds is refused (the account is there).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from cliproxyd.credentials.authfiles import format_time
from cliproxyd.credentials.providers import IFLOW
from cliproxyd.credentials.tokens import TOKEN_TIMEOUT, TokenError, _timed

#: The platform's API-key endpoint (GET: the key's details; POST {"name"}: a fresh key).
APIKEY_URL = IFLOW.platform_url
#: The headers of a browser on the platform's own pages, which the endpoint expects.
_BROWSER = {"accept": "application/json, text/plain, */*", "accept-language": "zh-CN,zh;q=0.9,en;q=0.8",
            "user-agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                          "Chrome/91.0.4472.124 Safari/537.36",
            "origin": "https://platform.iflow.cn", "referer": "https://platform.iflow.cn/"}


class CookieError(ValueError):
    """A cookie login that cannot go on; the message is one line for the user."""

    def __init__(self, message: str, existing: str = "") -> None:
        super().__init__(message)
        #: the auth file that already holds this cookie's account, when that is why
        self.existing = existing


@frozen
class IFlowKey:
    """What the platform says of the account's key."""

    api_key: str
    #: when the key expires, as the platform writes it (C{2006-01-02 15:04})
    expire_time: str
    #: the key's name: the account, in the file's C{email}
    name: str


def normalize_cookie(raw: str) -> str:
    """The cookie as one line ending in C{;}. @raise CookieError: empty, or without C{BXAuth}."""
    combined = " ".join(raw.split())
    if not combined:
        raise CookieError("the cookie is empty")
    if not combined.endswith(";"):
        combined += ";"
    if "BXAuth=" not in combined:
        raise CookieError("the cookie has no BXAuth field (copy it from a logged-in platform.iflow.cn page)")
    return combined


def bx_auth(cookie: str) -> str:
    """The value of the cookie's C{BXAuth} field ("" when it has none)."""
    for part in cookie.split(";"):
        part = part.strip()
        if part.startswith("BXAuth="):
            return part[len("BXAuth="):]
    return ""


def file_with(auth_dir: str, bxauth: str) -> str:
    """The name of the C{iflow-*.json} file in C{auth_dir} whose cookie has C{bxauth} ("" for none); blocking."""
    if not bxauth or not os.path.isdir(auth_dir):
        return ""
    for name in sorted(os.listdir(auth_dir)):
        if not (name.startswith("iflow-") and name.endswith(".json")):
            continue
        try:
            with open(os.path.join(auth_dir, name), "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("cookie"), str) and bx_auth(data["cookie"]) == bxauth:
            return name
    return ""


async def _call(client: Any, method: str, url: str, cookie: str, body: dict[str, str] | None,
                clock: IReactorTime, timeout: float) -> dict[str, Any]:
    headers = {**_BROWSER, "cookie": cookie}
    if body is not None:
        headers["content-type"] = "application/json"

    async def call() -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        response = await client.request(method, url, data=data, headers=headers)
        return response.code, await response.content()

    try:
        status, content = await _timed(call(), clock, timeout, (cookie, bx_auth(cookie)), "iFlow's platform")
    except TokenError as e:
        raise CookieError(e.message) from None
    try:
        answer = json.loads(content)
    except ValueError:
        answer = None
    if status != 200 or not isinstance(answer, dict):
        raise CookieError(f"iFlow's platform answered {status} (is the cookie still logged in?)")
    if not answer.get("success"):
        raise CookieError(f"iFlow's platform refused: {str(answer.get('message') or 'not successful')[:200]}")
    data = answer.get("data")
    return data if isinstance(data, dict) else {}


async def authenticate(client: Any, cookie: str, *, clock: IReactorTime, url: str = APIKEY_URL,
                       timeout: float = TOKEN_TIMEOUT) -> IFlowKey:
    """
    The account's key, issued afresh: its details (C{GET}), then a new key
    of that name (C{POST}). @raise CookieError: the platform refused or did
    not answer.
    """
    info = await _call(client, "GET", url, cookie, None, clock, timeout)
    name = info.get("name")
    if not isinstance(name, str) or not name.strip():
        raise CookieError("iFlow's platform names no API key for this account")
    fresh = await _call(client, "POST", url, cookie, {"name": name}, clock, timeout)
    api_key = fresh.get("apiKey")
    if not isinstance(api_key, str) or not api_key:
        raise CookieError("iFlow's platform issued no API key")
    expire = fresh.get("expireTime")
    return IFlowKey(api_key, expire if isinstance(expire, str) else "", name.strip())


def cookie_record(key: IFlowKey, cookie: str, now: float) -> tuple[str, dict[str, Any]]:
    """The file name and fields CLIProxyAPI wrote for a cookie login (the cookie's C{BXAuth} only)."""
    clean = re.sub(r"[^A-Za-z0-9_@.-]", "", key.name.replace("*", "x")).strip()
    stem = f"iflow-{clean}" if clean else f"iflow-{int(now * 1000)}"
    record = {"access_token": "", "refresh_token": "", "last_refresh": format_time(now), "expired": key.expire_time,
              "api_key": key.api_key, "email": key.name, "token_type": "", "scope": "",
              "cookie": f"BXAuth={bx_auth(cookie)};", "type": "iflow"}
    return f"{stem}-{int(now)}.json", record


#: The fields a cookie login writes; a file written again keeps its others.
OWNED = frozenset({"access_token", "refresh_token", "last_refresh", "expired", "api_key", "email", "token_type",
                   "scope", "cookie", "type"})


async def cookie_login(client: Any, cookie: str, auth_dir: str, *, clock: IReactorTime,
                       run_in_thread: Any = None, url: str = APIKEY_URL) -> tuple[str, IFlowKey]:
    """
    The whole cookie login: checked, the key issued, the file written
    (atomically, mode 0600; in C{run_in_thread} when given). Answers the
    file's path and the key's details. @raise CookieError: with the reason;
    nothing is written then.
    """
    from cliproxyd.credentials.login import LoginError, save_credential

    cookie = normalize_cookie(cookie)

    def run(f: Any, *args: Any) -> Any:
        return run_in_thread(f, *args) if run_in_thread is not None else Deferred.fromCoroutine(_now(f, *args))

    existing = await run(file_with, auth_dir, bx_auth(cookie))
    if existing:
        raise CookieError(f"this account is already logged in: {existing} has the same BXAuth", existing)
    key = await authenticate(client, cookie, clock=clock, url=url)
    name, record = cookie_record(key, cookie, clock.seconds())
    try:
        path = await run(save_credential, auth_dir, name, record, OWNED)
    except LoginError as e:
        raise CookieError(str(e)) from None
    return path, key


async def _now(f: Any, *args: Any) -> Any:
    return f(*args)
