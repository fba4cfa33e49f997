"""
Issue 16: reset probes. The pure rule (L{due}) with Hypothesis for its
invariants, then the prober on a Clock against the simulated upstream.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from cliproxyd.conductor.probes import PROBE_TIMEOUT, Candidate, ProbeSettings, ResetProber, due
from cliproxyd.state import MemoryStateStore
from cliproxyd.state.records import ModelState, ProbeState
from tests.conftest import Harness, config_data

SETTINGS = ProbeSettings(enabled=True, after=600.0, interval=300.0)

_candidates = st.lists(st.builds(
    Candidate, cred_id=st.sampled_from(["a", "b", "c"]), target=st.sampled_from(["m1", "m2", "group:g"]),
    model=st.just("m"), until=st.floats(0, 20000), since=st.floats(0, 10000)), max_size=12)
_probes = st.dictionaries(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["m1", "m2", "group:g", "*"])),
    st.builds(ProbeState, running_since=st.one_of(st.none(), st.floats(0, 10000)),
              last_at=st.one_of(st.none(), st.floats(0, 10000))), max_size=6)


@settings(max_examples=300, deadline=None)
@given(candidates=_candidates, probes=_probes, now=st.floats(0, 12000))
def test_a_probe_never_runs_twice_at_once_for_one_credential(candidates, probes, now):
    started = due(candidates, probes, now, SETTINGS)
    creds = [c.cred_id for c in started]
    assert len(creds) == len(set(creds))  # at most one new probe per credential
    for c in started:
        # none for a credential whose probe still runs
        assert not any(cred == c.cred_id and s.running_since is not None and now - s.running_since < 2 * PROBE_TIMEOUT
                       for (cred, _), s in probes.items())
        assert c.until > now and c.until - c.since > SETTINGS.after  # only long cooldowns that still hold
        last = probes.get((c.cred_id, c.target))
        assert now - max(c.since, last.last_at if last and last.last_at is not None else c.since) >= SETTINGS.interval


def test_disabled_probes_nothing():
    c = Candidate("a", "m", "m", until=5000, since=0)
    assert due([c], {}, 1000, SETTINGS) == [c]
    assert due([c], {}, 1000, ProbeSettings(enabled=False)) == []


# -- the prober on a Clock ---------------------------------------------------------


def _setup(data=None):
    h = Harness(data or config_data())
    prober = ResetProber(lambda: h.conductor, h.state, h.clock)
    prober.startService()
    return h, prober


def _probes_seen(h):
    return [s for s in h.upstream.seen if s.body.get("max_tokens") == 1]


def test_a_long_cooldown_is_probed_and_a_success_returns_the_key_at_once():
    h, prober = _setup()
    h.upstream.script("sk-up-1", "status:429:7200", "ok")
    h.chat()  # key 1 cools for two hours
    h.clock.advance(299)
    assert _probes_seen(h) == []  # not before interval-seconds
    h.clock.advance(31)
    h.flush()
    probes = _probes_seen(h)
    assert [p.key for p in probes] == ["sk-up-1"]
    h.upstream.seen.clear()
    h.chat(), h.chat()
    assert sorted(h.keys_seen()) == ["sk-up-1", "sk-up-2"]  # back in rotation, two hours early
    counters = h.state.pacing_counters()
    assert counters["probes_sent"] == 1 and counters["probes_succeeded"] == 1
    # the probe is not a request: usage counts the two chats and the first 429 and its failover only
    assert h.usage.total == 4
    prober.stopService()


def test_a_short_cooldown_is_not_probed():
    h, prober = _setup()
    h.upstream.script("sk-up-1", "status:429:500", "ok")
    h.chat()
    h.clock.advance(450)
    h.flush()
    assert _probes_seen(h) == []
    prober.stopService()


def test_a_cooldown_left_by_a_credential_no_longer_configured_is_not_probed():
    """
    The prober walks the store's states, not the configured credentials: a
    state a removed key left behind (a snapshot, another instance) is passed
    over, and the configured keys' cooldowns are still found beside it.
    """
    h, prober = _setup()
    now = h.clock.seconds()
    gone = ModelState(unavailable=True, next_retry_at=now + 7200, reason="quota", quota_exceeded=True,
                      last_status=429, updated_at=now)
    h.state.set_model_state("removed-key", "gpt-4o-mini", gone)
    h.upstream.script("sk-up-1", "status:429:7200", "ok")
    h.chat()
    assert [c.cred_id for c in h.conductor.probe_candidates(h.clock.seconds())] == [h.conductor.creds[0].id]
    h.clock.advance(330)
    h.flush()
    assert [p.key for p in _probes_seen(h)] == ["sk-up-1"]
    prober.stopService()


def test_a_failed_probe_keeps_the_cooldown_with_the_new_hint():
    h, prober = _setup()
    h.upstream.script("sk-up-1", "status:429:7200", "status:429:900", "ok")
    h.chat()
    cred = h.conductor.creds[0].id
    h.clock.advance(330)
    h.flush()
    assert len(_probes_seen(h)) == 1
    state = h.state.model_state(cred, "gpt-4o-mini")
    assert state.blocked(h.clock.seconds())
    assert abs(state.next_retry_at - (h.clock.seconds() + 900)) < 31  # moved to the probe's hint
    assert h.state.pacing_counters()["probes_failed"] == 1
    assert h.state.probe_state(cred, "gpt-4o-mini").last_status == 429
    prober.stopService()


def test_a_hanging_probe_is_never_joined_by_a_second_one():
    h, prober = _setup(config_data(routing={"slow-start-seconds": 0, "reset-probe": {"interval-seconds": 10}}))
    h.upstream.script("sk-up-1", "status:429:7200", "hang")
    h.chat()
    h.clock.advance(30)
    h.flush()
    assert len(_probes_seen(h)) == 1
    h.clock.advance(30)  # a tick while it hangs
    h.flush()
    assert len(_probes_seen(h)) == 1
    for _ in range(2):  # it times out (PROBE_TIMEOUT) at the next tick; the one after probes again
        h.clock.advance(30)
        h.flush()
    assert len(_probes_seen(h)) == 2
    assert h.state.probe_state(h.conductor.creds[0].id, "gpt-4o-mini").sent == 2
    prober.stopService()


def test_a_probe_success_ends_the_quota_groups_suspension():
    data = config_data(**{"oauth-quota-groups": [{"id": "sim-all", "providers": ["sim"], "models": ["*"]}]})
    h, prober = _setup(data)
    h.upstream.script("sk-up-1", "status:429:7200", "ok")
    h.chat()
    cred = h.conductor.creds[0].id
    assert h.state.group_state(cred, "sim-all").auto_active(h.clock.seconds())
    h.clock.advance(330)
    h.flush()
    assert len(_probes_seen(h)) == 1
    assert not h.state.group_state(cred, "sim-all").auto_active(h.clock.seconds())
    h.upstream.seen.clear()
    for model in ("gpt-4o-mini", "gpt-4o"):
        h.chat(model), h.chat(model)
    assert "sk-up-1" in h.keys_seen()
    prober.stopService()


def test_probe_state_survives_a_restart_without_its_reservation():
    store = MemoryStateStore()
    store.set_probe_state("c", "m", ProbeState(running_since=10.0, last_at=5.0, sent=2, succeeded=1))
    again = MemoryStateStore()
    assert again.restore(json.loads(json.dumps(store.snapshot(11.0))), 12.0) == []
    assert again.probe_state("c", "m") == ProbeState(last_at=5.0, sent=2, succeeded=1)


def test_the_daemon_runs_the_prober():
    h = Harness()
    names = [getattr(s, "name", None) for tree in h.daemon.services for s in getattr(tree, "services", ())]
    assert "reset-probes" in names


# -- usage-endpoint probes on a Clock (issue 16) ----------------------------------------


def _claude_accounts(tmp_path):
    from tests.test_oauth_accounts import write

    for n, extra in ((1, {"priority": 10}), (2, {})):
        write(tmp_path, f"claude-{n}.json", {"type": "claude", "access_token": f"oat-{n}", "refresh_token": "r",
                                              "base_url": "http://upstream.test", **extra})
    return {"auth-dir": str(tmp_path), "openai-compatibility": []}


def test_a_usage_probe_on_the_clock_keeps_a_spent_window_then_ends_the_cooldown_when_quota_is_back(tmp_path):
    h, prober = _setup(config_data(**_claude_accounts(tmp_path)))
    h.upstream.script("oat-1", "status:429:7200", "ok")
    assert h.chat("claude-haiku-4-5")[0] == 200  # account 1 cools for two hours; account 2 answers
    cred = next(c for c in h.conductor.creds if c.secret == "oat-1")
    h.upstream.set_quota("oat-1", 0.0, reset_seconds=3 * 3600)
    h.clock.advance(299)
    h.flush()
    assert h.upstream.usage_seen == []  # not before interval-seconds
    h.clock.advance(31)
    h.flush()
    assert [(p, t) for p, t, _ in h.upstream.usage_seen] == [("/api/oauth/usage", "oat-1")]
    state = h.state.model_state(cred.id, "claude-haiku-4-5")
    assert state.blocked(h.clock.seconds()) and abs(state.next_retry_at - 3 * 3600) < 1  # the window's reset
    h.upstream.seen.clear()
    assert h.chat("claude-haiku-4-5")[0] == 200 and h.keys_seen() == ["oat-2"]
    h.upstream.set_quota("oat-1", 0.5)
    h.clock.advance(330)
    h.flush()
    assert len(h.upstream.usage_seen) == 2
    assert not h.state.model_state(cred.id, "claude-haiku-4-5").blocked(h.clock.seconds())
    h.upstream.seen.clear()
    assert h.chat("claude-haiku-4-5")[0] == 200 and h.keys_seen() == ["oat-1"]  # the higher tier, hours early
    counters = h.conductor.pacing_counters()
    assert counters["probes_by_usage"] == 2 and counters["probes_succeeded"] == 1 and counters["probes_failed"] == 1
    prober.stopService()
