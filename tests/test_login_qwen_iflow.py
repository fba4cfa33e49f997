"""
C{cliproxyd login qwen} (a device flow with PKCE) and C{cliproxyd login
iflow} (an authorization code through the local callback, then iFlow's user
info for the API key), against the simulated auth server, writing the files
CLIProxyAPI wrote for them; the files then load as accounts that serve.
"""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from cliproxyd.credentials import login as login_cli
from cliproxyd.credentials.authfiles import parse_account
from cliproxyd.credentials.device import POLL_INTERVAL, device_login, poll_device, start_device
from cliproxyd.credentials.providers import PROVIDERS
from cliproxyd.credentials.tokens import TokenError
from cliproxyd.testing.authserver import SimulatedAuthServer
from tests.test_login import EMAIL, Browser, clock_at, login_error, run_login

AUTH_BASE = "http://auth.test"
NOW = 1_700_000_000.0


def qwen_rig():
    clock = Clock()
    clock.rightNow = NOW
    sim = SimulatedAuthServer(PROVIDERS["qwen"], clock, email=EMAIL, expires_in=7200)
    return clock, sim, StubTreq(sim.resource()), sim.provider_at(AUTH_BASE)


def test_a_qwen_login_sends_a_pkce_challenge_and_writes_qwens_file(tmp_path):
    clock, sim, stub, provider = qwen_rig()
    out = io.StringIO()
    d = Deferred.fromCoroutine(device_login(None, provider, str(tmp_path / "auth"), client=stub, clock=clock,
                                            out=out, alias="ada-work"))
    stub.flush()
    assert "confirm the code" in out.getvalue() and f"{AUTH_BASE}/activate" in out.getvalue()
    [challenge] = sim.device_challenges.values()
    assert len(challenge) == 43  # an S256 challenge; the server checks each poll's verifier against it
    clock.advance(POLL_INTERVAL)  # not approved yet: pending
    stub.flush()
    assert not d.called
    sim.approve_devices()
    clock.advance(POLL_INTERVAL)
    stub.flush()
    path = d.result
    assert os.path.basename(path) == "qwen-ada-work.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    record = json.loads(Path(path).read_text())
    assert set(record) == {"type", "access_token", "refresh_token", "last_refresh", "resource_url", "email",
                           "expired"}
    assert (record["type"], record["email"], record["resource_url"]) == ("qwen", "ada-work", "portal.qwen.ai")
    # Written at NOW + 10 s (two polls), the token living 7200 s from then.
    assert record["expired"] == "2023-11-15T00:13:30Z" and record["last_refresh"] == "2023-11-14T22:13:30Z"
    assert sim.access_tokens[record["access_token"]] == EMAIL
    assert sim.last_body["code_verifier"] and sim.last_body["code_verifier"] not in out.getvalue()
    assert record["access_token"] not in out.getvalue()
    # The file is an account of its own type, served at its resource_url.
    account = parse_account(path, Path(path).read_bytes())
    assert account is not None and account.type == "qwen"


def test_a_qwen_poll_with_another_verifier_is_refused(tmp_path):
    clock, sim, stub, provider = qwen_rig()
    d = Deferred.fromCoroutine(start_device(stub, provider, clock=clock))
    stub.flush()
    code = d.result
    sim.approve_devices()
    from attrs import evolve

    forged = evolve(code, code_verifier="x" * 64)
    failures: list = []
    Deferred.fromCoroutine(poll_device(stub, provider, forged, clock=clock)).addErrback(failures.append)
    stub.flush()
    [failure] = failures
    assert failure.check(TokenError) and "invalid_grant" in failure.value.message
    assert sim.last_body["code_verifier"] == "x" * 64 and sim.devices  # refused, the code still unspent


@pytest_twisted.ensureDeferred
async def test_an_iflow_login_goes_through_the_callback_and_keeps_the_api_key(auth_server, tmp_path):
    auth = auth_server("iflow", email=EMAIL, expires_in=7200)
    auth_dir = tmp_path / "auths"
    browser = Browser(auth.client)
    path, out = await run_login(auth, auth_dir, "callback", browser=browser)
    # iFlow's own authorization form: the callback as "redirect", a phone login, no PKCE.
    [url] = browser.urls
    assert "redirect=http%3A%2F%2Flocalhost%3A" in url and "loginMethod=phone" in url
    assert "code_challenge" not in url and "response_type" not in url
    name = os.path.basename(path)
    assert name == f"iflow-{EMAIL}-{int(NOW)}.json"
    record = json.loads(Path(path).read_text())
    assert set(record) == {"type", "access_token", "refresh_token", "last_refresh", "expired", "api_key", "email",
                           "token_type", "scope", "cookie"}
    assert (record["type"], record["email"], record["api_key"]) == ("iflow", EMAIL, "sk-iflow-sim-0001")
    assert record["expired"] == "2023-11-15T00:13:20Z" and record["token_type"] == "Bearer"
    # The exchange carried the client's Basic authentication and secret (the server checks both).
    assert auth.sim.last_headers["authorization"].startswith("Basic ")
    assert auth.sim.calls["authorization_code"] == 1 and auth.sim.calls["userinfo"] == 1
    code, page = await browser.visits[0]
    assert code == 200 and "close this tab" in page
    assert record["api_key"] not in out and record["access_token"] not in out
    account = parse_account(path, Path(path).read_bytes())
    assert account is not None and account.type == "iflow"


@pytest_twisted.ensureDeferred
async def test_an_iflow_account_without_an_api_key_is_not_saved(auth_server, tmp_path):
    auth = auth_server("iflow", email=EMAIL)
    auth.sim.iflow_api_key = ""
    error = await login_error(auth, tmp_path / "auths")
    assert "API key" in str(error) or "apiKey" in str(error)
    assert not (tmp_path / "auths").exists() or not os.listdir(tmp_path / "auths")


@pytest_twisted.ensureDeferred
async def test_iflows_pasted_answer_works_without_a_browser(auth_server, tmp_path):
    auth = auth_server("iflow", email=EMAIL)
    path, _ = await run_login(auth, tmp_path / "auths", "no-browser", clock=clock_at())
    assert json.loads(Path(path).read_text())["api_key"] == "sk-iflow-sim-0001"


def test_login_qwen_asks_for_the_alias_when_no_email_is_given(monkeypatch, tmp_path):
    ran = {}

    async def fake_device(reactor, provider, auth_dir, proxy, alias=""):
        ran.update(provider=provider.type, alias=alias)

    async def fake_ask(read_line, out, clock, timeout=0):
        return "asked-alias"

    monkeypatch.setattr(login_cli, "_device", fake_device)
    monkeypatch.setattr(login_cli, "ask_alias", fake_ask)
    monkeypatch.setattr("twisted.internet.task.react", _run)
    from cliproxyd.__main__ import main

    for argv, alias in ((["login", "qwen", "--email", "ada@example.org"], "ada@example.org"),
                        (["login", "qwen"], "asked-alias")):
        with pytest.raises(SystemExit) as e:
            main([*argv, "--auth-dir", str(tmp_path)])
        assert e.value.code == 0 and ran == {"provider": "qwen", "alias": alias}


@pytest_twisted.ensureDeferred
async def test_an_empty_alias_is_refused():
    async def read_line():
        return "\n"

    with pytest.raises(login_cli.LoginError, match="--email"):
        await login_cli.ask_alias(read_line, io.StringIO(), Clock())


def _run(f):
    d = Deferred.fromCoroutine(f(None))
    assert d.called
    raise SystemExit(0)


def test_an_iflow_web_login_from_the_panel_writes_the_file_and_serves_it(tmp_path):
    from urllib.parse import parse_qs, urlsplit

    from tests.test_management_logins import LoginRig

    rig = LoginRig(tmp_path, "iflow", email=EMAIL)
    started = rig.start()
    query = parse_qs(urlsplit(started["url"]).query)
    assert query["redirect"] == ["http://localhost:11451/oauth2callback"] and query["state"] == [started["state"]]
    back = rig.consent(started["url"])
    assert rig.call("POST", "/oauth-callback", {"provider": "iflow", "redirect_url": back}) == (200, {"status": "ok"})
    code, body = rig.status(started["state"])
    assert code == 200 and body["status"] == "ok", body
    data = json.loads((rig.auth_dir / body["file"]).read_text())
    assert (data["type"], data["email"], data["api_key"]) == ("iflow", EMAIL, "sk-iflow-sim-0001")
    assert "glm-4.6" in rig.models()
