"""
What only the whole daemon shows, built by the twistd plugin and driven on
loopback: the plaintext management key replaced by its hash at start-up,
and OAuth accounts refreshed against the simulated authorization server, in
the background and after a 401. The management routes themselves are
tested in memory (test_management_routes).
"""

from __future__ import annotations

import json
import os
import stat

import pytest_twisted
import treq

from cliproxyd.frontend import QuietSite
from cliproxyd.tap import Options, build
from cliproxyd.testing.upstream import SimulatedUpstream
from tests.conftest import unused_port
from tests.management_support import AUTH, CONFIG_TEXT, SECRET, claude_file


class Daemon:
    """The daemon the plugin builds from L{CONFIG_TEXT} with a plaintext key, its upstream on loopback."""

    def __init__(self, reactor, tmp_path) -> None:
        self.reactor = reactor
        self.upstream = SimulatedUpstream(reactor)
        self.upstream_port = reactor.listenTCP(0, QuietSite(self.upstream.resource()), interface="127.0.0.1")
        self.base = f"http://127.0.0.1:{self.upstream_port.getHost().port}"
        self.auth_dir = tmp_path / "auth"
        self.auth_dir.mkdir()
        self.config = tmp_path / "config.yaml"
        port = unused_port()
        self.config.write_text(CONFIG_TEXT.format(port=port, auth_dir=self.auth_dir, secret=SECRET,
                                                  base=self.base))
        os.chmod(self.config, 0o640)
        options = Options()
        options.parseOptions(["--config", str(self.config), "--watch-interval", "0"])
        self.service = build(options, reactor)
        self.service.startService()
        self.url = f"http://127.0.0.1:{port}"

    async def call(self, method: str, path: str, body=None, headers=None, raw: bytes | None = None):
        kw = {"headers": AUTH if headers is None else headers}
        if raw is not None:
            kw["data"] = raw
        elif body is not None:
            kw["json"] = body
        response = await treq.request(method, self.url + "/v0/management" + path, **kw)
        content = await response.content()
        try:
            return response.code, json.loads(content)
        except ValueError:
            return response.code, content

    async def chat(self, model="gpt-4o-mini", headers=None):
        response = await treq.post(self.url + "/v1/chat/completions", headers=headers or {},
                                   json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
        return response.code, await response.content()

    async def close(self) -> None:
        await self.service.stopService()
        await self.upstream_port.stopListening()


@pytest_twisted.async_yield_fixture
async def daemon(tmp_path):
    from twisted.internet import reactor

    d = Daemon(reactor, tmp_path)
    yield d
    await d.close()


# -- start-up ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_plaintext_key_is_replaced_by_its_hash_keeping_the_comments(daemon):
    text = daemon.config.read_text()
    assert SECRET not in text
    assert "secret-key: $2b$" in text or "secret-key: '$2b$" in text or 'secret-key: "$2b$' in text
    assert "# hashed at start-up" in text and "# the simulated upstream" in text
    assert (await daemon.call("GET", "/debug"))[0] == 200


# -- refresh, end to end -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_expired_token_is_refreshed_in_the_background_and_written_back(daemon, auth_server):
    server = auth_server("claude")
    refresh = server.sim.issue_refresh_token("a@x.com")
    path = daemon.auth_dir / "claude-a.json"
    path.write_bytes(claude_file(daemon.base, token="expired-token", refresh_token=refresh,
                                 expired="2000-01-01T00:00:00Z", token_uri=server.provider.token_url))
    os.chmod(path, 0o640)
    runtime = daemon.service.getServiceNamed("runtime")
    await runtime.reload("test")
    await daemon.service.getServiceNamed("conductor").getServiceNamed("token-refresh").run_now()
    await _until(lambda: json.loads(path.read_text())["access_token"] != "expired-token")
    data = json.loads(path.read_text())
    assert data["access_token"] in server.sim.access_tokens and data["email"] == "a@x.com"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert (await daemon.chat("claude-sonnet-4-5"))[0] == 200
    assert daemon.upstream.seen[-1].headers["authorization"] == f"Bearer {data['access_token']}"


@pytest_twisted.ensureDeferred
async def test_a_401_refreshes_the_token_and_the_client_never_sees_it(daemon, auth_server):
    server = auth_server("claude")
    refresh = server.sim.issue_refresh_token("a@x.com")
    daemon.upstream.known_keys = server.sim.access_tokens  # only live tokens are accepted
    path = daemon.auth_dir / "claude-a.json"
    path.write_bytes(claude_file(daemon.base, token="revoked-token", refresh_token=refresh,
                                 token_uri=server.provider.token_url))
    await daemon.service.getServiceNamed("runtime").reload("test")
    code, body = await daemon.chat("claude-sonnet-4-5")
    assert code == 200, body
    assert server.sim.calls["refresh_token"] == 1
    assert [s.headers["authorization"] for s in daemon.upstream.seen][-1].startswith("Bearer ")
    assert json.loads(path.read_text())["access_token"] in server.sim.access_tokens


async def _until(check, timeout: float = 10.0) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await deferLater(reactor, 0.02)
    raise AssertionError("condition not met in time")
