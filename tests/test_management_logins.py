"""
The Management Center's OAuth web login (C{/<provider>-auth-url},
C{/get-auth-status}, C{/oauth-callback}, C{/oauth-session}) against the
simulated authorization server: the panel's own calls (oauth.ts: C{GET
/<provider>-auth-url?is_webui=true}, C{GET /get-auth-status?state=},
C{POST /oauth-callback {"provider", "redirect_url"}}) and the fields it
reads from each answer, then the file the login writes and the reload
that serves it. In memory on a Clock, and once over loopback, where the
browser comes back to the provider's callback port by itself.
"""

from __future__ import annotations

import json
import os
import stat
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_twisted
import treq
from attrs import evolve
from treq.testing import StubTreq

from cliproxyd.credentials.providers import PROVIDERS
from cliproxyd.management.logins import FINISHED_SECONDS, PENDING_SECONDS
from cliproxyd.testing.authserver import SimulatedAuthServer
from tests.management_support import ManagementRig

AUTH_BASE = "http://auth.test"
PANEL_NAMES = {"claude": "anthropic", "codex": "codex", "gemini-cli": "gemini-cli", "antigravity": "antigravity",
               "iflow": "iflow"}


class LoginRig(ManagementRig):
    """A management rig whose outbound client reaches a simulated auth server of C{provider_type}."""

    def __init__(self, tmp_path, provider_type: str = "claude", **kw) -> None:
        self.sim = SimulatedAuthServer(PROVIDERS[provider_type], None, **kw)
        self.auth = StubTreq(self.sim.resource())
        providers = {t: p for t, p in PROVIDERS.items()}
        providers[PROVIDERS[provider_type].type] = self.sim.provider_at(AUTH_BASE)
        super().__init__(tmp_path, client=self.auth, oauth_providers=providers)
        self.sim.clock = self.clock
        self.panel_name = PANEL_NAMES[PROVIDERS[provider_type].type]

    def start(self) -> dict:
        code, body = self.call("GET", f"/{self.panel_name}-auth-url?is_webui=true")
        assert code == 200, body
        assert body["status"] == "ok" and isinstance(body["url"], str) and isinstance(body["state"], str)
        return body

    def consent(self, url: str) -> str:
        """The browser at the authorization URL: the address it is sent back to."""
        response = self.settle(self.auth.get(url, allow_redirects=False))
        assert response.code == 302, self.settle(self.auth.content(response))
        return response.headers.getRawHeaders(b"location")[0].decode()

    def status(self, state: str) -> tuple[int, dict]:
        self.pump()
        return self.call("GET", f"/get-auth-status?state={state}")


@pytest.mark.parametrize("provider_type", ["claude", "codex", "gemini-cli", "antigravity"])
def test_a_web_login_writes_the_account_file_and_serves_it(tmp_path, provider_type):
    rig = LoginRig(tmp_path, provider_type, email="ada@example.org")
    started = rig.start()
    url = urlsplit(started["url"])
    query = parse_qs(url.query)
    assert url.geturl().startswith(f"{AUTH_BASE}/authorize?")
    assert query["state"] == [started["state"]] and query["code_challenge_method"] == ["S256"]
    provider = PROVIDERS[provider_type]
    assert query["redirect_uri"] == [f"http://localhost:{provider.callback_port}{provider.callback_path}"]
    assert rig.status(started["state"]) == (200, {"status": "wait"})

    back = rig.consent(started["url"])
    assert rig.call("POST", "/oauth-callback", {"provider": rig.panel_name, "redirect_url": back}) == \
        (200, {"status": "ok"})
    code, body = rig.status(started["state"])
    assert code == 200 and body["status"] == "ok", body
    path = rig.auth_dir / body["file"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["email"] == "ada@example.org" and data["type"] == ("gemini" if provider_type == "gemini-cli"
                                                                   else provider_type)
    [entry] = rig.call("GET", "/auth-files")[1]["files"]
    assert (entry["name"], entry["email"], entry["status"], entry["type"]) == \
        (body["file"], "ada@example.org", "active", provider_type)
    if provider_type == "codex":
        assert entry["id_token"] == {"chatgpt_account_id": "acct-sim-0001", "plan_type": "plus"}
    assert rig.sim.calls["authorization_code"] == 1


def test_a_callback_must_name_a_pending_login_of_its_provider(tmp_path):
    rig = LoginRig(tmp_path)
    started = rig.start()
    back = rig.consent(started["url"])
    assert rig.call("POST", "/oauth-callback", {"provider": "anthropic"}) == \
        (400, {"status": "error", "error": "state is required"})
    assert rig.call("POST", "/oauth-callback", {"provider": "anthropic", "state": "x/../y", "code": "c"}) == \
        (400, {"status": "error", "error": "invalid state"})
    assert rig.call("POST", "/oauth-callback", {"provider": "anthropic", "state": started["state"]}) == \
        (400, {"status": "error", "error": "code or error is required"})
    assert rig.call("POST", "/oauth-callback", {"provider": "anthropic", "state": "nope", "code": "c"}) == \
        (404, {"status": "error", "error": "unknown or expired state"})
    assert rig.call("POST", "/oauth-callback", {"provider": "codex", "redirect_url": back}) == \
        (400, {"status": "error", "error": "provider does not match state"})
    assert rig.call("POST", "/oauth-callback", {"provider": "nonesuch", "redirect_url": back}) == \
        (400, {"status": "error", "error": "unsupported provider"})
    assert rig.call("POST", "/oauth-callback", {"provider": "anthropic", "redirect_url": 5})[0] == 400
    assert rig.sim.calls["authorization_code"] == 0  # nothing above reached the token endpoint
    assert rig.call("POST", "/oauth-callback", {"provider": "anthropic", "redirect_url": back})[0] == 200
    rig.pump()
    assert rig.call("POST", "/oauth-callback", {"provider": "anthropic", "redirect_url": back}) == \
        (409, {"status": "error", "error": "oauth flow is already completed"})
    assert rig.sim.calls["authorization_code"] == 1


def test_denied_consent_and_a_refused_code_are_errors_the_panel_shows(tmp_path):
    rig = LoginRig(tmp_path, deny=True)
    started = rig.start()
    back = rig.consent(started["url"])
    assert rig.call("POST", "/oauth-callback", {"provider": "anthropic", "redirect_url": back})[0] == 200
    assert rig.status(started["state"]) == (200, {"status": "error", "error": "access was denied in the browser"})

    rig.sim.deny = False
    started = rig.start()
    back = rig.consent(started["url"])
    rig.sim.fail_next(status=400, grant="authorization_code")
    assert rig.call("POST", "/oauth-callback", {"provider": "anthropic", "redirect_url": back})[0] == 200
    _, body = rig.status(started["state"])
    assert body["status"] == "error" and "token endpoint refused the code" in body["error"], body
    assert os.listdir(rig.auth_dir) == []


def test_a_pending_login_expires_on_the_clock_and_is_then_forgotten(tmp_path):
    rig = LoginRig(tmp_path)
    started = rig.start()
    back = rig.consent(started["url"])
    rig.clock.advance(PENDING_SECONDS - 1)
    assert rig.status(started["state"]) == (200, {"status": "wait"})
    rig.clock.advance(1)
    assert rig.status(started["state"]) == \
        (200, {"status": "error", "error": "timed out waiting for the OAuth callback"})
    assert rig.call("POST", "/oauth-callback", {"provider": "anthropic", "redirect_url": back}) == \
        (409, {"status": "error", "error": "timed out waiting for the OAuth callback"})
    rig.clock.advance(FINISHED_SECONDS)
    assert rig.status(started["state"]) == (200, {"status": "error", "error": "unknown or expired state"})
    assert rig.call("POST", "/oauth-callback", {"provider": "anthropic", "redirect_url": back})[0] == 404
    assert rig.sim.calls["authorization_code"] == 0 and os.listdir(rig.auth_dir) == []


def test_status_without_a_state_is_ok_and_a_malformed_one_is_400(tmp_path):
    rig = LoginRig(tmp_path)
    assert rig.call("GET", "/get-auth-status") == (200, {"status": "ok"})
    assert rig.call("GET", "/get-auth-status?state=a%2Fb") == (400, {"status": "error", "error": "invalid state"})
    assert rig.call("GET", "/get-auth-status?state=never") == \
        (200, {"status": "error", "error": "unknown or expired state"})


def test_a_head_request_starts_no_login(tmp_path):
    rig = LoginRig(tmp_path)
    response = rig.response("HEAD", "/anthropic-auth-url", headers={"Authorization": "Bearer mgmt-secret-1"})
    assert response.code == 200
    logins = next(r for r in rig.api.resources if hasattr(r, "take"))
    assert logins._logins == {}


def test_a_login_can_be_cancelled_and_a_device_login_whose_server_fails_says_so(tmp_path):
    rig = LoginRig(tmp_path)
    started = rig.start()
    assert rig.call("DELETE", f"/oauth-session?state={started['state']}") == (200, {"status": "ok"})
    assert rig.call("DELETE", f"/oauth-session?state={started['state']}") == \
        (404, {"error": "no pending login with that state"})
    # Kimi's device endpoint is not where this rig's client reaches (tests/test_device_login.py has the flow).
    code, body = rig.call("GET", "/kimi-auth-url?is_webui=true")
    assert code == 502 and body["error"].startswith("failed to start device authorization flow: ")


def test_stopping_the_daemon_ends_waiting_logins_and_leaves_no_timer_or_port(tmp_path):
    from twisted.internet.testing import MemoryReactorClock

    from cliproxyd.daemon import build_daemon
    from tests.management_support import AUTH, CONFIG_TEXT, SECRET_HASH, Threads

    reactor = MemoryReactorClock()
    (tmp_path / "auth").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG_TEXT.format(port=0, auth_dir=tmp_path / "auth", secret=SECRET_HASH, base=AUTH_BASE))
    threads = Threads()
    daemon = build_daemon(reactor, StubTreq(SimulatedAuthServer(PROVIDERS["codex"], reactor).resource()),
                          config_path=str(config), poll=0, listener=reactor, run_in_thread=threads)
    for service in daemon.services:
        service.startService()
    threads.drain()
    stub = StubTreq(daemon.management.app.resource())

    def get(path: str) -> dict:
        got: list = []
        stub.get(f"http://127.0.0.1{path}", headers=AUTH).addCallback(stub.content).addBoth(got.append)
        for _ in range(100):
            if got:
                break
            stub.flush()
            threads.drain()
        return json.loads(got[0])

    state = get("/codex-auth-url")["state"]
    [(_, _, _, interface)] = [s for s in reactor.tcpServers if s[0] == PROVIDERS["codex"].callback_port]
    assert interface == "127.0.0.1"
    for service in reversed(daemon.services):
        service.stopService()
    threads.drain()
    assert reactor.getDelayedCalls() == []
    assert get(f"/get-auth-status?state={state}") == \
        {"status": "error", "error": "the daemon stopped before the login finished"}


def test_a_login_needs_an_auth_dir(tmp_path):
    rig = LoginRig(tmp_path)
    text = rig.config.read_text().replace(f"auth-dir: {rig.auth_dir}\n", "")
    assert rig.call("PUT", "/config.yaml", raw=text.encode())[0] == 200
    assert rig.call("GET", "/anthropic-auth-url")[0] == 409


@pytest_twisted.ensureDeferred
async def test_over_loopback_the_browser_comes_back_to_the_callback_port_by_itself(
        tmp_path, reactor, auth_server):
    """The daemon listens on the provider's loopback callback while the login waits, and stops after."""
    from cliproxyd.daemon import build_daemon
    from tests.management_support import AUTH, CONFIG_TEXT, SECRET_HASH

    server = auth_server("codex")
    provider = evolve(server.provider, callback_port=0)  # any free port, where the real one may be taken
    (tmp_path / "auth").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG_TEXT.format(port=0, auth_dir=tmp_path / "auth", secret=SECRET_HASH,
                                         base="http://127.0.0.1:9"))
    daemon = build_daemon(reactor, server.client, config_path=str(config), poll=0, listener=reactor,
                          oauth_providers={**PROVIDERS, "codex": provider})
    daemon.runtime.start()
    from cliproxyd.frontend import QuietSite

    port = reactor.listenTCP(0, QuietSite(daemon.resource()), interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}/v0/management"
    try:
        response = await server.client.get(f"{base}/codex-auth-url?is_webui=true", headers=AUTH)
        started = json.loads(await response.content())
        redirect = parse_qs(urlsplit(started["url"]).query)["redirect_uri"][0]
        callback_port = urlsplit(redirect).port
        assert callback_port != 0
        # The browser: consent, then the redirect to the loopback callback, followed as a browser does.
        response = await server.client.get(started["url"], allow_redirects=False)
        back = response.headers.getRawHeaders(b"location")[0].decode()
        assert back.startswith(f"http://localhost:{callback_port}/auth/callback?")
        response = await server.client.get(back.replace("localhost", "127.0.0.1", 1))
        page = await response.text()
        assert response.code == 200 and "Logged in" in page
        for _ in range(200):
            response = await server.client.get(f"{base}/get-auth-status?state={started['state']}", headers=AUTH)
            status = json.loads(await response.content())
            if status["status"] != "wait":
                break
            await deferLater(reactor, 0.01)
        assert status["status"] == "ok", status
        assert os.path.exists(tmp_path / "auth" / status["file"])
        from twisted.internet.error import ConnectError

        with pytest.raises(ConnectError):  # the callback port is closed once the login has its answer
            await treq.get(f"http://127.0.0.1:{callback_port}{provider.callback_path}", timeout=2)
    finally:
        await port.stopListening()
        await daemon.runtime.stopService()


async def deferLater(reactor, seconds):
    from twisted.internet.task import deferLater as later

    return await later(reactor, seconds, lambda: None)
