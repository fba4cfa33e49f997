"""
iFlow's browser-cookie login (CLIProxyAPI's, before it dropped iFlow):
the platform's API-key endpoint, simulated, issues the account's key for
its BXAuth cookie; the file written is CLIProxyAPI's, and serves.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from cliproxyd.credentials import login as login_cli
from cliproxyd.credentials.authfiles import parse_account
from cliproxyd.credentials.iflow_cookie import CookieError, cookie_login, normalize_cookie
from cliproxyd.credentials.providers import PROVIDERS
from cliproxyd.testing.authserver import SimulatedAuthServer

NOW = 1_700_000_000.0
BASE = "http://auth.test"
COOKIE = "foo=1;  BXAuth=sim-bxauth-0001 ; other=2"


def rig():
    clock = Clock()
    clock.rightNow = NOW
    sim = SimulatedAuthServer(PROVIDERS["iflow"], clock, email="ada@example.org")
    return clock, sim, StubTreq(sim.resource())


def run(stub, coroutine):
    results: list = []
    Deferred.fromCoroutine(coroutine).addBoth(results.append)
    stub.flush()
    [result] = results
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


def test_a_cookie_login_writes_clipproxyapis_file_with_a_fresh_key(tmp_path):
    clock, sim, stub = rig()
    path, key = run(stub, cookie_login(stub, COOKIE, str(tmp_path), clock=clock, url=BASE + "/api/openapi/apikey"))
    assert os.path.basename(path) == f"iflow-ada@example.org-{int(NOW)}.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    record = json.loads(Path(path).read_text())
    assert record == {"access_token": "", "refresh_token": "", "last_refresh": "2023-11-14T22:13:20Z",
                      "expired": "2026-12-31 15:04", "api_key": sim.iflow_api_key, "email": "ada@example.org",
                      "token_type": "", "scope": "", "cookie": "BXAuth=sim-bxauth-0001;", "type": "iflow"}
    # The platform was asked for the key's name, then for a fresh key of that name, with the cookie.
    assert sim.calls["apikey-get"] == 1 and sim.calls["apikey-post"] == 1
    account = parse_account(path, Path(path).read_bytes())
    assert account is not None and account.type == "iflow"


def test_the_same_bxauth_twice_is_refused_and_nothing_is_written(tmp_path):
    clock, sim, stub = rig()
    url = BASE + "/api/openapi/apikey"
    path, _ = run(stub, cookie_login(stub, COOKIE, str(tmp_path), clock=clock, url=url))
    with pytest.raises(CookieError, match=os.path.basename(path)):
        run(stub, cookie_login(stub, "BXAuth=sim-bxauth-0001", str(tmp_path), clock=clock, url=url))
    assert os.listdir(tmp_path) == [os.path.basename(path)] and sim.calls["apikey-get"] == 1


@pytest.mark.parametrize("cookie, reason", [("", "empty"), ("session=1", "BXAuth"),
                                            ("BXAuth=stale", "refused")])
def test_a_cookie_that_cannot_log_in_says_why(tmp_path, cookie, reason):
    clock, sim, stub = rig()
    with pytest.raises(CookieError, match=reason):
        run(stub, cookie_login(stub, cookie, str(tmp_path), clock=clock, url=BASE + "/api/openapi/apikey"))
    assert os.listdir(tmp_path) == []


def test_normalize_cookie_makes_one_line_ending_in_a_semicolon():
    assert normalize_cookie(" a=1;\n BXAuth=x ") == "a=1; BXAuth=x;"


def test_the_panels_cookie_login_writes_the_file_and_serves_it(tmp_path):
    from tests.test_management_logins import LoginRig

    rig = LoginRig(tmp_path, "iflow", email="ada@example.org")
    code, body = rig.call("POST", "/iflow-auth-url", {"cookie": COOKIE})
    assert code == 200, body
    assert body["status"] == "ok" and body["email"] == "ada@example.org" and body["expired"] == "2026-12-31 15:04"
    saved = Path(body["saved_path"])
    assert saved.parent == rig.auth_dir and json.loads(saved.read_text())["api_key"] == rig.sim.iflow_api_key
    assert "glm-4.6" in rig.models()
    code, body = rig.call("POST", "/iflow-auth-url", {"cookie": COOKIE})
    assert code == 409 and body["existing_file"] == saved.name
    assert rig.call("POST", "/iflow-auth-url", {"cookie": ""})[0] == 400


def test_login_iflow_with_a_cookie_runs_the_cookie_login(monkeypatch, tmp_path):
    ran = {}

    async def fake_cookie(reactor, cookie, auth_dir, proxy, url):
        ran.update(cookie=cookie, auth_dir=auth_dir, url=url)

    monkeypatch.setattr(login_cli, "_iflow_cookie", fake_cookie)
    monkeypatch.setattr("twisted.internet.task.react", _react)
    from cliproxyd.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["login", "iflow", "--cookie", "BXAuth=abc", "--auth-dir", str(tmp_path)])
    assert e.value.code == 0 and ran == {"cookie": "BXAuth=abc", "auth_dir": str(tmp_path),
                                         "url": "https://platform.iflow.cn/api/openapi/apikey"}
    with pytest.raises(SystemExit) as e:  # a cookie is iFlow's only
        main(["login", "qwen", "--cookie", "BXAuth=abc", "--auth-dir", str(tmp_path)])
    assert e.value.code == 1


def _react(f):
    d = Deferred.fromCoroutine(f(None))
    assert d.called
    raise SystemExit(0)
