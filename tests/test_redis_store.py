"""
The StateStore shared through Redis (issue 17), against a real
redis-server: changes reach the other instances within a second, a full
load at start, Redis killed and restarted with nothing lost or counted
twice, and one token refresh per expiry across instances.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from cliproxyd.state.records import GroupState, ModelState
from cliproxyd.state.redisstore import RedisStateStore
from tests.redis_support import connector, settled, until


def make_store(reactor, server, **kw) -> RedisStateStore:
    store = RedisStateStore(reactor, connector(reactor, server), **kw)
    return store


class Stores:
    """Instances on one Redis, started and stopped together."""

    def __init__(self, reactor, server, n: int) -> None:
        self.reactor = reactor
        self.server = server
        self.all = [make_store(reactor, server) for _ in range(n)]

    async def start(self) -> None:
        for s in self.all:
            s.service.startService()
        await until(self.reactor, lambda: all(s.connected for s in self.all))

    async def stop(self) -> None:
        for s in self.all:
            await s.service.stopService()

    async def settled(self) -> None:
        """Every change sent and delivered (L{tests.redis_support.settled})."""
        await settled(self.reactor, self.server, self.all)


def cooldown(now: float, until_: float, status: int = 429) -> ModelState:
    return ModelState(unavailable=True, next_retry_at=until_, backoff_level=1, quota_exceeded=True,
                      reason="quota", last_status=status, updated_at=now)


@pytest_twisted.ensureDeferred
async def test_a_cooldown_set_on_one_instance_is_honoured_by_another_within_a_second(reactor, redis_server):
    stores = Stores(reactor, redis_server, 2)
    a, b = stores.all
    await stores.start()
    try:
        now = reactor.seconds()
        a.set_model_state("cred-1", "gpt-4o", cooldown(now, now + 7200))
        took = await until(reactor, lambda: b.model_state("cred-1", "gpt-4o").blocked(reactor.seconds()))
        assert took < 1.0
        assert b.model_state("cred-1", "gpt-4o").next_retry_at == now + 7200
        # and in Redis, for instances that start later
        stored = json.loads(redis_server.command("HGET", "{cliproxyd}:model_states", "cred-1\x1fgpt-4o"))
        assert stored["next_retry_at"] == now + 7200
        # a success clearing it travels the same way
        b.set_model_state("cred-1", "gpt-4o", ModelState())
        await until(reactor, lambda: not a.model_state("cred-1", "gpt-4o").unavailable)
        assert a.model_states("cred-1") == {}
    finally:
        await stores.stop()


@pytest_twisted.ensureDeferred
async def test_suspensions_and_session_bindings_are_shared_and_loaded_at_start(reactor, redis_server):
    stores = Stores(reactor, redis_server, 1)
    (a,) = stores.all
    await stores.start()
    now = reactor.seconds()
    try:
        a.set_group_state("cred-1", "claude-45", GroupState(auto_until=now + 600, auto_reason="429", updated_at=now))
        a.bind_session(("route|sess-1",), "cred-2", now + 3600)
        await stores.settled()
        # an instance started afterwards loads all of it
        late = Stores(reactor, redis_server, 1)
        await late.start()
        (c,) = late.all
        assert c.group_state("cred-1", "claude-45").auto_active(now + 1)
        assert c.session("route|sess-1", now + 1) == "cred-2"
        # an unbinding travels too
        c.unbind_session(("route|sess-1",), "cred-2")
        await until(reactor, lambda: a.session("route|sess-1", reactor.seconds()) is None)
        await late.stop()
    finally:
        await stores.stop()


@pytest_twisted.ensureDeferred
async def test_counters_are_added_up_across_instances_once(reactor, redis_server):
    stores = Stores(reactor, redis_server, 3)
    await stores.start()
    try:
        now = reactor.seconds()
        for i, s in enumerate(stores.all):
            for _ in range(i + 1):
                s.record("cred-1", "gpt-4o", now, 200)
            s.record("cred-1", "gpt-4o", now, 429, "quota")
        await stores.settled()
        # 1 + 2 + 3 successes and 3 failures, seen the same everywhere
        await until(reactor, lambda: all(s.stats("cred-1").requests == 9 for s in stores.all))
        for s in stores.all:
            assert (s.stats("cred-1").successes, s.stats("cred-1").failures) == (6, 3)
            assert s.usage()["gpt-4o"].requests == 9
        assert redis_server.command("HGET", "{cliproxyd}:stats", "cred-1\x1frequests") == "9"
    finally:
        await stores.stop()


@pytest_twisted.ensureDeferred
async def test_redis_down_keeps_serving_logs_once_and_reconciles_when_it_returns(reactor, redis_server):
    from twisted.logger import globalLogPublisher

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    stores = Stores(reactor, redis_server, 2)
    a, b = stores.all
    await stores.start()
    try:
        now = reactor.seconds()
        a.record("cred-1", "m", now, 200)
        b.set_model_state("cred-2", "m", cooldown(now, now + 100))
        await stores.settled()
        await until(reactor, lambda: a.stats("cred-1").requests == 1 and b.stats("cred-1").requests == 1)

        redis_server.stop()
        await until(reactor, lambda: not a.connected and not b.connected)
        # the local view goes on: every call answers at once, changes are buffered
        for _ in range(50):
            a.record("cred-1", "m", reactor.seconds(), 200)
        b.record("cred-1", "m", reactor.seconds(), 500, "boom")
        a.set_model_state("cred-2", "m", cooldown(now, now + 300))  # longer than b's: it wins
        b.set_model_state("cred-3", "m", cooldown(now, now + 50))
        assert a.stats("cred-1").requests == 51 and a.pending_writes > 0
        assert a.describe()["connected"] is False and a.describe()["last_error"]

        redis_server.start()  # on the same port, empty
        await until(reactor, lambda: a.connected and b.connected, timeout=10)
        await stores.settled()
        await until(reactor, lambda: a.stats("cred-1").requests == 52 and b.stats("cred-1").requests == 52)
        assert a.stats("cred-1").failures == b.stats("cred-1").failures == 1
        assert redis_server.command("HGET", "{cliproxyd}:stats", "cred-1\x1frequests") == "52"
        # cooldowns: the longer one wins, on both and in Redis (waited for, bounded, with
        # what each instance holds in the message when they do not agree)
        def ends():
            return [(s.model_state("cred-2", "m").next_retry_at, s.model_state("cred-3", "m").next_retry_at)
                    for s in (a, b)]

        try:
            await until(reactor, lambda: ends() == [(now + 300, now + 50)] * 2)
        except AssertionError:
            raise AssertionError(f"cooldown ends {ends()}, wanted {[(now + 300, now + 50)] * 2}") from None
        stored = json.loads(redis_server.command("HGET", "{cliproxyd}:model_states", "cred-2\x1fm"))
        assert stored["next_retry_at"] == now + 300
        downs = [e for e in events if "is unavailable" in str(e.get("log_format", ""))]
        assert len(downs) == 2  # once per instance, not per call or per retry
    finally:
        globalLogPublisher.removeObserver(events.append)
        await stores.stop()


@pytest_twisted.ensureDeferred
async def test_the_refresh_lock_is_taken_once_and_released_only_by_its_holder(reactor, redis_server):
    stores = Stores(reactor, redis_server, 2)
    a, b = stores.all
    await stores.start()
    try:
        lease = await a.acquire("acct.json", 30)
        assert lease
        assert await b.acquire("acct.json", 30) == ""
        await b.release("acct.json", "not-the-token")
        assert await b.acquire("acct.json", 30) == ""
        await a.release("acct.json", lease)
        assert await b.acquire("acct.json", 30)
        got: list = []
        a.on_tokens(lambda name, tokens: got.append((name, tokens)))
        await b.publish_tokens("acct.json", {"access_token": "x", "last_refresh": 1.0})
        await until(reactor, lambda: bool(got))
        assert got == [("acct.json", {"access_token": "x", "last_refresh": 1.0})]
        assert (await a.latest_tokens("acct.json"))["access_token"] == "x"
    finally:
        await stores.stop()


def test_unreachable_redis_answers_the_lock_with_none():
    from twisted.internet.task import Clock

    store = RedisStateStore(Clock(), lambda sub, on: Deferred())
    d = store.acquire("acct.json", 30)
    assert d.result is None


@pytest_twisted.ensureDeferred
async def test_a_flush_sent_twice_under_one_batch_id_counts_once_and_a_stale_write_is_a_conflict(
        reactor, redis_server):
    import json as _json

    from cliproxyd.state.redisstore import FLUSH_SCRIPT

    conn = await connector(reactor, redis_server)(False, None)
    try:
        payload = _json.dumps({"ops": [["model_states", "{t}:model_states", "c\x1fm", '{"a": 1}', ""]],
                               "incr": [["{t}:usage", "m\x1frequests", 3]], "msg_incr": [["usage", "m\x1frequests", 3]]})
        first = await conn.eval(FLUSH_SCRIPT, ["{t}:batch:one", "{t}:changes"], [payload, "me", "60"])
        again = await conn.eval(FLUSH_SCRIPT, ["{t}:batch:one", "{t}:changes"], [payload, "me", "60"])
        assert _json.loads(first) in ({}, []) and again == "dup"
        assert redis_server.command("HGET", "{t}:usage", "m\x1frequests") == "3"
        # the same write under a new id expects the field absent: it is there now, so a conflict
        third = await conn.eval(FLUSH_SCRIPT, ["{t}:batch:two", "{t}:changes"], [payload, "me", "60"])
        assert _json.loads(third) == [["model_states", "c\x1fm", '{"a": 1}']]
        assert redis_server.command("HGET", "{t}:usage", "m\x1frequests") == "6"  # deltas always apply
    finally:
        conn.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_an_instance_started_while_redis_is_down_serves_and_joins_when_it_comes_up(reactor, tmp_path):
    from tests.redis_support import REDIS_SERVER, RedisServer

    if not __import__("os").path.exists(REDIS_SERVER):
        pytest.skip(f"{REDIS_SERVER} is not installed")
    (tmp_path / "r").mkdir()
    server = RedisServer(str(tmp_path / "r"))  # its port chosen, nothing listening yet
    store = make_store(reactor, server)
    store.service.startService()
    try:
        await until(reactor, lambda: store.last_error != "")
        assert not store.connected
        store.record("cred-1", "m", reactor.seconds(), 200)  # served from memory
        server.start()
        await until(reactor, lambda: store.connected, timeout=10)
        await until(reactor, lambda: store.pending_writes == 0)
        assert server.command("HGET", "{cliproxyd}:stats", "cred-1\x1frequests") == "1"
        assert store.describe()["last_error"] == ""
    finally:
        await store.service.stopService()
        server.stop()
