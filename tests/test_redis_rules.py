"""
The shared store's rules without a server: the merge rule of each kind,
the config key, and (on a Clock, with connections that fail or never
answer) that Redis down never holds a request, is logged once and is
retried with back-off. And the seam: a kind registered once is replicated.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from cliproxyd.config import ConfigError, parse_config
from cliproxyd.config.load import parse_redis_url
from cliproxyd.state.records import GroupState, ModelState
from cliproxyd.state.redisstore import (
    BACKOFF_MAX,
    SEP,
    VALUES,
    RedisStateStore,
    Replicated,
    longer_or_newer,
)
from tests.redis_support import connector, until

NOW = 1_000_000.0


def kind(name: str) -> Replicated:
    return next(k for k in VALUES if k.name == name)


def cool(until_: float, updated: float = NOW) -> ModelState:
    return ModelState(unavailable=True, next_retry_at=until_, backoff_level=1, updated_at=updated)


# -- merge rules ----------------------------------------------------------------------------


def test_two_live_cooldowns_keep_the_longer_whichever_is_newer():
    merge = kind("model_states").merge
    long_old, short_new = cool(NOW + 7200, updated=NOW - 5), cool(NOW + 60, updated=NOW)
    assert merge(long_old, short_new, NOW) is long_old
    assert merge(short_new, long_old, NOW) is long_old


def test_otherwise_the_newer_write_wins_and_a_clear_is_a_write():
    merge = kind("model_states").merge
    ended = cool(NOW - 10, updated=NOW - 100)
    cleared = ModelState(updated_at=NOW)
    assert merge(ended, cleared, NOW) is cleared
    assert merge(cleared, ended, NOW) is cleared
    # one side absent: the other is kept
    assert merge(None, ended, NOW) is ended and merge(ended, None, NOW) is ended


def test_quota_group_suspensions_merge_the_same_way():
    merge = kind("group_states").merge
    long = GroupState(auto_until=NOW + 600, updated_at=NOW - 1)
    short = GroupState(auto_until=NOW + 60, updated_at=NOW)
    assert merge(short, long, NOW) is long
    manual = GroupState(manual=True, manual_reason="ops", updated_at=NOW + 1)
    assert merge(long, manual, NOW) is manual  # not both automatic and live: the newer


def test_affinity_keeps_the_later_binding_and_does_not_resend_small_extensions():
    k = kind("affinity")
    assert k.merge(("c1", NOW + 10), ("c2", NOW + 20), NOW) == ("c2", NOW + 20)
    assert k.quiet(["c1", NOW], ["c1", NOW + 5]) is True  # a per-request extension: not sent
    assert k.quiet(["c1", NOW], ["c1", NOW + 31]) is False
    assert k.quiet(["c1", NOW], ["c2", NOW + 1]) is False  # another credential: sent


def test_longer_or_newer_is_generic_over_the_until_attribute():
    from attrs import frozen

    @frozen
    class Window:
        until: float | None
        updated_at: float | None

    merge = longer_or_newer("until")
    a, b = Window(NOW + 5, NOW), Window(NOW + 50, NOW - 9)
    assert merge(a, b, NOW) is b


# -- the config key ---------------------------------------------------------------------


def test_state_store_is_parsed_and_checked():
    assert parse_config({})[0].state_store is None
    assert parse_config({"state-store": ""})[0].state_store is None
    assert parse_config({"state-store": "redis://10.0.0.5:6380/2"})[0].state_store == "redis://10.0.0.5:6380/2"
    where = parse_redis_url("rediss://:s3cr%40t@cache.internal/3")
    assert (where.host, where.port, where.db, where.password, where.tls) == ("cache.internal", 6379, 3, "s3cr@t", True)
    assert "s3cr" not in where.shown and "s3cr" not in repr(where)
    assert parse_redis_url("redis://u:p@h:1").username == "u"
    for bad, says in [("http://h:1/0", "redis:// or rediss://"), ("redis://h:1/x", "must be a number"),
                      ("redis://:p@/0", "names no host"), ("redis://h:99999/0", "bad host or port")]:
        with pytest.raises(ConfigError) as e:
            parse_config({"state-store": bad})
        assert "state-store" in str(e.value) and says in str(e.value)
        assert ":p@" not in str(e.value)


# -- Redis down, on a Clock -------------------------------------------------------------------


class Refused:
    """A connect that fails at once, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, subscriber, on_message):
        self.calls += 1
        return fail(ConnectionRefusedError("connection refused"))


def test_redis_down_never_holds_a_request_logs_once_and_backs_off():
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        clock = Clock()
        clock.advance(NOW)
        connect = Refused()
        store = RedisStateStore(clock, connect)
        store.service.startService()
        assert connect.calls == 1 and not store.connected
        # the request path answers from memory at once, and remembers what to send
        store.set_model_state("c1", "m", cool(NOW + 100))
        store.record("c1", "m", NOW, 200)
        assert store.model_state("c1", "m").blocked(NOW) and store.stats("c1").requests == 1
        assert store.pending_writes == 5  # one value; requests and successes, per credential and per model
        attempts_at = [0.0]
        for _ in range(200):
            clock.advance(1)
            if connect.calls > len(attempts_at):
                attempts_at.append(clock.seconds() - NOW)
        gaps = [b - a for a, b in zip(attempts_at, attempts_at[1:])]
        assert gaps[:5] == [1, 2, 4, 8, 16] and set(gaps[5:]) == {BACKOFF_MAX}
        downs = [e for e in events if "is unavailable" in str(e.get("log_format", ""))]
        assert len(downs) == 1
        assert store.describe() == {"kind": "redis", "url": "redis", "connected": False,
                                    "last_error": "connection refused", "pending_writes": 5,
                                    "reconnects": 0, "instance": store.instance}
        store.service.stopService()
    finally:
        globalLogPublisher.removeObserver(events.append)


def test_a_connection_that_never_answers_holds_nothing_either():
    clock = Clock()
    hanging: list[Deferred] = []

    def connect(subscriber, on_message):
        d: Deferred = Deferred()
        hanging.append(d)
        return d

    store = RedisStateStore(clock, connect)
    store.service.startService()
    for i in range(1000):
        store.bind_session((f"s{i}",), "c1", NOW + 60)
    assert store.session("s5", NOW) == "c1" and store.pending_writes == 1000
    assert len(hanging) == 1  # one attempt in flight, not one per change
    store.service.stopService()


# -- the seam: a kind registered once is replicated ------------------------------------------


class WithProbes(RedisStateStore):
    """A store with one more kind of state, as issue 16's probe reservations would add."""

    def __init__(self, *args, **kw) -> None:
        self._probes: dict[str, dict[str, float]] = {}
        super().__init__(*args, values=[*VALUES, PROBES], **kw)

    def reserve_probe(self, cred: str, model: str, until: float) -> None:
        self._probes.setdefault(cred, {})[model] = until


def _probe_put(store, name, value):
    cred, _, model = name.partition(SEP)
    if value is None:
        store._probes.get(cred, {}).pop(model, None)
    else:
        store._probes.setdefault(cred, {})[model] = value


PROBES = Replicated(
    "probes",
    fields=lambda s: [f"{c}{SEP}{m}" for c, ms in s._probes.items() for m in ms],
    get=lambda s, name: s._probes.get(name.partition(SEP)[0], {}).get(name.partition(SEP)[2]),
    put=_probe_put,
    to_json=float,
    from_json=float,
    merge=lambda local, remote, now: max(x for x in (local, remote) if x is not None),
    keep=lambda until, now: until > now,
    watch={"reserve_probe": lambda cred, model, until: (f"{cred}{SEP}{model}",)},
)


@pytest_twisted.ensureDeferred
async def test_a_kind_registered_once_is_replicated(reactor, redis_server):
    a, b = (WithProbes(reactor, connector(reactor, redis_server)) for _ in range(2))
    for s in (a, b):
        s.service.startService()
    try:
        await until(reactor, lambda: a.connected and b.connected)
        a.reserve_probe("c1", "m", reactor.seconds() + 300)
        await until(reactor, lambda: "c1" in b._probes)
        assert b._probes["c1"]["m"] == a._probes["c1"]["m"]
    finally:
        for s in (a, b):
            await s.service.stopService()
