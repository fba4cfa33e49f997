"""
Issue 16: local limits, headroom-aware picks, slow start and the failure
penalty. Pure policy with Hypothesis for the invariants, then the whole
in-memory path on a Clock with the simulated upstream sending real
rate-limit header shapes.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.web.http_headers import Headers

from cliproxyd.conductor.headroom import parse_duration, reader_for
from cliproxyd.conductor.pacing import (
    HEADROOM_TRUST,
    MIN_RAMP_SHARE,
    Limits,
    add_failure,
    admit,
    back_at,
    count_request,
    limit_until,
    penalty_factor,
    ramp,
    share,
)
from cliproxyd.state import MemoryStateStore
from cliproxyd.state.records import Headroom, LimitWindow, Pace
from cliproxyd.testing.upstream import ratelimit_headers
from tests.conftest import Harness, config_data

# -- local limits: pure -----------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(rpm=st.integers(1, 5), rpd=st.one_of(st.none(), st.integers(1, 12)),
       gaps=st.lists(st.floats(0, 40, allow_nan=False), min_size=1, max_size=60))
def test_a_limited_credential_is_never_picked(rpm, rpd, gaps):
    """Admitting only what limit_until allows never puts more than rpm in a minute or rpd in a day."""
    limits = Limits(rpm=rpm, rpd=rpd)
    w = LimitWindow()
    now = 1000.0
    sent: list[float] = []
    for gap in gaps:
        now += gap
        until = limit_until(w, limits, now)
        if until is None:
            w = count_request(w, now)
            sent.append(now)
        else:
            assert until > now  # a limit always frees later, never "now"
    for t in sent:
        assert len([s for s in sent if t <= s < t + 60]) <= rpm * 2  # fixed windows: at most two per minute span
    # within one fixed window, never more than the limit
    starts = []
    for t in sent:
        if not starts or t >= starts[-1] + 60:
            starts.append(t)
    for s in starts:
        assert len([t for t in sent if s <= t < s + 60]) <= rpm
    if rpd is not None:
        assert len([t for t in sent if sent[0] <= t < sent[0] + 86400]) <= rpd


def test_the_limit_frees_at_the_end_of_its_window():
    limits = Limits(rpm=2)
    w = count_request(count_request(LimitWindow(), 100.0), 110.0)
    assert limit_until(w, limits, 120.0) == 160.0
    assert limit_until(w, limits, 160.0) is None
    tokens = Limits(tpm=100)
    from cliproxyd.conductor.pacing import count_tokens
    assert limit_until(count_tokens(LimitWindow(), 100, 5.0), tokens, 6.0) == 65.0


# -- shares: pure ------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(s=st.floats(0, 1, allow_nan=False), n=st.integers(1, 400))
def test_admit_takes_the_share_of_the_offers(s, n):
    credit, taken = 0.0, 0
    for _ in range(n):
        ok, credit = admit(credit, s)
        taken += ok
    assert abs(taken - s * n) <= 1.0 + 1e-9


def test_the_ramp_rises_from_a_tenth_to_the_full_share():
    p = back_at(Pace(), 100.0)
    assert ramp(p, 100.0, 30) == MIN_RAMP_SHARE
    assert ramp(p, 115.0, 30) == 0.5
    assert ramp(p, 130.0, 30) == 1.0
    assert ramp(p, 115.0, 0) == 1.0  # slow start off
    assert ramp(p, 99.0, 30) == 1.0  # while it cools, its other models go on at their full share


def test_one_failure_is_free_several_score_down_and_it_decays():
    p = add_failure(Pace(), 0.0)
    assert penalty_factor(p, 0.0) == 1.0
    p = add_failure(add_failure(p, 1.0), 2.0)
    assert penalty_factor(p, 2.0) < 0.5
    assert penalty_factor(p, 2.0 + 600) == 1.0  # ten half-lives later


def test_a_spent_headroom_is_share_zero_until_its_reset():
    h = Headroom(fraction=0.01, reset_at=50.0)
    assert share(None, h, 10.0, 30) == 0.0
    assert share(None, h, 50.0, 30) == 1.0
    assert share(None, Headroom(fraction=0.5), 10.0, 30) == 1.0
    # without a reset time (or with a far one) a low reading is believed for HEADROOM_TRUST, then read afresh
    stale = Headroom(fraction=0.0, reset_at=None, read_at=100.0)
    assert share(None, stale, 100.0 + HEADROOM_TRUST - 1, 30) == 0.0
    assert share(None, stale, 100.0 + HEADROOM_TRUST, 30) == 1.0


# -- headroom headers: real shapes ------------------------------------------------------


def _headers(raw):
    return Headers({k: [v] for k, v in raw.items()})


def test_openai_durations():
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("20ms") == 0.02
    assert parse_duration("1h2m3.5s") == 3723.5
    assert parse_duration("soon") is None


def test_each_family_reads_its_own_shape():
    now = 1_000_000.0
    for kind, family in (("openai-compatibility", "openai"), ("claude-api-key", "anthropic"),
                         ("claude", "unified"), ("codex", "codex")):
        reading = reader_for(kind)(_headers(ratelimit_headers(family, 0.02, 120, now)), now)
        assert reading is not None, family
        assert abs(reading.fraction - 0.02) < 0.011, (family, reading)
        assert abs(reading.reset_at - (now + 120)) <= 1, (family, reading)
    # Gemini answers carry none of these: nothing is read for it
    assert reader_for("gemini-api-key") is None


def test_unified_rejected_status_means_nothing_left():
    now = 5000.0
    raw = ratelimit_headers("unified", 0.0, 600, now)
    reading = reader_for("claude")(_headers(raw), now)
    assert reading.fraction == 0.0 and reading.reset_at == now + 600


# -- the whole path ------------------------------------------------------------------


def _keys(*entries):
    data = config_data()
    data["openai-compatibility"][0]["api-key-entries"] = list(entries)
    return data


def test_a_key_at_its_rpm_is_skipped_and_all_limited_answers_429_with_the_time_until_it_frees():
    h = Harness(_keys({"api-key": "sk-up-1", "rpm": 1}, {"api-key": "sk-up-2", "rpm": 2}))
    for _ in range(3):
        assert h.chat()[0] == 200
    assert sorted(h.keys_seen()) == ["sk-up-1", "sk-up-2", "sk-up-2"]
    h.clock.advance(20)
    status, headers, body = h.chat()
    assert status == 429
    assert headers.getRawHeaders(b"retry-after") == [b"40"]
    assert len(h.upstream.seen) == 3  # nothing more was sent
    h.clock.advance(40)
    assert h.chat()[0] == 200
    assert h.state.pacing_counters()["limit_skips"] >= 2


def test_a_limited_key_steps_down_to_the_next_tier():
    data = _keys({"api-key": "sk-up-1", "rpm": 1})
    data["openai-compatibility"].append({
        "name": "backup", "base-url": data["openai-compatibility"][0]["base-url"], "priority": -1,
        "api-key-entries": [{"api-key": "sk-backup"}], "models": [{"name": "sim-small", "alias": "gpt-4o-mini"}]})
    h = Harness(data)
    h.chat(), h.chat()
    assert h.keys_seen() == ["sk-up-1", "sk-backup"]


def test_a_key_whose_upstream_says_it_is_nearly_spent_is_passed_over_within_its_tier():
    h = Harness()
    h.upstream.limit("sk-up-1", "openai", 0.01, reset_seconds=90)
    for _ in range(6):
        h.chat()
    seen = h.keys_seen()
    assert seen.count("sk-up-1") == 1  # the answer that told us; then the other key takes it all
    # the reading holds until its reset; then sk-up-1 is back (and now reports plenty)
    h.upstream.limit("sk-up-1", "openai", 0.9)
    h.clock.advance(91)
    h.upstream.seen.clear()
    for _ in range(4):
        h.chat()
    assert h.keys_seen().count("sk-up-1") == 2
    assert h.state.pacing_counters()["passed_over"] >= 4


def test_a_nearly_spent_key_still_serves_when_its_tier_has_no_other():
    h = Harness(_keys({"api-key": "sk-up-1"}))
    h.upstream.limit("sk-up-1", "openai", 0.0)
    assert [h.chat()[0] for _ in range(3)] == [200, 200, 200]


def test_headroom_off_reads_nothing():
    data = config_data(routing={"headroom": False, "slow-start-seconds": 0})
    h = Harness(data)
    h.upstream.limit("sk-up-1", "openai", 0.0)
    for _ in range(4):
        h.chat()
    assert h.keys_seen().count("sk-up-1") == 2
    assert h.state.headroom([c.id for c in h.conductor.creds][0]) is None


def test_a_key_back_from_a_cooldown_ramps_up_over_slow_start_seconds():
    h = Harness(config_data(routing={"slow-start-seconds": 30}))
    h.upstream.script("sk-up-1", "status:503", "ok")
    h.chat()  # key 1 cools for 60 s
    h.clock.advance(60)
    h.upstream.seen.clear()
    for _ in range(20):
        h.chat()
    early = h.keys_seen().count("sk-up-1")
    assert 1 <= early <= 4  # about a tenth of its half at first, not the full share
    h.clock.advance(30)
    h.upstream.seen.clear()
    for _ in range(20):
        h.chat()
    assert h.keys_seen().count("sk-up-1") == 10  # the full share after the ramp


def test_pacing_state_survives_a_restart():
    store = MemoryStateStore()
    store.set_limit_window("c1", count_request(LimitWindow(), 100.0))
    store.set_headroom("c1", Headroom(fraction=0.0, reset_at=500.0, read_at=100.0, source="openai-requests"))
    store.set_pace("c1", back_at(Pace(), 150.0))
    data = store.snapshot(120.0)
    import json
    again = MemoryStateStore()
    assert again.restore(json.loads(json.dumps(data)), 121.0) == []
    assert again.limit_window("c1") == store.limit_window("c1")
    assert again.headroom("c1") == store.headroom("c1")
    assert again.pace("c1") == store.pace("c1")
    # a reading whose reset has passed is not kept
    assert "c1" not in store.snapshot(600.0)["headroom"]


def test_a_bad_pacing_entry_is_a_problem_not_a_crash():
    store = MemoryStateStore()
    problems = store.restore({"version": 1, "limit_windows": {"c1": {"minute_requests": "x"}}}, 0.0)
    assert problems and "limit_windows.c1" in problems[0]


def test_management_status_shows_the_pacing_counters_and_each_credentials_limits_and_headroom():
    data = _keys({"api-key": "sk-up-1", "rpm": 1}, {"api-key": "sk-up-2"})
    data["remote-management"] = {"secret-key": "mgmt-secret"}
    h = Harness(data)
    h.upstream.limit("sk-up-2", "openai", 0.0, reset_seconds=30)
    h.chat(), h.chat(), h.chat()
    status, _, body = h.request("GET", "/v0/management/status", headers={"Authorization": "Bearer mgmt-secret"})
    assert status == 200
    import json
    report = json.loads(body)
    pacing = report["pacing"]
    assert pacing["limit_skips"] >= 1 and pacing["headroom_low_readings"] >= 1 and pacing["probes_sent"] == 0
    assert pacing["reset_probe"] == {"enabled": True, "after_seconds": 600.0, "interval_seconds": 300.0}
    first, second = report["credentials"]
    assert first["pacing"]["limits"]["rpm"] == 1 and first["pacing"]["limits"]["minute_requests"] == 1
    assert first["pacing"]["limits"]["limited_for_seconds"] == 60.0
    assert second["pacing"]["headroom"]["source"] == "openai-requests"
    assert second["pacing"]["share"] == 0.0


def test_limits_must_be_positive_and_errors_name_their_path():
    import pytest

    from cliproxyd.config import parse_config
    from cliproxyd.config.load import ConfigError

    with pytest.raises(ConfigError) as e:
        parse_config({"claude-api-key": [{"api-key": "k", "rpm": 0}]})
    assert "claude-api-key[0].rpm" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config(_keys({"api-key": "a", "tpm": "lots"}))
    assert "openai-compatibility[0].api-key-entries[0].tpm" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config({"routing": {"reset-probe": {"interval-seconds": 0}}})
    assert "routing.reset-probe.interval-seconds" in str(e.value)
    config, _ = parse_config({"gemini-api-key": [{"api-key": "k", "rpm": 5, "tpm": 1000, "rpd": 100}]})
    assert config.gemini_api_key[0].limits == Limits(5, 1000, 100)


def test_an_auth_files_limits_are_read_and_checked():
    import pytest

    from cliproxyd.config import parse_config
    from cliproxyd.credentials.authfiles import AuthFileError, OAuthAccount, credential_for

    config, _ = parse_config({})
    account = OAuthAccount("/x/claude-a.json", "claude", {"rpm": "30", "rpd": 500}, "t", "r")
    assert credential_for(account, config).limits == Limits(rpm=30, rpd=500)
    bad = OAuthAccount("/x/claude-b.json", "claude", {"tpm": -1}, "t", "r")
    with pytest.raises(AuthFileError, match="tpm"):
        credential_for(bad, config)


def test_a_key_that_keeps_failing_is_scored_down_unless_cooling_is_off():
    def run(**top):
        h = Harness(config_data(routing={"slow-start-seconds": 30}, **top))
        h.upstream.script("sk-up-1", "status:418", "status:418", "status:418", "ok")  # 418 cools nothing
        for _ in range(3):
            assert h.chat()[0] == 200  # each failed over to key 2
        h.upstream.seen.clear()
        for _ in range(12):
            h.chat()
        return h.keys_seen().count("sk-up-1")

    assert run() <= 4  # three failures in a row: scored down, well under its half (6)
    assert run(**{"disable-cooling": True}) == 6  # cooling off: no penalty either
