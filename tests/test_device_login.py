"""
Device-code logins (RFC 8628) of xAI and Kimi accounts: from the
Management Center (C{/xai-auth-url}, C{/kimi-auth-url}, then
C{/get-auth-status}) and from C{python -m cliproxyd login xai}, against the
simulated authorization server, in memory on a Clock: the code is asked
for (xAI's endpoints found by discovery), the polls wait while the user has
not approved, and the approved login writes CLIProxyAPI's file, which then serves.
"""

from __future__ import annotations

import io
import json
import os
import stat

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred

from cliproxyd.credentials import login as login_cli
from cliproxyd.credentials.device import POLL_INTERVAL, device_login
from cliproxyd.credentials.providers import PROVIDERS
from cliproxyd.testing.authserver import SimulatedAuthServer
from tests.management_support import ManagementRig

AUTH_BASE = "http://auth.test"


class DeviceRig(ManagementRig):
    """A management rig whose outbound client reaches a simulated auth server playing C{provider_type}."""

    def __init__(self, tmp_path, provider_type: str) -> None:
        self.sim = SimulatedAuthServer(PROVIDERS[provider_type], None, email="ada@example.org")
        self.auth = StubTreq(self.sim.resource())
        providers = dict(PROVIDERS)
        providers[provider_type] = self.sim.provider_at(AUTH_BASE)
        super().__init__(tmp_path, client=self.auth, oauth_providers=providers)
        self.sim.clock = self.clock

    def poll(self, n: int = 1) -> None:
        for _ in range(n):
            self.clock.advance(POLL_INTERVAL)
            self.pump()


@pytest.mark.parametrize("provider_type, model", [("xai", "grok-4.5"), ("kimi", "kimi-k2.5"),
                                                 ("qwen", "qwen3-coder-plus")])
def test_a_device_login_from_the_panel_writes_the_file_once_approved(tmp_path, provider_type, model):
    rig = DeviceRig(tmp_path, provider_type)
    code, started = rig.call("GET", f"/{provider_type}-auth-url?is_webui=true")
    assert code == 200, started
    assert started["status"] == "ok" and started["flow"] == "device" and started["state"].startswith(provider_type)
    assert started["url"].startswith(f"{AUTH_BASE}/activate?user_code=") and started["user_code"]
    assert rig.sim.calls["discovery"] == (1 if provider_type == "xai" else 0)
    rig.poll(2)
    assert rig.call("GET", f"/get-auth-status?state={started['state']}") == (200, {"status": "wait"})
    assert rig.sim.calls["urn:ietf:params:oauth:grant-type:device_code"] >= 2
    assert model not in rig.models()
    rig.sim.approve_devices()
    rig.poll()
    code, status = rig.call("GET", f"/get-auth-status?state={started['state']}")
    assert status["status"] == "ok", status
    path = rig.auth_dir / status["file"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["type"] == provider_type and data["access_token"].startswith(f"sim-{provider_type}-at-")
    assert data["refresh_token"] in rig.sim.refresh_tokens
    if provider_type == "xai":
        assert status["file"] == "xai-ada@example.org.json"
        assert (data["email"], data["auth_kind"], data["token_endpoint"]) == \
            ("ada@example.org", "oauth", f"{AUTH_BASE}/token")
        assert data["base_url"] == "https://api.x.ai/v1" and data["id_token"]
    elif provider_type == "qwen":
        # Named after the time, as CLIProxyAPI's panel login named it; the server checked the PKCE verifier.
        assert status["file"] == f"qwen-{data['email']}.json" and data["email"].isdigit()
        assert data["resource_url"] == "portal.qwen.ai" and rig.sim.last_body["code_verifier"]
    else:
        assert status["file"].startswith("kimi-") and data["device_id"]
    assert model in rig.models()
    [entry] = rig.call("GET", "/auth-files")[1]["files"]
    assert (entry["type"], entry["status"]) == (provider_type, "active")


def test_a_cancelled_device_login_stops_polling(tmp_path):
    rig = DeviceRig(tmp_path, "kimi")
    started = rig.call("GET", "/kimi-auth-url")[1]
    rig.poll()
    asked = rig.sim.calls["urn:ietf:params:oauth:grant-type:device_code"]
    assert rig.call("DELETE", f"/oauth-session?state={started['state']}") == (200, {"status": "ok"})
    rig.sim.approve_devices()
    rig.poll(3)
    assert rig.sim.calls["urn:ietf:params:oauth:grant-type:device_code"] <= asked + 1
    assert os.listdir(rig.auth_dir) == []
    # A device login takes no callback.
    started = rig.call("GET", "/kimi-auth-url")[1]
    assert rig.call("POST", "/oauth-callback", {"provider": "kimi", "state": started["state"], "code": "c"}) == \
        (400, {"status": "error", "error": "this login is a device flow: it finishes when the code is approved, "
                                           "with no callback"})


def test_a_denied_device_login_is_an_error_the_panel_shows(tmp_path):
    rig = DeviceRig(tmp_path, "xai")
    started = rig.call("GET", "/xai-auth-url")[1]
    rig.sim.fail_next(1, 400, {"error": "access_denied"}, grant="urn:ietf:params:oauth:grant-type:device_code")
    rig.poll(2)
    assert rig.call("GET", f"/get-auth-status?state={started['state']}") == \
        (200, {"status": "error", "error": "the xai login failed: the user denied the login"})
    assert os.listdir(rig.auth_dir) == []


def test_a_slow_down_answer_waits_longer_between_polls(tmp_path):
    rig = DeviceRig(tmp_path, "kimi")
    rig.call("GET", "/kimi-auth-url")
    grant = "urn:ietf:params:oauth:grant-type:device_code"
    rig.pump()
    first = rig.sim.calls[grant]
    rig.sim.fail_next(1, 400, {"error": "slow_down"}, grant=grant)
    rig.poll()  # this poll is told to slow down
    slowed = rig.sim.calls[grant]
    rig.poll()  # 5 s later: still waiting (10 s now)
    assert rig.sim.calls[grant] == slowed > first
    rig.poll()
    assert rig.sim.calls[grant] == slowed + 1


def test_the_command_line_device_login_prints_the_code_and_writes_the_file(tmp_path):
    from twisted.internet.task import Clock

    clock = Clock()
    sim = SimulatedAuthServer(PROVIDERS["xai"], clock, email="ada@example.org")
    stub = StubTreq(sim.resource())
    out = io.StringIO()
    d = Deferred.fromCoroutine(device_login(None, sim.provider_at(AUTH_BASE), str(tmp_path / "auth"), client=stub,
                                            clock=clock, out=out))
    stub.flush()
    assert "confirm the code" in out.getvalue() and f"{AUTH_BASE}/activate" in out.getvalue()
    sim.approve_devices()
    clock.advance(POLL_INTERVAL)
    stub.flush()
    path = d.result
    assert os.path.basename(path) == "xai-ada@example.org.json"
    with open(path) as f:
        assert json.load(f)["type"] == "xai"
    assert "sim-xai-at-" not in out.getvalue()  # no token is ever printed


def test_login_takes_the_provider_as_its_argument(monkeypatch, tmp_path):
    ran = {}

    async def fake_device(reactor, provider, auth_dir, proxy, alias=""):
        ran["provider"], ran["auth_dir"] = provider.type, auth_dir

    monkeypatch.setattr(login_cli, "_device", fake_device)
    monkeypatch.setattr("twisted.internet.task.react", lambda f: _run(f))
    from cliproxyd.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["login", "xai", "--auth-dir", str(tmp_path)])
    assert e.value.code == 0 and ran == {"provider": "xai", "auth_dir": str(tmp_path)}


def _run(f):
    d = Deferred.fromCoroutine(f(None))
    assert d.called
    raise SystemExit(0)
