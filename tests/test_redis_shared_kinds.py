"""
Issue 17 with the issue 16 kinds: every shared kind of state through the
Redis seam, against a real redis-server. Three whole daemons (L{build_daemon}
on in-memory HTTP, a Clock each) share one Redis: a credential at its rpm on
one instance is skipped on the others; a client key's quota used on one
counts on the others; a probe never runs twice at once cluster-wide; Redis
killed and restarted counts nothing twice and loses nothing. Then the merge
rules of the values (headroom, pace, probe records) and the bucket fields'
expiry.
"""

from __future__ import annotations

import json
import random

import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.defer import gatherResults
from twisted.internet.task import Clock

from cliproxyd.conductor.keylimits import KeyMeter
from cliproxyd.conductor.pacing import count_request, count_tokens
from cliproxyd.conductor.probes import STALE_RESERVATION, ResetProber
from cliproxyd.config import parse_config
from cliproxyd.config.model import ClientKey
from cliproxyd.daemon import build_daemon
from cliproxyd.state.records import Headroom, ModelState, Pace, ProbeState
from cliproxyd.state.redisstore import RedisStateStore
from cliproxyd.state.sharedkinds import latest_probe, newest_reading, stronger_pace
from cliproxyd.testing.upstream import SimulatedUpstream
from tests.conftest import Harness, _now, config_data
from tests.redis_support import connector, settled, until

SEP = "\x1f"


class Instance(Harness):
    """A whole daemon on in-memory HTTP and a Clock, its StateStore in the given Redis."""

    def __init__(self, reactor, data: dict, upstream=None) -> None:
        self.config, self.warnings = parse_config(data)
        self.clock = Clock()
        self.upstream = upstream if upstream is not None else SimulatedUpstream(self.clock)
        self.up = StubTreq(self.upstream.resource())
        self.daemon = build_daemon(self.clock, self.up, config=self.config, poll=0, run_in_thread=_now,
                                   state_store=self.config.state_store, state_reactor=reactor)
        self.state, self.usage, self.runtime = self.daemon.state, self.daemon.usage, self.daemon.runtime
        self.management = self.daemon.management
        self.runtime.start()
        self.front = StubTreq(self.daemon.resource())
        self.state.service.startService()


async def cluster(reactor, data: dict, n: int = 3) -> list[Instance]:
    first = Instance(reactor, data)
    out = [first] + [Instance(reactor, data, upstream=first.upstream) for _ in range(n - 1)]
    await until(reactor, lambda: all(i.state.connected for i in out))
    return out


def clock_at(t: float) -> Clock:
    clock = Clock()
    clock.advance(t)
    return clock


async def started(reactor, server, clock, n: int) -> list[RedisStateStore]:
    """C{n} stores on C{server} (their records on C{clock}, their connections on the reactor), connected."""
    stores = [RedisStateStore(clock, connector(reactor, server), timers=reactor) for _ in range(n)]
    for s in stores:
        s.service.startService()
    await until(reactor, lambda: all(s.connected for s in stores))
    return stores


async def stopped(stores) -> None:
    for s in stores:
        await s.service.stopService()


async def stop(instances) -> None:
    for i in instances:
        await i.state.service.stopService()


def keys_seen(instance) -> list[str]:
    out = [s.key for s in instance.upstream.seen]
    instance.upstream.seen.clear()
    return out


# -- a credential's local limits ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_credential_at_its_rpm_on_one_instance_is_skipped_on_the_others(reactor, redis_server):
    data = config_data(routing={"strategy": "fill-first"}, **{"state-store": redis_server.url})
    data["openai-compatibility"][0]["api-key-entries"] = [{"api-key": "sk-up-1", "rpm": 2},
                                                         {"api-key": "sk-up-2"}]
    a, b, c = three = await cluster(reactor, data)
    try:
        # sk-up-1 is first in line: one request on A and one on B use its rpm up
        for inst in (a, b):
            code, _, body = inst.chat()
            assert code == 200, body
            await settled(reactor, redis_server, [i.state for i in three])
        assert keys_seen(a) == ["sk-up-1", "sk-up-1"]
        await until(reactor, lambda: c.state.limit_window(c.creds[0].id).minute_requests == 2)
        # C has sent nothing to it, yet skips it like a cooling key
        for _ in range(3):
            code, _, _ = c.chat()
            assert code == 200
        assert keys_seen(a) == ["sk-up-2"] * 3
        assert c.state.pacing_counters()["limit_skips"] >= 3
        # the minute is over everywhere at once: sk-up-1 is first again
        for i in three:
            i.clock.advance(61)
        code, _, _ = b.chat()
        assert code == 200 and keys_seen(a) == ["sk-up-1"]
        # the skips were counted once each, on every instance alike
        await settled(reactor, redis_server, [i.state for i in three])
        await until(reactor, lambda: len({i.state.pacing_counters()["limit_skips"] for i in three}) == 1)
    finally:
        await stop(three)


@pytest_twisted.ensureDeferred
async def test_windows_opened_at_once_on_two_instances_become_one_holding_both_counts(reactor, redis_server):
    clock = clock_at(1000)
    a, b = await started(reactor, redis_server, clock, 2)
    try:
        # both open a window before either hears of the other's
        a.set_limit_window("k", count_request(a.limit_window("k"), 1000.0))
        b.set_limit_window("k", count_tokens(count_request(b.limit_window("k"), 1000.5), 40, 1000.5))
        await settled(reactor, redis_server, [a, b])
        await until(reactor, lambda: a.limit_window("k") == b.limit_window("k"))
        w = a.limit_window("k")
        assert (w.minute_start, w.minute_requests, w.minute_tokens, w.day_requests) == (1000.0, 2, 40, 2)
        # the next count goes to the one window, on either
        b.set_limit_window("k", count_request(b.limit_window("k"), 1010.0))
        await until(reactor, lambda: a.limit_window("k").minute_requests == 3)
        # a late instance rebuilds the same window from Redis's two buckets
        (late,) = await started(reactor, redis_server, clock, 1)
        assert late.limit_window("k") == a.limit_window("k")
        await stopped([late])
        # a bucket that is over leaves Redis at the next flush
        clock.advance(70)
        a.set_limit_window("k", count_request(a.limit_window("k"), clock.seconds()))
        await settled(reactor, redis_server, [a, b])
        fields = redis_server.command("HKEYS", "{cliproxyd}:limit_windows").split("\n")
        minutes = sorted(f for f in fields if f.split(SEP)[1] == "m")
        assert minutes == [f"k{SEP}m{SEP}1070.0{SEP}r"]  # the windows of 1000.0 and 1000.5 are gone
    finally:
        await stopped([a, b])


# -- client keys ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_client_keys_quota_used_on_one_instance_counts_on_the_others(reactor, redis_server):
    data = config_data(**{"state-store": redis_server.url, "remote-management": {"secret-key": "m"},
                          "client-keys": [{"name": "team", "key": "sk-team", "rpm": 2}]})
    a, b, c = three = await cluster(reactor, data)
    auth = {"Authorization": "Bearer sk-team"}
    try:
        for inst in (a, b):
            code, _, body = inst.chat(headers=auth)
            assert code == 200, body
        await settled(reactor, redis_server, [i.state for i in three])
        await until(reactor, lambda: len(c.state.key_usage("team").starts) == 2)
        code, headers, body = c.chat(headers=auth)
        assert code == 429 and b"rpm" in body
        assert headers.getRawHeaders("retry-after")
        await settled(reactor, redis_server, [i.state for i in three])
        # every instance reports the same use of the key
        reports = []
        for inst in three:
            status, _, raw = inst.request("GET", "/v0/management/usage", headers={"Authorization": "Bearer m"})
            assert status == 200
            reports.append(json.loads(raw)["client-keys"]["team"])
        await until(reactor, lambda: all(i.state.key_usage("team").refused == 1 for i in three))
        assert {(r["requests"], r["last-minute-requests"]) for r in reports} == {(2, 2)}
        # the minute moves on: the key is let in again on C
        for i in three:
            i.clock.advance(61)
        code, _, _ = c.chat(headers=auth)
        assert code == 200
    finally:
        await stop(three)


@pytest_twisted.ensureDeferred
async def test_a_key_usage_reset_on_one_instance_is_a_reset_everywhere(reactor, redis_server):
    clock = clock_at(86400 * 20000)
    stores = await started(reactor, redis_server, clock, 2)
    key = ClientKey(name="t", key="sk-t", tpm=100000, daily_tokens=10**6)
    meters = [KeyMeter(clock, s) for s in stores]
    try:
        for m in meters:
            m.settle(m.admit(key, 10), 250)
        await settled(reactor, redis_server, stores)
        await until(reactor, lambda: all(m.report(key)["tokens"] == 500 for m in meters))
        assert all(m.report(key)["day-tokens"] == 500 and m.report(key)["last-minute-tokens"] == 500 for m in meters)
        meters[1].reset("t")
        await settled(reactor, redis_server, stores)
        await until(reactor, lambda: stores[0].key_usage("t") is None)
        assert meters[0].report(key)["tokens"] == 0
    finally:
        await stopped(stores)


# -- Redis killed and restarted ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_redis_killed_and_restarted_counts_windows_and_key_usage_once(reactor, redis_server):
    clock = clock_at(86400 * 20000 + 100)
    stores = await started(reactor, redis_server, clock, 3)
    key = ClientKey(name="t", key="sk-t", rpm=1000, tpm=10**6, monthly_tokens=10**9)
    meters = [KeyMeter(clock, s) for s in stores]

    def use(n: int) -> None:
        for i in range(n):
            s, m = stores[i % 3], meters[i % 3]
            s.set_limit_window("cred", count_request(s.limit_window("cred"), clock.seconds()))
            m.settle(m.admit(key, 1), 3)
            clock.advance(0.25)

    try:
        use(30)
        await settled(reactor, redis_server, stores)
        # every instance has heard of every count (Redis comes back empty: what it
        # held is known again from the instances' views)
        await until(reactor, lambda: all(s.limit_window("cred").minute_requests == 30 for s in stores))
        await until(reactor, lambda: all(m.report(key)["requests"] == 30 for m in meters))
        redis_server.stop()
        await until(reactor, lambda: not any(s.connected for s in stores))
        use(21)  # counted locally while Redis is away
        redis_server.start()  # empty, on the same port
        await until(reactor, lambda: all(s.connected for s in stores), timeout=20)
        await settled(reactor, redis_server, stores)
        use(9)
        await settled(reactor, redis_server, stores)
        await until(reactor, lambda: all(s.limit_window("cred").minute_requests == 60 for s in stores))
        for s, m in zip(stores, meters):
            assert s.limit_window("cred").day_requests == 60
            report = m.report(key)
            assert (report["requests"], report["last-minute-requests"], report["tokens"],
                    report["month-tokens"]) == (60, 60, 180, 180)
        # and Redis holds each count once
        assert redis_server.command("HGET", "{cliproxyd}:key_usage", f"t{SEP}n{SEP}requests") == "60"
        fields = redis_server.command("HGETALL", "{cliproxyd}:limit_windows").split("\n")
        day = {fields[i]: int(fields[i + 1]) for i in range(0, len(fields), 2) if fields[i].split(SEP)[1] == "d"}
        assert sum(day.values()) == 60
    finally:
        await stopped(stores)


# -- probes: at most one at a time, cluster-wide ---------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_reservation_has_one_holder_cluster_wide_over_random_interleavings(reactor, redis_server):
    clock = Clock()
    stores = await started(reactor, redis_server, clock, 3)
    rng = random.Random(17)
    held: dict[str, tuple[int, str]] = {}  # name -> (store, token)
    try:
        taken = 0
        for _ in range(60):
            # some instances try at once, in a random order, for random credentials
            tries = [(rng.randrange(3), f"probe:c{rng.randrange(3)}") for _ in range(rng.randrange(1, 6))]
            answers = await gatherResults([stores[i].reserve(name, STALE_RESERVATION, 0.0) for i, name in tries])
            for (i, name), token in zip(tries, answers):
                if token is not None:
                    assert name not in held, f"{name} reserved twice at once"
                    held[name] = (i, token)
                    taken += 1
            # some holders finish; a non-holder's release changes nothing
            for name in list(held):
                if rng.random() < 0.4:
                    i, token = held[name]
                    await stores[(i + 1) % 3].unreserve(name, "not-the-token")
                    assert await stores[rng.randrange(3)].reserve(name, STALE_RESERVATION, 0.0) is None
                    await stores[i].unreserve(name, token)
                    del held[name]
        assert taken > 10
    finally:
        await stopped(stores)


@pytest_twisted.ensureDeferred
async def test_three_probers_send_one_probe_for_a_long_cooldown(reactor, redis_server):
    data = config_data(keys=("sk-up-1",), **{"state-store": redis_server.url})
    three = await cluster(reactor, data)
    probers = [ResetProber(lambda i=i: i.conductor, i.state, i.clock) for i in three]
    try:
        cred = three[0].creds[0].id
        for i in three:
            i.clock.advance(10000)
        now = three[0].clock.seconds()
        three[0].state.set_model_state(cred, "gpt-4o", ModelState(
            unavailable=True, next_retry_at=now + 7200, backoff_level=1, quota_exceeded=True, reason="quota",
            last_status=429, updated_at=now - 1000))
        await settled(reactor, redis_server, [i.state for i in three])
        await until(reactor, lambda: all(i.state.model_state(cred, "gpt-4o").blocked(now) for i in three))
        three[0].upstream.script("sk-up-1", "status:429:7000")  # the probe: still limited
        for p in probers:
            p.startService()
        for p in probers:
            p.tick()  # all three find the probe due at once

        def finished() -> bool:
            for i in three:
                i.flush()  # the probe goes through its instance's HTTP client
            return all(not p._in_flight for p in probers)

        await until(reactor, finished)
        assert len(three[0].upstream.seen) == 1  # one probe, from one of the three
        await settled(reactor, redis_server, [i.state for i in three])
        # counted once each, cluster-wide: one sent, two found it held
        await until(reactor, lambda: all(
            (i.state.pacing_counters().get("probes_sent"), i.state.pacing_counters().get("probes_held_elsewhere"))
            == (1, 2) for i in three))
        # its record travels: none of them probes again within interval-seconds
        await until(reactor, lambda: all(i.state.probe_state(cred, "gpt-4o").sent == 1 for i in three))
        for i, p in zip(three, probers):
            i.clock.advance(60)
            p.tick()
        await until(reactor, finished)
        assert len(three[0].upstream.seen) == 1
    finally:
        for p in probers:
            await p.stopService()
        await stop(three)


def test_without_redis_a_reservation_is_held_locally():
    from cliproxyd.state import MemoryStateStore

    s = MemoryStateStore()
    got: list = []
    s.reserve("probe:c", 120, 0.0).addCallback(got.append)
    s.reserve("probe:c", 120, 60.0).addCallback(got.append)
    s.reserve("probe:c", 120, 121.0).addCallback(got.append)  # the first expired
    assert got[0] and got[1] is None and got[2] and got[2] != got[0]
    s.unreserve("probe:c", got[0])  # not the holder any more: nothing changes
    s.reserve("probe:c", 120, 122.0).addCallback(got.append)
    assert got[3] is None
    s.unreserve("probe:c", got[2])
    s.reserve("probe:c", 120, 122.0).addCallback(got.append)
    assert got[4]


# -- the values' merge rules ---------------------------------------------------------------


def test_the_newest_headroom_reading_wins():
    old, new = Headroom(0.01, 500.0, 100.0, "x-ratelimit"), Headroom(0.5, 600.0, 200.0, "x-ratelimit")
    assert newest_reading(old, new, 300.0) is new and newest_reading(new, old, 300.0) is new
    assert newest_reading(None, old, 300.0) is old


def test_pace_keeps_the_later_ramp_and_the_stronger_penalty_and_its_own_credit():
    # 3 failures 60 s ago (1.5 now) beat 1 failure just now
    local, remote = Pace(since=100.0, penalty=1.0, penalty_at=160.0, credit=0.4), Pace(200.0, 3.0, 100.0, 0.9)
    got = stronger_pace(local, remote, 160.0)
    assert got == Pace(200.0, 3.0, 100.0, 0.4)
    # two failures just now beat those three, a minute older
    assert stronger_pace(Pace(penalty=2.0, penalty_at=160.0), remote, 160.0) == Pace(200.0, 2.0, 160.0, 0.0)


def test_the_latest_probe_record_wins():
    done, running = ProbeState(last_at=100.0, sent=1), ProbeState(running_since=150.0, last_at=100.0, sent=2)
    assert latest_probe(done, running, 160.0) is running and latest_probe(running, done, 160.0) is running


@pytest_twisted.ensureDeferred
async def test_headroom_and_pace_travel_and_the_credit_stays_local(reactor, redis_server):
    clock = clock_at(1000)
    a, b = await started(reactor, redis_server, clock, 2)
    try:
        a.set_headroom("k", Headroom(0.01, 2000.0, 1000.0, "anthropic-ratelimit"))
        b.set_pace("k", Pace(since=1000.0, penalty=2.0, penalty_at=1000.0, credit=0.7))
        a.set_pace("k2", Pace(since=900.0, credit=0.3))
        await settled(reactor, redis_server, [a, b])
        await until(reactor, lambda: b.headroom("k") is not None and a.pace("k") is not None)
        assert b.headroom("k") == Headroom(0.01, 2000.0, 1000.0, "anthropic-ratelimit")
        assert a.pace("k") == Pace(1000.0, 2.0, 1000.0, 0.0)
        # a credit change alone is not sent (it changes on every pick)
        a.set_pace("k", Pace(1000.0, 2.0, 1000.0, 0.5))
        assert a.pending_writes == 1
        await settled(reactor, redis_server, [a, b])
        assert b.pace("k").credit == 0.7
        # a cleared reading is cleared everywhere
        a.set_headroom("k", None)
        await until(reactor, lambda: b.headroom("k") is None)
    finally:
        await stopped([a, b])
