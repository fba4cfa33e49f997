"""
The usage endpoints' answers read into L{QuotaReading}s (pure), from the
simulated answers' real shapes and the variants the providers send
(camelCase, milliseconds, omitted zeros, per-model windows), and which
call a probe makes for each credential kind.
"""

from __future__ import annotations

import pytest

from cliproxyd.formats.common import parse_rfc3339
from cliproxyd.conductor.probes import call_for
from cliproxyd.executors.quota import (
    QUOTA_CALLS,
    read_antigravity,
    read_claude,
    read_codex,
    read_gemini_cli,
)
from cliproxyd.testing.quota import AccountQuota

NOW = 1_800_000_000.0


@pytest.mark.parametrize("left, available", [(0.0, False), (0.003, False), (0.4, True), (0.6, True)])
def test_each_simulated_answer_reads_back_as_what_it_says(left, available):
    q = AccountQuota(left, NOW + 7200)
    models = ("gemini-2.5-pro", "gemini-2.5-flash")
    for reading in (read_claude(q.claude(), "claude-sonnet-4-5", NOW), read_codex(q.codex(NOW), "gpt-5", NOW),
                    read_gemini_cli(q.gemini_cli(models), "gemini-2.5-pro", NOW),
                    read_antigravity(q.antigravity(models), "gemini-2.5-flash", NOW)):
        assert reading.available is available
        assert reading.fraction == pytest.approx(left, abs=0.01)
        assert reading.reset_at == pytest.approx(NOW + 7200, abs=1)


def test_claude_reads_the_model_familys_weekly_window_only_for_that_family():
    data = {"five_hour": {"utilization": 10.0, "resets_at": "2027-01-15T08:00:00+00:00"},
            "seven_day": {"utilization": 40.0, "resets_at": "2027-01-20T00:00:00Z"},
            "seven_day_opus": {"utilization": 100.0, "resets_at": "2027-01-18T00:00:00Z"},
            "seven_day_sonnet": None}
    opus = read_claude(data, "claude-opus-4-1", NOW)
    assert not opus.available and opus.source == "claude-seven_day_opus"
    assert opus.reset_at == parse_rfc3339("2027-01-18T00:00:00Z")
    sonnet = read_claude(data, "claude-sonnet-4-5", NOW)
    assert sonnet.available and sonnet.fraction == pytest.approx(0.6) and sonnet.source == "claude-seven_day"


def test_the_latest_reset_of_the_spent_windows_holds():
    data = {"five_hour": {"utilization": 100, "resets_at": "2027-01-15T08:00:00Z"},
            "seven_day": {"utilization": 100, "resets_at": "2027-01-20T00:00:00Z"}}
    assert read_claude(data, "claude-haiku-4-5", NOW).reset_at == parse_rfc3339("2027-01-20T00:00:00Z")


def test_codex_in_camel_case_with_millisecond_resets_and_its_flags():
    data = {"rateLimit": {"allowed": False, "limitReached": True,
                          "primaryWindow": {"usedPercent": "100", "resetAt": (NOW + 600) * 1000},
                          "secondaryWindow": {"usedPercent": 12, "resetAfterSeconds": 86400}}}
    reading = read_codex(data, "gpt-5-codex", NOW)
    assert not reading.available and reading.reset_at == pytest.approx(NOW + 600)
    assert reading.source == "codex-primary" and reading.fraction == 0.0
    # limit_reached with no window percentages still holds it
    assert not read_codex({"rate_limit": {"limit_reached": True}}, "gpt-5", NOW).available
    # an allowed account whose window reads 100 % is spent all the same
    data = {"rate_limit": {"allowed": True, "primary_window": {"used_percent": 100, "reset_after_seconds": 30}}}
    assert not read_codex(data, "gpt-5", NOW).available


def test_google_buckets_match_the_model_and_an_omitted_fraction_with_a_reset_is_none_left():
    data = {"buckets": [
        {"modelId": "gemini-2.5-pro", "tokenType": "REQUESTS", "resetTime": "2027-01-15T08:00:00Z"},
        {"modelId": "gemini-2.5-flash", "tokenType": "REQUESTS", "remainingFraction": 0.9},
        {"modelId": "gemini-2.5-pro_vertex", "remainingAmount": "0"},
    ]}
    pro = read_gemini_cli(data, "gemini-2.5-pro", NOW)
    assert not pro.available and pro.reset_at == parse_rfc3339("2027-01-15T08:00:00Z")
    assert read_gemini_cli(data, "gemini-2.5-flash", NOW).available
    with pytest.raises(ValueError):
        read_gemini_cli(data, "gemini-3-pro-preview", NOW)  # no bucket for it: not a reading
    models = {"models": {"gemini-3-pro-high": {"quotaInfo": {"remainingFraction": 0.25, "resetTime": "x"}},
                         "gemini-3-flash": {"displayName": "no quota info"}}}
    high = read_antigravity(models, "gemini-3-pro-high", NOW)
    assert high.available and high.fraction == 0.25 and high.reset_at is None
    with pytest.raises(ValueError):
        read_antigravity(models, "gemini-3-flash", NOW)


@pytest.mark.parametrize("body", [None, [], {}, {"rate_limit": "x"}, {"buckets": "x"}, {"models": []}])
def test_an_answer_of_another_shape_is_no_reading(body):
    for read in (read_claude, read_codex, read_gemini_cli, read_antigravity):
        with pytest.raises((ValueError, TypeError)):
            read(body, "m", NOW)


def test_the_call_each_kind_gets():
    assert set(QUOTA_CALLS) == {"claude", "codex", "gemini-cli", "antigravity"}
    for kind in QUOTA_CALLS:
        assert call_for(kind, "quota") == call_for(kind, "unauthorized") == "usage"
    for kind in ("claude-api-key", "gemini-api-key"):
        assert call_for(kind, "unauthorized") == call_for(kind, "connect") == "count"
        assert call_for(kind, "quota") == "request"
    assert call_for("openai-compatibility", "unauthorized") == call_for("codex-api-key", "quota") == "request"
