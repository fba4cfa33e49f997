"""
The management API as an operator meets it: the daemon built by the twistd
plugin, on loopback, driven the way curl would drive it. Every write is
checked in the file (comments and mode kept) and in the daemon's behaviour
(in effect before the answer). Also here: OAuth accounts refreshed by the
daemon against the simulated authorization server, in the background and
after a 401.
"""

from __future__ import annotations

import json
import os
import stat

import pytest_twisted
import treq
from twisted.internet.defer import Deferred, gatherResults

from cliproxyd.tap import Options, build
from cliproxyd.testing.upstream import SimulatedUpstream
from cliproxyd.frontend import QuietSite
from tests.conftest import unused_port

SECRET = "mgmt-secret-1"
AUTH = {"Authorization": f"Bearer {SECRET}"}

CONFIG_TEXT = """\
# cliproxyd test config
port: {port}
host: 127.0.0.1
auth-dir: {auth_dir}
# retry settings
request-retry: 0   # no extra rounds
remote-management:
  secret-key: {secret}   # hashed at start-up
openai-compatibility:
  # the simulated upstream
  - name: sim
    base-url: {base}/v1
    api-key-entries:
      - api-key: sk-up-1
      - api-key: sk-up-2
    models:
      - name: sim-small
        alias: gpt-4o-mini
"""


class Daemon:
    def __init__(self, reactor, tmp_path, secret: str = SECRET) -> None:
        self.reactor = reactor
        self.upstream = SimulatedUpstream(reactor)
        self.upstream_port = reactor.listenTCP(0, QuietSite(self.upstream.resource()), interface="127.0.0.1")
        self.base = f"http://127.0.0.1:{self.upstream_port.getHost().port}"
        self.auth_dir = tmp_path / "auth"
        self.auth_dir.mkdir()
        self.config = tmp_path / "config.yaml"
        port = unused_port()
        self.config.write_text(CONFIG_TEXT.format(port=port, auth_dir=self.auth_dir, secret=secret,
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

    async def models(self) -> set[str]:
        response = await treq.get(self.url + "/v1/models")
        return {m["id"] for m in (await response.json())["data"]}

    async def close(self) -> None:
        await self.service.stopService()
        await self.upstream_port.stopListening()


@pytest_twisted.async_yield_fixture
async def daemon(tmp_path):
    from twisted.internet import reactor

    d = Daemon(reactor, tmp_path)
    yield d
    await d.close()


# -- access ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_key_is_required_from_localhost_in_either_header(daemon):
    assert (await daemon.call("GET", "/debug", headers={}))[0] == 401
    code, body = await daemon.call("GET", "/debug", headers={"Authorization": "Bearer wrong"})
    assert (code, body) == (401, {"error": "invalid management key"})
    assert (await daemon.call("GET", "/debug"))[0] == 200
    assert (await daemon.call("GET", "/debug", headers={"X-Management-Key": SECRET}))[0] == 200


@pytest_twisted.ensureDeferred
async def test_a_plaintext_key_is_replaced_by_its_hash_keeping_the_comments(daemon):
    text = daemon.config.read_text()
    assert SECRET not in text
    assert "secret-key: $2b$" in text or "secret-key: '$2b$" in text or 'secret-key: "$2b$' in text
    assert "# hashed at start-up" in text and "# the simulated upstream" in text


@pytest_twisted.ensureDeferred
async def test_without_a_secret_every_route_is_404(tmp_path):
    from twisted.internet import reactor

    d = Daemon(reactor, tmp_path, secret='""')
    try:
        assert (await d.call("GET", "/debug"))[0] == 404
        assert (await d.call("GET", "/auth-files"))[0] == 404
    finally:
        await d.close()


@pytest_twisted.ensureDeferred
async def test_unknown_routes_are_404(daemon):
    assert (await daemon.call("GET", "/no-such-setting"))[0] == 404
    assert (await daemon.call("PUT", "/status", {"value": 1}))[0] in (404, 405)


# -- config ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_get_config_hides_the_listener_and_the_management_settings(daemon):
    code, body = await daemon.call("GET", "/config")
    assert code == 200
    assert body["openai-compatibility"][0]["name"] == "sim"
    assert not {"host", "port", "remote-management", "auth-dir"} & set(body)


@pytest_twisted.ensureDeferred
async def test_put_config_yaml_is_validated_before_it_is_written(daemon):
    code, text = await daemon.call("GET", "/config.yaml")
    assert code == 200 and b"# cliproxyd test config" in text
    code, body = await daemon.call("PUT", "/config.yaml", raw=text + b"routing:\n  strategy: sideways\n")
    assert code == 422 and body["error"] == "invalid_config" and "routing.strategy" in body["message"]
    assert daemon.config.read_bytes() == text
    code, body = await daemon.call("PUT", "/config.yaml", raw=text + b"api-keys: [sk-client]\n")
    assert (code, body) == (200, {"ok": True, "changed": ["config"]})
    assert (await daemon.chat())[0] == 401  # in effect at once
    assert (await daemon.chat(headers={"Authorization": "Bearer sk-client"}))[0] == 200
    assert stat.S_IMODE(os.stat(daemon.config).st_mode) == 0o640


# -- scalars ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_scalar_settings_are_written_with_comments_and_mode_kept(daemon):
    assert await daemon.call("GET", "/request-retry") == (200, {"request-retry": 0})
    assert await daemon.call("PUT", "/request-retry", {"value": 2}) == (200, {"status": "ok"})
    assert await daemon.call("GET", "/request-retry") == (200, {"request-retry": 2})
    text = daemon.config.read_text()
    assert "request-retry: 2   # no extra rounds" in text and "# retry settings" in text
    assert stat.S_IMODE(os.stat(daemon.config).st_mode) == 0o640
    assert (await daemon.call("PATCH", "/debug", {"value": True}))[0] == 200
    assert "debug: true" in daemon.config.read_text()
    assert (await daemon.call("PUT", "/routing/strategy", {"value": "ff"}))[0] == 200
    assert await daemon.call("GET", "/routing/strategy") == (200, {"strategy": "fill-first"})


@pytest_twisted.ensureDeferred
async def test_bad_scalar_bodies_are_400_with_a_reason_and_change_nothing(daemon):
    before = daemon.config.read_bytes()
    for path, body, reason in [
        ("/request-retry", {"value": -1}, "whole number"),
        ("/debug", {"value": "yes"}, "true or false"),
        ("/routing/strategy", {"value": "sideways"}, "round-robin"),
        ("/max-body-mb", {"value": 0}, "above 0"),
        ("/debug", [1], '{"value": ...}'),
    ]:
        code, answer = await daemon.call("PUT", path, body)
        assert code == 400 and reason in answer["error"], (path, answer)
    code, answer = await daemon.call("PUT", "/debug", raw=b"{nope")
    assert code == 400 and "not valid JSON" in answer["error"]
    assert daemon.config.read_bytes() == before


# -- lists -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_api_keys_list_put_patch_delete(daemon):
    assert await daemon.call("GET", "/api-keys") == (200, {"api-keys": []})
    assert (await daemon.call("PUT", "/api-keys", ["k1", "k2"]))[0] == 200
    assert (await daemon.chat(headers={"Authorization": "Bearer k2"}))[0] == 200
    assert (await daemon.call("PATCH", "/api-keys", {"old": "k2", "new": "k3"}))[0] == 200
    assert (await daemon.call("PATCH", "/api-keys", {"index": 0, "value": "k0"}))[0] == 200
    assert await daemon.call("GET", "/api-keys") == (200, {"api-keys": ["k0", "k3"]})
    assert (await daemon.chat(headers={"Authorization": "Bearer k2"}))[0] == 401
    assert (await daemon.call("DELETE", "/api-keys?value=k0"))[0] == 200
    assert (await daemon.call("DELETE", "/api-keys?index=0"))[0] == 200
    assert await daemon.call("GET", "/api-keys") == (200, {"api-keys": []})
    assert (await daemon.call("DELETE", "/api-keys?value=nope"))[0] == 404
    assert (await daemon.call("PATCH", "/api-keys", {"index": 9, "value": "x"}))[0] == 400


@pytest_twisted.ensureDeferred
async def test_provider_lists_take_effect_at_once(daemon):
    entry = {"api-key": "sk-ant-1", "base-url": daemon.base, "models": [{"name": "claude-x", "alias": "cx"}]}
    assert (await daemon.call("PUT", "/claude-api-key", {"items": [entry]}))[0] == 200
    assert "cx" in await daemon.models()
    code, body = await daemon.call("PATCH", "/claude-api-key", {"match": "sk-ant-1", "value": {"prefix": "team"}})
    assert code == 200, body
    assert "team/cx" in await daemon.models()
    code, body = await daemon.call("PATCH", "/openai-compatibility",
                                   {"name": "sim", "value": {"models": [{"name": "sim-small", "alias": "small"}]}})
    assert code == 200, body
    assert "small" in await daemon.models() and "gpt-4o-mini" not in await daemon.models()
    code, body = await daemon.call("PUT", "/gemini-api-key", [{"api-key": ""}])
    assert code == 400 and "gemini-api-key[0].api-key" in body["error"]
    assert (await daemon.call("DELETE", "/claude-api-key?api-key=sk-ant-1"))[0] == 200
    assert "cx" not in await daemon.models()
    assert "# the simulated upstream" in daemon.config.read_text()


@pytest_twisted.ensureDeferred
async def test_concurrent_writes_never_lose_one_another(daemon):
    assert (await daemon.call("PUT", "/api-keys", [f"old-{i}" for i in range(10)]))[0] == 200
    calls = [daemon.call("PATCH", "/api-keys", {"index": i, "value": f"new-{i}"}) for i in range(10)]
    calls += [daemon.call("PUT", "/request-retry", {"value": 3}), daemon.call("PUT", "/debug", {"value": True})]
    results = await gatherResults([Deferred.fromCoroutine(c) for c in calls])
    assert all(code == 200 for code, _ in results)
    assert await daemon.call("GET", "/api-keys") == (200, {"api-keys": [f"new-{i}" for i in range(10)]})
    assert await daemon.call("GET", "/request-retry") == (200, {"request-retry": 3})
    assert await daemon.call("GET", "/debug") == (200, {"debug": True})


# -- credentials, cooldowns and usage ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_credential_status_cooldown_reset_and_usage(daemon):
    daemon.upstream.script("sk-up-1", "status:429:60", "ok")
    daemon.upstream.script("sk-up-2", "ok")
    for _ in range(2):
        assert (await daemon.chat())[0] == 200
    code, body = await daemon.call("GET", "/credentials")
    cooling = [c for c in body["credentials"] if c["model_states"].get("gpt-4o-mini", {}).get("cooling")]
    assert len(cooling) == 1
    cred_id = cooling[0]["id"]
    assert (await daemon.call("POST", "/credentials/reset", {"id": "nope"}))[0] == 404
    assert (await daemon.call("POST", "/credentials/reset", {"model": 5}))[0] == 400
    code, body = await daemon.call("POST", "/credentials/reset", {"id": cred_id, "model": "gpt-4o-mini"})
    assert (code, body["reset"]) == (200, ["gpt-4o-mini"])
    code, body = await daemon.call("GET", "/credentials")
    assert not any(c["model_states"].get("gpt-4o-mini", {}).get("cooling") for c in body["credentials"])
    code, body = await daemon.call("GET", "/usage?limit=2")
    usage = body["usage"]
    assert usage["total_requests"] == 3 and usage["failure_count"] == 1 and usage["success_count"] == 2
    assert usage["by_status"] == {"200": 2, "429": 1}
    assert len(usage["recent"]) == 2 and usage["recent"][-1]["ok"] is True
    assert (await daemon.call("GET", "/usage?limit=x"))[0] == 400


# -- auth files ------------------------------------------------------------------------


def claude_file(daemon, token="tok-a", **extra) -> bytes:
    return json.dumps({"type": "claude", "access_token": token, "refresh_token": "r",
                       "expired": "2099-01-01T00:00:00Z", "base_url": daemon.base, "email": "a@x.com",
                       **extra}).encode()


@pytest_twisted.ensureDeferred
async def test_auth_files_upload_list_disable_fields_download_delete(daemon):
    code, body = await daemon.call("POST", "/auth-files?name=claude-a.json", raw=claude_file(daemon))
    assert (code, body) == (200, {"status": "ok", "name": "claude-a.json"})
    path = daemon.auth_dir / "claude-a.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "claude-sonnet-4-5" in await daemon.models()
    code, body = await daemon.call("GET", "/auth-files")
    [entry] = body["files"]
    assert (entry["name"], entry["type"], entry["email"], entry["status"]) == \
        ("claude-a.json", "claude", "a@x.com", "active")
    assert (await daemon.call("PATCH", "/auth-files/status", {"name": "claude-a.json", "disabled": True}))[0] == 200
    assert json.loads(path.read_text())["disabled"] is True
    assert (await daemon.call("GET", "/auth-files"))[1]["files"][0]["status"] == "disabled"
    assert (await daemon.chat("claude-sonnet-4-5"))[0] != 200
    assert (await daemon.call("PATCH", "/auth-files/status", {"name": "claude-a.json", "disabled": False}))[0] == 200
    assert (await daemon.call("PATCH", "/auth-files/fields",
                              {"name": "claude-a.json", "priority": 5, "note": "team a", "prefix": "a"}))[0] == 200
    data = json.loads(path.read_text())
    assert (data["priority"], data["note"], data["prefix"]) == (5, "team a", "a")
    assert "a/claude-sonnet-4-5" in await daemon.models()
    code, raw = await daemon.call("GET", "/auth-files/download?name=claude-a.json")
    assert code == 200 and raw["note"] == "team a"
    assert (await daemon.call("DELETE", "/auth-files?name=claude-a.json"))[0] == 200
    assert not path.exists() and "claude-sonnet-4-5" not in await daemon.models()


@pytest_twisted.ensureDeferred
async def test_bad_auth_file_requests_are_400_or_404(daemon):
    for name in ("../x.json", "x.txt", ".hidden.json"):
        code, _ = await daemon.call("POST", f"/auth-files?name={name}", raw=claude_file(daemon))
        assert code == 400, name
    code, body = await daemon.call("POST", "/auth-files?name=a.json", raw=b"{nope")
    assert code == 400 and "not JSON" in body["error"]
    code, body = await daemon.call("POST", "/auth-files?name=a.json", raw=b'{"type": "qwen", "access_token": "t"}')
    assert code == 400 and "type must be one of" in body["error"]
    assert (await daemon.call("GET", "/auth-files/download?name=none.json"))[0] == 404
    assert (await daemon.call("PATCH", "/auth-files/status", {"name": "none.json", "disabled": True}))[0] == 404
    assert (await daemon.call("PATCH", "/auth-files/status", {"name": "a.json"}))[0] == 400
    assert (await daemon.call("DELETE", "/auth-files"))[0] == 400
    (daemon.auth_dir / "broken.json").write_text("{nope")
    await daemon.call("POST", "/auth-files?name=b.json", raw=claude_file(daemon))
    files = {f["name"]: f for f in (await daemon.call("GET", "/auth-files"))[1]["files"]}
    assert files["broken.json"]["status"] == "error" and "not JSON" in files["broken.json"]["status_message"]


# -- refresh, end to end -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_expired_token_is_refreshed_in_the_background_and_written_back(daemon, auth_server):
    server = auth_server("claude")
    refresh = server.sim.issue_refresh_token("a@x.com")
    path = daemon.auth_dir / "claude-a.json"
    path.write_bytes(claude_file(daemon, token="expired-token", refresh_token=refresh,
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
    path.write_bytes(claude_file(daemon, token="revoked-token", refresh_token=refresh,
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
