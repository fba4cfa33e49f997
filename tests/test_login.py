"""
`cliproxyd login` against the simulated authorization server over loopback
HTTP: the browser is a treq client driven through the login's hooks (it
follows the redirect to the login's own callback server, or its address is
"pasted" back), and one test runs the real command in a subprocess.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from cliproxyd.credentials.login import (
    LOGIN_TIMEOUT,
    LoginError,
    authorization_url,
    login,
    make_pkce,
    parse_pasted,
    resolve_auth_dir,
)
from cliproxyd.testing.authserver import s256

ROOT = Path(__file__).resolve().parent.parent
AUTHORIZE = re.compile(r"http://127\.0\.0\.1:\d+/authorize\?\S+(?=\s)")
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
EMAIL = "ada@example.org"


def clock_at(now: float = NOW) -> Clock:
    clock = Clock()
    clock.rightNow = now
    return clock


def replace_param(url: str, name: str, value: str) -> str:
    return re.sub(rf"([?&]){name}=[^&#]*", rf"\g<1>{name}={value}", url)


class Browser:
    """The open_browser hook: visits the URL with treq and follows the redirect to the login's callback."""

    def __init__(self, client, tamper=lambda url: url) -> None:
        self.client = client
        self.tamper = tamper
        self.urls: list[str] = []
        self.visits: list[Deferred] = []

    def __call__(self, url: str) -> bool:
        self.urls.append(url)
        self.visits.append(Deferred.fromCoroutine(self._visit(self.tamper(url))))
        return True

    async def _visit(self, url: str) -> tuple[int, str]:
        response = await self.client.get(url)
        return response.code, (await response.content()).decode()


def paster(auth, out: io.StringIO, shape=lambda location: location):
    """The read_line hook of --no-browser: visits the printed URL, 'pastes' where the browser was sent."""

    async def read_line() -> str:
        url = AUTHORIZE.search(out.getvalue()).group()
        response = await auth.client.get(url, allow_redirects=False)
        assert response.code == 302, await response.content()
        return shape(response.headers.getRawHeaders("location")[0]) + "\n"

    return read_line


async def run_login(auth, auth_dir: Path, mode: str = "callback", browser: Browser | None = None,
                    shape=lambda location: location, **kw) -> tuple[str, str]:
    """Log in; answer (path, everything printed)."""
    from twisted.internet import reactor

    out = io.StringIO()
    kw.setdefault("clock", clock_at())
    if mode == "callback":
        kw.setdefault("callback_port", 0)
        kw.update(open_browser=browser or Browser(auth.client))
    else:
        kw.update(no_browser=True, read_line=paster(auth, out, shape))
    try:
        path = await login(reactor, auth.provider, str(auth_dir), client=auth.client, out=out, **kw)
    except LoginError as e:
        e.out = out.getvalue()  # type: ignore[attr-defined]
        raise
    return path, out.getvalue()


async def login_error(auth, auth_dir: Path, **kw) -> LoginError:
    try:
        await run_login(auth, auth_dir, **kw)
    except LoginError as e:
        return e
    raise AssertionError("the login succeeded")


def secrets_of(record: dict) -> list[str]:
    token = record.get("token", {})
    return [v for v in (record.get("access_token"), record.get("refresh_token"), record.get("id_token"),
                        token.get("access_token"), token.get("refresh_token")) if v]


def assert_not_in(secrets: list[str], texts: list[str]) -> None:
    assert secrets
    for secret in secrets:
        for text in texts:
            assert secret not in text


# -- the whole flow, per provider ---------------------------------------------------------

EXPECTED = {
    "claude": ("claude-ada@example.org.json",
               {"type", "access_token", "refresh_token", "email", "expired", "last_refresh"}),
    "codex": ("codex-ada@example.org-team.json",
              {"type", "id_token", "access_token", "refresh_token", "account_id", "email", "expired",
               "last_refresh"}),
    "gemini-cli": ("gemini-ada@example.org-my-proj.json", {"type", "email", "project_id", "token"}),
    "antigravity": ("antigravity-ada@example.org.json",
                    {"type", "access_token", "refresh_token", "expires_in", "timestamp", "expired", "email",
                     "project_id"}),
}


@pytest.mark.parametrize("mode", ["callback", "no-browser"])
@pytest.mark.parametrize("provider", sorted(EXPECTED))
@pytest_twisted.ensureDeferred
async def test_a_login_writes_the_providers_credential_file(auth_server, tmp_path, provider, mode):
    auth = auth_server(provider, email=EMAIL, plan_type="Team", expires_in=7200)
    auth_dir = tmp_path / "auths"
    browser = Browser(auth.client)
    project = {"gemini-cli": "my-proj", "antigravity": "ag-proj"}.get(provider, "")

    with capturedLogs() as events:
        path, out = await run_login(auth, auth_dir, mode, browser=browser, project_id=project)

    name, keys = EXPECTED[provider]
    assert path == str(auth_dir / name)
    assert os.listdir(auth_dir) == [name]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(auth_dir).st_mode) == 0o700
    record = json.loads(Path(path).read_text())
    assert set(record) == keys
    assert record["email"] == EMAIL
    if provider == "claude":
        assert record["type"] == "claude"
        access, refresh = record["access_token"], record["refresh_token"]
    elif provider == "codex":
        assert record["type"] == "codex"
        assert record["account_id"] == "acct-sim-0001"
        assert record["id_token"].count(".") == 2
        access, refresh = record["access_token"], record["refresh_token"]
    elif provider == "gemini-cli":
        assert (record["type"], record["project_id"]) == ("gemini", "my-proj")
        token = record["token"]
        assert token["token_type"] == "Bearer"
        assert token["expiry"] == "2023-11-15T00:13:20Z"  # NOW + 7200 s
        assert token["token_uri"] == auth.provider.token_url
        assert (token["client_id"], token["client_secret"]) == (auth.provider.client_id,
                                                                auth.provider.client_secret)
        assert token["scopes"] == list(auth.provider.scopes)
        access, refresh = token["access_token"], token["refresh_token"]
    else:
        assert record["type"] == "antigravity"
        assert (record["expires_in"], record["timestamp"], record["project_id"]) == (7200, int(NOW * 1000),
                                                                                   "ag-proj")
        access, refresh = record["access_token"], record["refresh_token"]
    if provider != "gemini-cli":
        assert record["expired"] == "2023-11-15T00:13:20Z"  # NOW + 7200 s, RFC 3339 UTC
    if "last_refresh" in record:
        assert record["last_refresh"] == "2023-11-14T22:13:20Z"
    # The tokens are the ones the server issued, still live.
    assert auth.sim.access_tokens[access] == EMAIL
    assert auth.sim.refresh_tokens[refresh] == EMAIL
    assert auth.sim.calls["authorization_code"] == 1
    assert auth.sim.calls["userinfo"] == (1 if provider in ("gemini-cli", "antigravity") else 0)
    # The right verifier went with the code (the server checked it against the URL's challenge).
    verifier = auth.sim.last_body["code_verifier"]
    assert 43 <= len(verifier) <= 128
    if mode == "callback":
        code, page = await browser.visits[0]
        assert code == 200 and "close this tab" in page
    # Nothing secret was printed or logged.
    texts = [out, *(formatEvent(e) + repr(e) for e in events)]
    assert_not_in([*secrets_of(record), verifier, auth.sim.last_body["code"]], texts)
    assert path in out and EMAIL in out


@pytest.mark.parametrize("shape", [
    lambda location: location,
    lambda location: "?" + urlsplit(location).query,
    lambda location: "{code}#{state}".format(**{k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}),
    lambda location: parse_qs(urlsplit(location).query)["code"][0],
], ids=["address", "query", "code#state", "bare-code"])
@pytest_twisted.ensureDeferred
async def test_no_browser_takes_each_form_of_the_pasted_answer(auth_server, tmp_path, shape):
    auth = auth_server("claude")

    path, out = await run_login(auth, tmp_path, "no-browser", shape=shape)

    assert json.loads(Path(path).read_text())["refresh_token"] in auth.sim.refresh_tokens
    assert "localhost:54545/callback" in out  # the provider's own redirect, nothing listening


def test_the_authorization_url_asks_for_the_provider_scopes_with_s256_pkce():
    from cliproxyd.credentials.providers import PROVIDERS

    provider = PROVIDERS["gemini-cli"]
    verifier, challenge = make_pkce()
    url = authorization_url(provider, "http://localhost:8085/oauth2callback", challenge, "st")

    assert url.startswith(provider.authorize_url + "?")
    params = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert params == {
        "client_id": provider.client_id, "response_type": "code",
        "redirect_uri": "http://localhost:8085/oauth2callback", "scope": " ".join(provider.scopes),
        "code_challenge": challenge, "code_challenge_method": "S256", "state": "st",
        "access_type": "offline", "prompt": "consent",
    }
    assert 43 <= len(verifier) <= 128 and re.fullmatch(r"[A-Za-z0-9_-]+", verifier)
    assert s256(verifier) == challenge
    assert make_pkce()[0] != verifier


# -- what must fail, and leave nothing behind -----------------------------------------------


@pytest.mark.parametrize("mode", ["callback", "no-browser"])
@pytest_twisted.ensureDeferred
async def test_an_answer_with_another_state_is_rejected_before_any_exchange(auth_server, tmp_path, mode):
    auth = auth_server("codex")
    browser = Browser(auth.client, tamper=lambda url: replace_param(url, "state", "forged"))

    error = await login_error(auth, tmp_path / "auths", mode=mode, browser=browser,
                              shape=lambda location: replace_param(location, "state", "forged"))

    assert "state mismatch" in str(error)
    assert auth.sim.calls["authorize"] == 1
    assert auth.sim.calls["authorization_code"] == 0
    assert not (tmp_path / "auths").exists()
    if mode == "callback":
        code, page = await browser.visits[0]
        assert code == 400 and "state mismatch" in page


@pytest_twisted.ensureDeferred
async def test_a_tampered_pkce_challenge_makes_the_exchange_fail(auth_server, tmp_path):
    auth = auth_server("claude")
    forged = s256(make_pkce()[0])
    browser = Browser(auth.client, tamper=lambda url: replace_param(url, "code_challenge", forged))

    error = await login_error(auth, tmp_path / "auths", browser=browser)

    assert auth.sim.calls["authorization_code"] == 1
    assert "code_verifier does not match" in str(error) and "400" in str(error)
    assert not (tmp_path / "auths").exists()


@pytest.mark.parametrize("mode", ["callback", "no-browser"])
@pytest_twisted.ensureDeferred
async def test_denied_consent_is_a_clear_error(auth_server, tmp_path, mode):
    auth = auth_server("gemini-cli", deny=True)
    browser = Browser(auth.client)

    error = await login_error(auth, tmp_path / "auths", mode=mode, browser=browser)

    assert "denied" in str(error) and "access_denied" in str(error)
    assert auth.sim.calls["authorization_code"] == 0
    assert not (tmp_path / "auths").exists()
    if mode == "callback":
        code, page = await browser.visits[0]
        assert code == 400 and "denied" in page


@pytest_twisted.ensureDeferred
async def test_a_token_endpoint_error_names_the_status_and_the_servers_words_and_writes_nothing(
        auth_server, tmp_path):
    auth = auth_server("codex")
    auth.sim.fail_next(1, 400, {"error": "invalid_grant", "error_description": "Authorization code expired"},
                       grant="authorization_code")

    with capturedLogs() as events:
        error = await login_error(auth, tmp_path / "auths")

    message = str(error)
    assert "\n" not in message
    assert "400" in message and "invalid_grant" in message and "Authorization code expired" in message
    assert not (tmp_path / "auths").exists()
    code = auth.sim.last_body["code"]
    assert_not_in([code, auth.sim.last_body["code_verifier"]],
                  [message, error.out, *(formatEvent(e) for e in events)])


@pytest_twisted.ensureDeferred
async def test_a_busy_callback_port_suggests_no_browser_or_another_port(auth_server, tmp_path, reactor):
    auth = auth_server("claude")
    busy = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    port = busy.getHost().port
    browser = Browser(auth.client)
    try:
        error = await login_error(auth, tmp_path, browser=browser, callback_port=port)
    finally:
        await busy.stopListening()

    assert f"127.0.0.1:{port}" in str(error)
    assert "--no-browser" in str(error) and "--callback-port" in str(error)
    assert browser.urls == [] and auth.sim.calls["authorize"] == 0


@pytest_twisted.ensureDeferred
async def test_a_login_nobody_finishes_times_out_and_frees_the_callback_port(auth_server, tmp_path, reactor):
    from tests.conftest import unused_port

    auth = auth_server("claude")
    clock = clock_at()
    port = unused_port()
    d = Deferred.fromCoroutine(run_login(auth, tmp_path, browser=lambda url: True, clock=clock,
                                         callback_port=port))
    clock.advance(LOGIN_TIMEOUT - 1)
    assert not d.called
    clock.advance(1)
    try:
        await d
    except LoginError as e:
        assert "no answer from the browser" in str(e)
    else:
        raise AssertionError("the login did not time out")
    # The callback server is gone: its port can be taken again.
    await reactor.listenTCP(port, Factory.forProtocol(Protocol), interface="127.0.0.1").stopListening()


@pytest_twisted.ensureDeferred
async def test_a_second_login_of_an_account_keeps_the_files_own_fields(auth_server, tmp_path):
    auth = auth_server("claude", email=EMAIL)
    path = tmp_path / "claude-ada@example.org.json"
    path.write_text(json.dumps({"type": "claude", "email": EMAIL, "access_token": "old-at",
                                "refresh_token": "old-rt", "id_token": "old-id", "expired": "2020-01-01T00:00:00Z",
                                "prefix": "team-a", "priority": 2, "note": "the team's account"}))
    path.chmod(0o640)

    await run_login(auth, tmp_path)

    record = json.loads(path.read_text())
    assert (record["prefix"], record["priority"], record["note"]) == ("team-a", 2, "the team's account")
    assert record["refresh_token"] in auth.sim.refresh_tokens
    assert record["expired"] == "2023-11-14T23:13:20Z"
    assert "id_token" not in record  # the login's own fields are all replaced, not merged
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the operator's choice of mode stays


def test_parse_pasted_checks_a_state_when_there_is_one():
    assert parse_pasted("http://localhost:1/cb?code=c1&state=s", "s") == "c1"
    assert parse_pasted("  c2#s \n", "s") == "c2"
    assert parse_pasted("c3", "s") == "c3"
    for forged in ("http://localhost:1/cb?code=c1&state=t", "c2#t", "http://localhost:1/cb?code=c1"):
        with pytest.raises(LoginError, match="state mismatch"):
            parse_pasted(forged, "s")
    with pytest.raises(LoginError, match="access_denied"):
        parse_pasted("http://localhost:1/cb?error=access_denied&state=s", "s")
    with pytest.raises(LoginError, match="nothing was pasted"):
        parse_pasted("\n", "s")


# -- the command line ---------------------------------------------------------------------


def test_the_auth_dir_comes_from_the_flag_then_the_config_then_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = tmp_path / "config.yaml"
    config.write_text("port: 8317\nauth-dir: ~/creds\n")
    bare = tmp_path / "bare.yaml"
    bare.write_text("port: 8317\n")

    assert resolve_auth_dir("~/flag", str(config)) == str(tmp_path / "home" / "flag")
    assert resolve_auth_dir(None, str(config)) == str(tmp_path / "home" / "creds")
    assert resolve_auth_dir(None, str(bare)) == str(tmp_path / "home" / ".cli-proxy-api")
    assert resolve_auth_dir(None, None) == str(tmp_path / "home" / ".cli-proxy-api")
    with pytest.raises(LoginError, match="cannot read"):
        resolve_auth_dir(None, str(tmp_path / "missing.yaml"))


def test_an_unknown_provider_is_one_line_and_exit_status_1(capsys):
    from cliproxyd.__main__ import main

    with pytest.raises(SystemExit) as exit:
        main(["login", "--provider", "aistudio", "--auth-dir", "/nonexistent"])

    assert exit.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown provider 'aistudio'" in err and "claude, codex, gemini-cli, antigravity" in err and "iflow" in err


class LoginProcess(ProcessProtocol):
    """`python -m cliproxyd login` in a subprocess: its output, the URL it prints, its exit status."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.url: Deferred[str] = Deferred()
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data
        match = AUTHORIZE.search(self.out.decode(errors="replace"))
        if match and not self.url.called:
            self.url.callback(match.group())

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value.exitCode)


def spawn_login(reactor, auth, auth_dir: Path, *args: str) -> LoginProcess:
    proc = LoginProcess()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CLIPROXYD_OAUTH_BASE": auth.base, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "cliproxyd", "login", "--provider", auth.sim.provider.type, "--no-browser",
            "--auth-dir", str(auth_dir), *args]
    reactor.spawnProcess(proc, sys.executable, argv, env=env, path=str(ROOT))
    return proc


@pytest_twisted.ensureDeferred
async def test_the_command_logs_in_with_a_pasted_answer(auth_server, tmp_path, reactor):
    auth = auth_server("antigravity", email=EMAIL)
    proc = spawn_login(reactor, auth, tmp_path / "auths", "--project-id", "ag-1")

    url = await proc.url.addTimeout(30, reactor)
    response = await auth.client.get(url, allow_redirects=False)
    proc.transport.write(response.headers.getRawHeaders("location")[0].encode() + b"\n")
    status = await proc.ended.addTimeout(30, reactor)

    assert status == 0, proc.err
    path = tmp_path / "auths" / "antigravity-ada@example.org.json"
    record = json.loads(path.read_text())
    assert record["project_id"] == "ag-1" and record["refresh_token"] in auth.sim.refresh_tokens
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert proc.err == b""
    assert_not_in(secrets_of(record), [proc.out.decode()])
    assert str(path) in proc.out.decode()


@pytest_twisted.ensureDeferred
async def test_the_command_fails_with_one_line_when_no_answer_comes(auth_server, tmp_path, reactor):
    auth = auth_server("claude")
    proc = spawn_login(reactor, auth, tmp_path / "auths")

    await proc.url.addTimeout(30, reactor)
    proc.transport.closeStdin()
    status = await proc.ended.addTimeout(30, reactor)

    assert status == 1
    assert proc.err.decode().count("\n") == 1
    assert proc.err.startswith(b"cliproxyd login: standard input ended")
    assert not (tmp_path / "auths").exists()
