"""
Client keys' limits as pure policy on a Clock (L{cliproxyd.conductor.keylimits}).

The property: for any interleaving of requests, stream growth and
completions, a key never goes over a limit in any window (every request it
starts fits, with what is counted and what is running), and a refusal's
Retry-After is when the window frees: not sooner, and then it does.
"""

from __future__ import annotations

import calendar
import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from cliproxyd.conductor.keylimits import (
    KeyLimited,
    KeyMeter,
    Scope,
    next_month,
    prune,
    refusal,
)
from cliproxyd.config.model import ClientKey
from cliproxyd.state.records import KeyUsage
from cliproxyd.state.store import MemoryStateStore

DAY0 = float(calendar.timegm((2026, 12, 2, 0, 0, 0)))


def key(**kw):
    return ClientKey(name=kw.pop("name", "app"), key="k", **kw)


def meter(at: float = DAY0):
    clock = Clock()
    clock.advance(at)
    store = MemoryStateStore()
    return clock, store, KeyMeter(clock, store)


# -- examples ---------------------------------------------------------------------


def test_rpm_counts_starts_in_the_last_minute_and_says_when_the_first_leaves():
    clock, _, m = meter()
    k = key(rpm=2)
    m.settle(m.admit(k, 0))
    clock.advance(10)
    m.settle(m.admit(k, 0))
    clock.advance(5)
    with pytest.raises(KeyLimited) as e:
        m.admit(k, 0)
    assert e.value.refusal.limit == "rpm"
    assert e.value.refusal.retry_after == pytest.approx(45)
    clock.advance(45)
    m.admit(k, 0)  # the first start has left the minute


def test_max_parallel_counts_running_requests_until_they_settle():
    _, _, m = meter()
    k = key(max_parallel=1)
    first = m.admit(k, 0)
    with pytest.raises(KeyLimited) as e:
        m.admit(k, 0)
    assert e.value.refusal.limit == "max-parallel" and e.value.refusal.retry_after == 1
    m.settle(first)
    m.settle(first)  # once only: a second settle does not free a second slot
    m.admit(k, 0)
    with pytest.raises(KeyLimited):
        m.admit(k, 0)


def test_tpm_counts_reported_usage_and_running_estimates():
    clock, _, m = meter()
    k = key(tpm=100)
    running = m.admit(k, 30)
    m.grow(running, 60)  # a stream under way: now counted at 60
    with pytest.raises(KeyLimited) as e:
        m.admit(k, 50)
    assert e.value.refusal.limit == "tpm"
    m.settle(running, 20)  # the upstream reported 20: the estimate goes, 20 stay
    m.settle(m.admit(k, 80), 80)
    clock.advance(30)
    with pytest.raises(KeyLimited) as e:
        m.admit(k, 1)
    # the 100 tokens were all counted in one second, 30 s ago: free 31 s from now
    assert e.value.refusal.retry_after == pytest.approx(31)
    clock.advance(31)
    m.admit(k, 100)


def test_a_stream_that_reports_nothing_is_settled_at_its_estimate():
    _, store, m = meter()
    k = key(daily_tokens=1000)
    t = m.admit(k, 10)
    m.grow(t, 400)
    m.grow(t, 300)  # estimates only grow
    m.settle(t)
    assert store.key_usage("app").day_tokens == 400


def test_daily_and_monthly_tokens_free_at_the_next_utc_day_and_month():
    clock, _, m = meter(DAY0 + 3600)
    k = key(daily_tokens=100, monthly_tokens=150)
    m.settle(m.admit(k, 1), 100)
    with pytest.raises(KeyLimited) as e:
        m.admit(k, 1)
    assert e.value.refusal.limit == "daily-tokens"
    assert e.value.refusal.retry_after == pytest.approx(23 * 3600)
    clock.advance(23 * 3600)
    m.settle(m.admit(k, 1), 50)
    with pytest.raises(KeyLimited) as e:
        m.admit(k, 1)
    assert e.value.refusal.limit == "monthly-tokens"
    assert clock.seconds() + e.value.refusal.retry_after == calendar.timegm((2027, 1, 1, 0, 0, 0))


def test_next_month_rolls_over_the_year():
    assert next_month(calendar.timegm((2026, 12, 31, 23, 0, 0))) == calendar.timegm((2027, 1, 1, 0, 0, 0))
    assert next_month(calendar.timegm((2027, 2, 3, 0, 0, 0))) == calendar.timegm((2027, 3, 1, 0, 0, 0))


def test_a_key_without_token_limits_counts_requests_and_no_tokens():
    _, store, m = meter()
    k = key()
    t = m.admit(k, 500)
    assert t.reserved == 0
    m.settle(t, 1234)
    usage = store.key_usage("app")
    assert usage.requests == 1 and usage.tokens == 0


def test_refusals_are_counted_and_reset_forgets_the_key():
    _, store, m = meter()
    k = key(rpm=1)
    m.settle(m.admit(k, 0))
    with pytest.raises(KeyLimited):
        m.admit(k, 0)
    assert m.counters()["app"].refused == 1 and m.counters()["app"].requests == 1
    m.reset("app")
    assert store.key_usage("app") is None
    m.admit(k, 0)


def test_the_record_survives_a_snapshot_and_restore():
    clock, store, m = meter()
    k = key(rpm=3, tpm=1000, daily_tokens=10_000)
    m.settle(m.admit(k, 5), 42)
    m.settle(m.admit(k, 5), 8)
    data = store.snapshot(clock.seconds())
    again = MemoryStateStore()
    assert again.restore(data, clock.seconds()) == []
    m2 = KeyMeter(clock, again)
    report = m2.report(k)
    assert report["requests"] == 2 and report["day-tokens"] == 50
    assert report["remaining"] == {"rpm": 1, "tpm": 950, "daily-tokens": 9950}


def test_a_bad_record_in_a_snapshot_is_a_problem_not_an_error():
    store = MemoryStateStore()
    data = MemoryStateStore().snapshot(0)
    data["key_usage"] = {"good": KeyUsage(requests=3).as_json(), "bad": {"requests": "three"}}
    problems = store.restore(data, 0)
    assert problems == ["key_usage.bad: requests is not a whole number"]
    assert store.key_usage("good").requests == 3 and store.key_usage("bad") is None


def test_scope_models_globs_prefixes_and_exclusions():
    s = Scope(key(models=("gemini-*", "gpt-4o"), excluded_models=("*-preview",)))
    assert s.allows_model("gemini-2.5-pro")
    assert s.allows_model("gemini-2.5-pro(high)")  # the thinking suffix is not part of the name
    assert s.allows_model("team/gpt-4o")  # a prefixed name, by its name without the prefix
    assert s.allows_model("GPT-4O")
    assert not s.allows_model("gemini-3-pro-preview")
    assert not s.allows_model("claude-sonnet-4")
    assert Scope(key()).allows_model("anything")
    p = Scope(key(providers=("gemini",)))
    assert p.allowed_providers(("claude", "gemini")) == ("gemini",)
    assert Scope(key()).allowed_providers(("claude",)) == ("claude",)


# -- the property ---------------------------------------------------------------------

limits = st.fixed_dictionaries({
    "rpm": st.integers(0, 5),
    "tpm": st.sampled_from([0, 50, 200]),
    "daily_tokens": st.sampled_from([0, 300, 1000]),
    "max_parallel": st.integers(0, 3),
})
ops = st.lists(st.one_of(
    st.tuples(st.just("wait"), st.sampled_from([0.0, 0.5, 1.0, 7.0, 30.0, 59.5, 60.0, 3600.0, 40000.0])),
    st.tuples(st.just("start"), st.integers(0, 120)),
    st.tuples(st.just("grow"), st.integers(0, 10), st.integers(0, 150)),
    st.tuples(st.just("end"), st.integers(0, 10), st.one_of(st.none(), st.integers(0, 200))),
), max_size=60)


def _check_window(k, starts, charges, running, now):
    """The brute-force view of every window ending at C{now} (a start just made included)."""
    if k.rpm:
        assert sum(1 for t in starts if now - 60 < t <= now) <= k.rpm
    if k.max_parallel:
        assert len(running) <= k.max_parallel
    reserved = sum(t.reserved for t in running)
    if k.tpm:
        assert sum(n for t, n in charges if now - 60 < t <= now) + reserved <= k.tpm
    if k.daily_tokens:
        day = int(now // 86400)
        assert sum(n for t, n in charges if int(t // 86400) == day) + reserved <= k.daily_tokens


@settings(max_examples=300, deadline=None)
@given(limits, ops)
def test_a_key_never_exceeds_a_limit_in_any_window(lim, steps):
    clock, store, m = meter(DAY0 + 86400 - 100)  # near midnight: days roll over in some runs
    k = key(**lim)
    starts: list[float] = []
    charges: list[tuple[float, int]] = []
    running = []
    for step in steps:
        now = clock.seconds()
        if step[0] == "wait":
            clock.advance(step[1])
        elif step[0] == "start":
            live = copy.deepcopy(m._live.get("app", [0, 0]))
            usage = copy.deepcopy(store.key_usage("app") or KeyUsage())
            try:
                t = m.admit(k, step[1])
            except KeyLimited as e:
                r = e.refusal
                assert r.retry_after > 0
                _retry_after_is_when_it_frees(k, usage, live, step[1] if k.token_limited else 0, now, r)
                continue
            starts.append(now)
            running.append(t)
            _check_window(k, starts, charges, running, now)
        elif running:
            t = running[step[1] % len(running)]
            if step[0] == "grow":
                m.grow(t, step[2])
            else:
                running.remove(t)
                used = t.reserved if step[2] is None else step[2]
                m.settle(t, step[2])
                if k.token_limited and used > 0:
                    charges.append((now, used))


def _retry_after_is_when_it_frees(k, usage, live, estimate, now, r):
    """Just before C{retry_after} the same limit refuses; at it, that limit does not (nothing else changing)."""
    if r.limit == "max-parallel":
        return  # frees when a running request ends, not at a time
    if r.limit == "tpm" and live[1] + estimate > k.tpm:
        return  # what is running alone is over: that frees when it settles
    if r.limit == "daily-tokens" and live[1] + estimate > k.daily_tokens:
        return
    later = now + r.retry_after
    at = copy.deepcopy(usage)
    prune(k, at, later)
    again = refusal(k, at, live[0], live[1], estimate, later)
    assert again is None or again.limit != r.limit
    if r.retry_after > 0.5:
        before = copy.deepcopy(usage)
        prune(k, before, later - 0.5)
        still = refusal(k, before, live[0], live[1], estimate, later - 0.5)
        assert still is not None and still.limit == r.limit


# -- config ---------------------------------------------------------------------------


def _load(keys, api_keys=()):
    from cliproxyd.config.load import parse_config

    return parse_config({"api-keys": list(api_keys), "client-keys": keys})[0]


@pytest.mark.parametrize("keys, api_keys, path, problem", [
    ([{"key": "a"}], (), "client-keys[0].name", "required"),
    ([{"name": "a"}], (), "client-keys[0].key", "required"),
    ([{"name": "a", "key": "x"}, {"name": "a", "key": "y"}], (), "client-keys[1].name", "already used"),
    ([{"name": "a", "key": "x"}, {"name": "b", "key": "x"}], (), "client-keys[1].key", "same key as client-keys[0]"),
    ([{"name": "a", "key": "x"},
      {"name": "b", "key": "sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"}], (),
     "client-keys[1].key", "same key as client-keys[0]"),  # sha256 of "x"
    ([{"name": "a", "key": "sk-full"}], ("sk-full",), "client-keys[0].key", "same key as api-keys"),
    ([{"name": "a", "key": "sha256:abc"}], (), "client-keys[0].key", "64 lower-case hex"),
    ([{"name": "a", "key": "$2b$04$short"}], (), "client-keys[0].key", "not a valid one"),
    ([{"name": "a", "key": "x", "rpm": -1}], (), "client-keys[0].rpm", "0 or more"),
    ([{"name": "a", "key": "x", "expires": "soon"}], (), "client-keys[0].expires", "RFC 3339"),
])
def test_bad_client_keys_name_their_yaml_path(keys, api_keys, path, problem):
    from cliproxyd.config.load import ConfigError

    with pytest.raises(ConfigError) as e:
        _load(keys, api_keys)
    assert e.value.path == path and problem in e.value.problem


def test_expires_takes_dates_times_and_epoch_seconds():
    import datetime

    keys = _load([{"name": "a", "key": "1", "expires": datetime.date(2027, 1, 1)},
                  {"name": "b", "key": "2", "expires": "2027-01-01T01:00:00+01:00"},
                  {"name": "c", "key": "3", "expires": 1798761600}]).client_keys
    assert [k.expires for k in keys] == [1798761600.0] * 3
