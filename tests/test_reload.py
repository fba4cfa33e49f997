"""
Hot reload on loopback: the auth directory and config.yaml change under a
running frontend; new, edited and removed files and config edits apply
without a restart, a bad config is rejected with its reason while the
running one stays, and a request in flight finishes on the generation it
started on. File reads run synchronously here and the poll is driven by
hand (or by a Clock), so nothing waits on the wall clock but the sockets.
"""

from __future__ import annotations

import json
import os
import signal

import pytest_twisted
import treq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from cliproxyd.assembly import Assembly
from cliproxyd.frontend import Frontend, InFlight, QuietSite, TrackingSite
from cliproxyd.outbound import make_http_client
from cliproxyd.runtime import Runtime
from cliproxyd.state import MemoryStateStore
from cliproxyd.testing.upstream import SimulatedUpstream


def sync(f, *args):
    return succeed(f(*args))


class Live:
    """A frontend whose runtime watches a config file and an auth directory in tmp_path."""

    def __init__(self, reactor, tmp_path, config: dict, sim_clock=None) -> None:
        self.reactor = reactor
        self.tmp = tmp_path
        self.auth_dir = tmp_path / "auth"
        self.auth_dir.mkdir()
        self.upstream = SimulatedUpstream(sim_clock or reactor)
        self.upstream_port = reactor.listenTCP(0, QuietSite(self.upstream.resource()), interface="127.0.0.1")
        self.base = f"http://127.0.0.1:{self.upstream_port.getHost().port}"
        self.config_path = tmp_path / "config.yaml"
        self.write_config(config)
        self.pool, client = make_http_client(reactor, 5)
        self.runtime = Runtime(Assembly(client, reactor, MemoryStateStore()), config_path=str(self.config_path),
                               poll=0, run_in_thread=sync)
        self.runtime.start()
        self.frontend = Frontend(self.runtime.source, reactor)
        site = TrackingSite(self.frontend.resource(), InFlight(reactor, 5), self.runtime.source)
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    def write_config(self, data: dict | str) -> None:
        text = data if isinstance(data, str) else json.dumps({"auth-dir": str(self.tmp / "auth"), **data})
        self.config_path.write_text(text)

    def account(self, name: str, **fields) -> None:
        data = {"type": "claude", "access_token": f"tok-{name}", "refresh_token": "r",
                "base_url": self.base, "expired": "2099-01-01T00:00:00Z", **fields}
        (self.auth_dir / name).write_text(json.dumps(data))

    async def chat(self, model: str, key: str | None = None, stream: bool = False):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
        response = await treq.post(self.url + "/v1/chat/completions", json=body, headers=headers)
        return response.code, await response.content()

    async def models(self) -> set[str]:
        response = await treq.get(self.url + "/v1/models")
        return {m["id"] for m in (await response.json())["data"]}

    async def close(self) -> None:
        await self.port.stopListening()
        await self.upstream_port.stopListening()
        await self.pool.closeCachedConnections()


@pytest_twisted.async_yield_fixture
async def live(tmp_path):
    from twisted.internet import reactor

    s = Live(reactor, tmp_path, {})
    yield s
    await s.close()


@pytest_twisted.ensureDeferred
async def test_a_new_auth_file_is_served_after_the_next_look(live):
    assert await live.models() == set()
    live.account("claude-a.json")
    assert await live.runtime._check() is True
    assert "claude-sonnet-4-5" in await live.models()
    code, _ = await live.chat("claude-sonnet-4-5")
    assert code == 200
    assert live.upstream.seen[-1].headers["authorization"] == "Bearer tok-claude-a.json"


@pytest_twisted.ensureDeferred
async def test_an_unchanged_directory_does_not_rebuild(live):
    live.account("claude-a.json")
    await live.runtime._check()
    conductor = live.frontend.served().conductor
    assert await live.runtime._check() is None
    assert live.frontend.served().conductor is conductor


@pytest_twisted.ensureDeferred
async def test_edited_and_removed_files_apply(live):
    live.account("claude-a.json")
    await live.runtime._check()
    live.account("claude-a.json", disabled=True, note="x")
    await live.runtime.reload()
    code, body = await live.chat("claude-sonnet-4-5")
    assert code != 200
    live.account("claude-a.json", prefix="team")
    await live.runtime.reload()
    assert "team/claude-sonnet-4-5" in await live.models()
    os.unlink(live.auth_dir / "claude-a.json")
    await live.runtime.reload()
    assert await live.models() == set()


@pytest_twisted.ensureDeferred
async def test_a_broken_file_is_reported_and_a_good_one_that_breaks_keeps_its_last_good_version(live):
    (live.auth_dir / "junk.json").write_text("{nope")
    live.account("claude-a.json")
    await live.runtime.reload()
    gen = live.runtime.current
    assert "not JSON" in gen.problems["junk.json"]
    assert [c.id for c in gen.creds] == ["claude:claude-a.json"]
    (live.auth_dir / "claude-a.json").write_text('{"type": "claude", "access_tok')  # half written
    await live.runtime.reload()
    assert [c.id for c in live.runtime.current.creds] == ["claude:claude-a.json"]
    assert "not JSON" in live.runtime.current.problems["claude-a.json"]
    code, _ = await live.chat("claude-sonnet-4-5")
    assert code == 200


@pytest_twisted.ensureDeferred
async def test_a_config_edit_applies_and_a_bad_one_is_rejected_keeping_the_running_one(live):
    live.account("claude-a.json")
    live.write_config({"api-keys": ["sk-client"]})
    assert await live.runtime.reload("test") is True
    assert (await live.chat("claude-sonnet-4-5"))[0] == 401
    assert (await live.chat("claude-sonnet-4-5", key="sk-client"))[0] == 200
    live.write_config({"api-keys": ["sk-client"], "routing": {"strategy": "sideways"}})
    assert await live.runtime.reload("test") is False
    assert "routing.strategy" in live.runtime.last_error and live.runtime.reloads["rejected"] == 1
    assert (await live.chat("claude-sonnet-4-5", key="sk-client"))[0] == 200
    live.write_config("api-keys: [unclosed")
    await live.runtime.reload("test")
    assert "YAML syntax error: line 1" in live.runtime.last_error
    assert (await live.chat("claude-sonnet-4-5", key="sk-client"))[0] == 200


@pytest_twisted.ensureDeferred
async def test_a_request_in_flight_finishes_on_the_generation_it_started_on(tmp_path):
    from twisted.internet import reactor

    sim_clock = Clock()
    live = Live(reactor, tmp_path, {}, sim_clock=sim_clock)
    try:
        live.account("claude-a.json")
        await live.runtime.reload()
        live.upstream.script("tok-claude-a.json", "slow:5")
        pending = Deferred.fromCoroutine(live.chat("claude-sonnet-4-5", stream=True))
        while not live.upstream.seen:
            await treq.get(live.url + "/healthz")  # let the request reach the upstream
        os.unlink(live.auth_dir / "claude-a.json")
        await live.runtime.reload()
        assert await live.models() == set()
        for _ in range(20):
            sim_clock.advance(5)
            await treq.get(live.url + "/healthz")
            if pending.called:
                break
        code, body = await pending
        assert code == 200 and body.rstrip().endswith(b"data: [DONE]")
    finally:
        await live.close()


def test_the_poll_reloads_when_a_file_changes_and_sighup_asks_for_a_reload(tmp_path):
    config = tmp_path / "config.yaml"
    auth = tmp_path / "auth"
    auth.mkdir()
    config.write_text(json.dumps({"auth-dir": str(auth)}))

    class Reactor(Clock):
        def callFromThread(self, f, *args):
            f(*args)

    reactor = Reactor()
    runtime = Runtime(Assembly(None, reactor, MemoryStateStore()), config_path=str(config), poll=2.0,
                      run_in_thread=sync)
    assert [s.name for s in runtime] == ["reload-poll"]
    previous = signal.getsignal(signal.SIGHUP)
    runtime.startService()
    try:
        first = runtime.current
        reactor.advance(2)
        assert runtime.current is first  # nothing changed: the same generation
        (auth / "a.json").write_text(json.dumps({"type": "codex", "access_token": "t"}))
        reactor.advance(2)
        assert runtime.current is not first and [c.id for c in runtime.current.creds] == ["codex:a.json"]
        config.write_text(json.dumps({"auth-dir": str(auth), "api-keys": ["k"]}))
        signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
        assert runtime.current.config.api_keys == ("k",)
    finally:
        runtime.stopService()
        signal.signal(signal.SIGHUP, previous)
    assert reactor.getDelayedCalls() == []


def file_runtime(config, run_in_thread=sync, **kw) -> Runtime:
    """A started runtime over the config file C{config}, with no poll."""
    runtime = Runtime(Assembly(None, Clock(), MemoryStateStore()), config_path=str(config), poll=0,
                      run_in_thread=run_in_thread, **kw)
    runtime.start()
    return runtime


def queued_runtime(config) -> tuple[Runtime, list[Deferred]]:
    """A runtime whose thread jobs wait in C{pending} until a test fires them, one by one."""
    pending: list[Deferred] = []

    def deferred(f, *args):
        d = Deferred()
        pending.append(d)
        d.addCallback(lambda _: f(*args))
        return d

    return file_runtime(config, deferred), pending


def test_reloads_asked_for_during_a_reload_run_after_it(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("{}")
    runtime, pending = queued_runtime(config)
    config.write_text(json.dumps({"api-keys": ["first"]}))
    first = runtime.reload()
    pending.pop(0).callback(None)  # the first reload has read the file...
    config.write_text(json.dumps({"api-keys": ["k"]}))
    second = runtime.reload()  # ...when it changes again
    assert not first.called and not second.called
    while pending:
        pending.pop(0).callback(None)
    assert second.called and runtime.current.config.api_keys == ("k",)


def test_a_reload_asked_for_during_another_fires_only_once_its_change_is_in_effect(tmp_path):
    """A management write that lands while a poll reload runs must not be answered before it applies."""
    config = tmp_path / "config.yaml"
    config.write_text("{}")
    runtime, pending = queued_runtime(config)
    auth = tmp_path / "auth"
    auth.mkdir()
    config.write_text(json.dumps({"auth-dir": str(auth)}))  # a new auth-dir: the reload reads it too
    first = runtime.reload("poll")
    pending.pop(0).callback(None)  # the poll's reload has read the signature...
    pending.pop(0).callback(None)  # ...and config.yaml, and is reading the new auth-dir
    config.write_text(json.dumps({"auth-dir": str(auth), "api-keys": ["written"]}))
    write = runtime.reload("management API")
    pending.pop(0).callback(None)
    assert first.called and runtime.current.config.api_keys == ()  # it had read the file before the write
    assert not write.called  # so the write is not answered yet
    while pending:
        pending.pop(0).callback(None)
    assert write.called and write.result is True
    assert runtime.current.config.api_keys == ("written",)


def test_a_change_made_while_a_reload_reads_is_seen_by_the_next_poll(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("{}")
    writes = iter([json.dumps({"api-keys": ["during"]})])

    def thread(f, *args):
        result = f(*args)
        if f.__name__ == "_read":
            config.write_text(next(writes, config.read_text()))  # changed right after the read
            os.utime(config, ns=(1, 1))
        return succeed(result)

    runtime = file_runtime(config, thread)
    config.write_text(json.dumps({"api-keys": ["first"]}))
    runtime.reload("test")
    assert runtime.current.config.api_keys == ("first",)
    runtime._check()  # the poll: the file is not what the last reload read
    assert runtime.current.config.api_keys == ("during",)


def test_a_reload_may_not_remove_the_last_client_key_of_a_public_listener(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"api-keys": ["k"]}))
    runtime = file_runtime(config, require_client_keys=True)
    config.write_text(json.dumps({"api-keys": []}))
    assert runtime.reload("test").result is False
    assert runtime.current.config.api_keys == ("k",)
    assert "api-keys: is empty, but the daemon listens beyond loopback" in runtime.last_error
    assert runtime.reloads["rejected"] == 1
    # client-keys guard a public listener as api-keys do
    config.write_text(json.dumps({"client-keys": [{"name": "n", "key": "ck"}]}))
    assert runtime.reload("test").result is True
    assert runtime.current.config.api_keys == ()


def test_restart_only_settings_say_so_when_a_reload_changes_them(tmp_path):
    from twisted.logger import capturedLogs

    config = tmp_path / "config.yaml"
    config.write_text("{}")
    runtime = file_runtime(config)
    config.write_text(json.dumps({"port": 9000, "timeouts": {"connect-seconds": 3, "shutdown-seconds": 4,
                                                             "client-idle-seconds": 5}}))
    with capturedLogs() as events:
        runtime.reload("test")
    said = sorted(e["label"] for e in events if "label" in e)
    assert said == ["port", "timeouts.client-idle-seconds", "timeouts.connect-seconds",
                    "timeouts.shutdown-seconds"]


def test_host_port_and_tls_changed_by_a_reload_wait_for_a_restart_until_changed_back(tmp_path):
    from twisted.logger import capturedLogs

    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"host": "127.0.0.1", "port": 8317, "api-keys": ["k"]}))
    runtime = file_runtime(config)
    assert runtime.restart_needed == []
    config.write_text(json.dumps({"host": "0.0.0.0", "port": 9000, "api-keys": ["k", "k2"],
                                  "tls": {"enable": True, "cert": "/c.pem", "key": "/k.pem"}}))
    with capturedLogs() as events:
        assert runtime.reload("test").result is True
    # the rest of the config applies; the listener's settings are said once each and wait
    assert runtime.current.config.api_keys == ("k", "k2")
    lines = [e for e in events if "label" in e]
    assert sorted(e["label"] for e in lines) == ["host", "port", "tls"]
    assert all("next restart" in e["log_format"] for e in lines)
    assert runtime.restart_needed == ["host", "port", "tls"]
    config.write_text(json.dumps({"host": "127.0.0.1", "port": 8317, "api-keys": ["k"]}))
    runtime.reload("test")
    assert runtime.restart_needed == []


def test_with_the_listen_option_host_port_and_tls_changes_need_nothing(tmp_path):
    from twisted.logger import capturedLogs

    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"port": 8317, "state-file": str(tmp_path / "a.json")}))
    runtime = file_runtime(config, listen_fixed=True)
    config.write_text(json.dumps({"host": "0.0.0.0", "port": 9000, "state-file": str(tmp_path / "b.json"),
                                  "tls": {"enable": True, "cert": "/c.pem", "key": "/k.pem"}}))
    with capturedLogs() as events:
        runtime.reload("test")
    assert [e["label"] for e in events if "label" in e] == ["state-file"]
    assert runtime.restart_needed == ["state-file"]
