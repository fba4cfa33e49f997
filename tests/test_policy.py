"""The pure policy: cooldown table, error classes, retry waits, model names."""

import pytest

from cliproxyd.conductor.policy import (
    PROTOCOL_COOLDOWN,
    TRANSIENT_COOLDOWN,
    ModelState,
    apply_failure,
    apply_success,
    is_model_support_error,
    is_request_invalid,
    next_quota_cooldown,
    retry_wait,
)
from cliproxyd.modelnames import compile_exclusions, is_excluded, parse_model, suffix_effort

NOW = 1_000_000.0


@pytest.mark.parametrize(
    "status, message, cooldown, reason",
    [
        (401, "bad key", 30 * 60, "unauthorized"),
        (402, "pay up", 30 * 60, "payment_required"),
        (403, "forbidden", 30 * 60, "payment_required"),
        (404, "no such model", 12 * 3600, "not_found"),
        (408, "timeout", 60, "transient"),
        (500, "oops", 60, "transient"),
        (502, "bad gateway", 60, "transient"),
        (503, "overloaded", 60, "transient"),
        (504, "gateway timeout", 60, "transient"),
        (529, "overloaded_error", 60, "transient"),
        (400, "The requested model is not supported", 12 * 3600, "model_not_supported"),
        (422, "model_not_supported", 12 * 3600, "model_not_supported"),
        (400, "not available for your plan", 12 * 3600, "model_not_supported"),
    ],
)
def test_the_cooldown_table(status, message, cooldown, reason):
    state = apply_failure(ModelState(), NOW, status, message, None, disable_cooling=False)
    assert state.next_retry_at == NOW + cooldown
    assert state.reason == reason
    assert state.blocked(NOW) and state.blocked(NOW + cooldown - 0.001)
    assert not state.blocked(NOW + cooldown)


@pytest.mark.parametrize("status", [400, 409, 418, 0])
def test_other_failures_are_recorded_without_blocking(status):
    state = apply_failure(ModelState(), NOW, status, "nope", None, disable_cooling=False)
    assert state.unavailable and state.next_retry_at is None
    assert not state.blocked(NOW)


@pytest.mark.parametrize(
    "kind, cooldown",
    [("timeout", 60), ("connect", 30), ("broken", None), ("empty_stream", None), ("http", None)],
)
def test_failures_without_a_status_cool_when_the_upstream_hung_or_was_unreachable(kind, cooldown):
    state = apply_failure(ModelState(), NOW, 0, "no answer", None, False, kind)
    assert state.unavailable and state.last_status is None
    if cooldown is None:
        assert state.next_retry_at is None and state.reason == "error"
    else:
        assert state.next_retry_at == NOW + cooldown and state.reason == kind
        assert state.blocked(NOW + cooldown - 0.001) and not state.blocked(NOW + cooldown)
    # disable-cooling removes them, as it does the transient cooldown
    assert apply_failure(ModelState(), NOW, 0, "no answer", None, True, kind).next_retry_at is None


def test_the_kind_does_not_change_an_answer_with_a_status():
    for kind in ("timeout", "connect"):
        assert apply_failure(ModelState(), NOW, 401, "x", None, False, kind).next_retry_at == NOW + 1800
        assert apply_failure(ModelState(), NOW, 409, "x", None, False, kind).next_retry_at is None


def test_429_with_a_hint_uses_the_hint_and_keeps_the_backoff_level():
    state = ModelState(backoff_level=3)
    state = apply_failure(state, NOW, 429, "slow down", 42.0, disable_cooling=True)
    assert state.next_retry_at == NOW + 42
    assert state.backoff_level == 3
    assert state.quota_exceeded and state.reason == "quota"


def test_429_without_a_hint_doubles_from_one_second_up_to_thirty_minutes():
    state, seen = ModelState(), []
    for _ in range(14):
        state = apply_failure(state, NOW, 429, "quota", None, disable_cooling=False)
        seen.append(state.next_retry_at - NOW)
    assert seen[:5] == [1, 2, 4, 8, 16]
    assert seen[-1] == 30 * 60 and max(seen) == 30 * 60
    assert next_quota_cooldown(11, False) == (30 * 60, 11)  # the level stops at the cap


def test_success_clears_state_and_backoff():
    state = apply_failure(ModelState(backoff_level=4), NOW, 429, "quota", None, False)
    cleared = apply_success(state, NOW + 1)
    assert cleared == ModelState(updated_at=NOW + 1)


@pytest.mark.parametrize("status", [502, 0, 404, 429, 401])
def test_a_protocol_fault_cools_for_seconds_whatever_its_status(status):
    """A cut, truncated or unfinished answer says nothing about the credential: it never locks the model out."""
    state = apply_failure(ModelState(), NOW, status, "upstream stream ended before its final event", None, False,
                          protocol=True)
    assert (state.next_retry_at, state.reason, state.backoff_level) == (NOW + PROTOCOL_COOLDOWN, "protocol", 0)
    assert PROTOCOL_COOLDOWN < TRANSIENT_COOLDOWN
    assert apply_failure(ModelState(), NOW, status, "x", None, True, protocol=True).next_retry_at is None


def test_disable_cooling_removes_hintless_429_and_transient_cooldowns_only():
    assert apply_failure(ModelState(), NOW, 503, "x", None, True).next_retry_at is None
    hintless = apply_failure(ModelState(), NOW, 429, "x", None, True)
    assert hintless.next_retry_at is None and hintless.backoff_level == 0
    assert apply_failure(ModelState(), NOW, 429, "x", 5.0, True).next_retry_at == NOW + 5
    assert apply_failure(ModelState(), NOW, 401, "x", None, True).next_retry_at == NOW + 1800
    assert apply_failure(ModelState(), NOW, 404, "x", None, True).next_retry_at == NOW + 43200


def test_request_invalid_and_model_support():
    assert is_request_invalid(400, '{"error":{"type":"invalid_request_error"}}')
    assert is_request_invalid(422, "anything")
    assert not is_request_invalid(400, "some other 400")
    assert not is_request_invalid(400, "invalid_request_error: model_not_supported")
    assert not is_request_invalid(422, "The requested model is unavailable")
    assert is_model_support_error(422, "Unsupported model")
    assert not is_model_support_error(404, "model not supported")


def test_retry_wait():
    assert retry_wait([5.0, 3.0], 10) == 3.0
    assert retry_wait([15.0], 10) is None
    assert retry_wait([], 10) is None
    assert retry_wait([1.0], 0) is None  # max-retry-interval 0: no rounds
    assert retry_wait([-0.5, 4.0], 10) == 0.0  # ended since the last pick: go again at once


@pytest.mark.parametrize(
    "name, base, suffix",
    [("gpt-5(high)", "gpt-5", "high"), ("m(8192)", "m", "8192"), ("plain", "plain", ""),
     ("a(b)(c)", "a(b)", "c"), ("(x)", "(x)", ""), ("odd(", "odd(", "")],
)
def test_thinking_suffix_parsing(name, base, suffix):
    parsed = parse_model(name)
    assert (parsed.base, parsed.suffix) == (base, suffix)


@pytest.mark.parametrize(
    "suffix, effort",
    [("high", "high"), ("HIGH", "high"), ("512", "minimal"), ("1024", "low"), ("8192", "medium"),
     ("20000", "high"), ("100000", "xhigh"), ("none", "none"), ("0", "none"), ("auto", None), ("-1", None),
     ("bogus", None)],
)
def test_suffix_to_reasoning_effort(suffix, effort):
    assert suffix_effort(suffix) == effort


def test_exclusion_wildcards():
    ex = compile_exclusions(["gpt-3*", "*-preview", "*mini*", "exact-model"])
    for model in ("gpt-3.5-turbo", "gemini-2.5-pro-preview", "o4-MINI-high", "Exact-Model"):
        assert is_excluded(ex, model), model
    for model in ("gpt-4o", "exact-model-2", "preview-model"):
        assert not is_excluded(ex, model), model
    assert not is_excluded(compile_exclusions([]), "anything")


def test_retry_hints_from_headers_and_bodies():
    import json as _json

    from cliproxyd.executors.upstreams import parse_retry_after, retry_hint_from_body

    assert parse_retry_after(b"7", NOW) == 7
    assert parse_retry_after(b"Thu, 01 Jan 1970 00:00:10 GMT", 4.0) == 6
    assert parse_retry_after(b"soon", NOW) is None and parse_retry_after(None, NOW) is None
    gemini = {"error": {"code": 429, "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                                  "retryDelay": "12.5s"}]}}
    assert retry_hint_from_body(_json.dumps(gemini).encode(), NOW) == 12.5
    assert retry_hint_from_body(b'{"error":{"type":"usage_limit_reached","resets_in_seconds":90}}', NOW) == 90
    assert retry_hint_from_body(b'{"error":{"resets_at":%d}}' % (NOW + 30), NOW) == 30
    assert retry_hint_from_body(b'{"error":{"message":"no hint"}}', NOW) is None
    assert retry_hint_from_body(b"not json", NOW) is None


def test_a_retry_hint_in_the_body_sets_the_cooldown():
    from tests.conftest import Harness

    h = Harness()
    original = h.upstream._error

    def gemini_style(request, fmt, status, message, kind, code=None):
        request.setResponseCode(status)
        return b'{"error":{"code":429,"message":"quota","details":[{"retryDelay":"40s"}]}}'

    h.upstream._error = gemini_style
    h.upstream.script("sk-up-1", "status:429")
    h.chat()
    state = h.state.model_state(h.creds[0].id, "gpt-4o-mini")
    assert state.next_retry_at == h.clock.seconds() + 40
    h.upstream._error = original


def test_oauth_model_alias_renames_or_forks_models():
    from cliproxyd.config.model import ModelAlias
    from cliproxyd.credentials.model import build_routes, oauth_alias_models

    pairs = oauth_alias_models(
        ["gemini-2.5-pro", "Gemini-2.5-Flash", "other"],
        [ModelAlias("gemini-2.5-pro", "g-pro"), ModelAlias("gemini-2.5-flash", "g-flash", fork=True)],
    )
    assert pairs == [("gemini-2.5-pro", "g-pro"), ("Gemini-2.5-Flash", "Gemini-2.5-Flash"),
                     ("Gemini-2.5-Flash", "g-flash"), ("other", "other")]
    routes = {r.name: r.upstream for r in build_routes(pairs, "", False)}
    assert routes["g-pro"] == ("gemini-2.5-pro",) and "gemini-2.5-pro" not in routes
    assert routes["g-flash"] == routes["Gemini-2.5-Flash"] == ("Gemini-2.5-Flash",)
