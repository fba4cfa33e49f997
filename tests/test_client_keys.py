"""
client-keys on the whole request path (in memory, on a Clock): scopes are
403s and limits 429s with Retry-After in the client's own format, model
lists show what the key may use, token limits count reported usage, and
api-keys stay as they were.
"""

from __future__ import annotations

import hashlib
import json

import bcrypt
import pytest

from tests.conftest import UPSTREAM, Harness, config_data, sse_payloads

ROOT = UPSTREAM.removesuffix("/v1")


def sha(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


CLIENT_KEYS = [
    {"name": "scoped", "key": "sk-scoped", "models": ["gpt-4o*"], "excluded-models": ["gpt-4o-mini"]},
    {"name": "hashed", "key": sha("sk-hashed"), "rpm": 2},
    {"name": "claude-only", "key": "sk-claude-only", "providers": ["claude"]},
    {"name": "budget", "key": "sk-budget", "tpm": 1000, "daily-tokens": 120},
    {"name": "off", "key": "sk-off", "disabled": True},
    {"name": "old", "key": "sk-old", "expires": "2020-01-01T00:00:00Z"},
    {"name": "pair", "key": "sk-pair", "max-parallel": 1},
]


def harness(**extra) -> Harness:
    data = config_data(**{
        "api-keys": ["sk-full"],
        "client-keys": extra.pop("client_keys", CLIENT_KEYS),
        "claude-api-key": [{"api-key": "sk-c", "base-url": ROOT,
                            "models": [{"name": "claude-sim", "alias": "claude-x"}]}],
        **extra,
    })
    h = Harness(data)
    h.clock.advance(1_800_000_000)  # a time after the expired key's
    return h


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def model_ids(body: bytes) -> list[str]:
    data = json.loads(body)
    return sorted(m.get("id") or m.get("name", "").removeprefix("models/") for m in
                  data.get("data") or data.get("models"))


@pytest.fixture
def h():
    return harness()


def test_api_keys_keep_full_access_beside_client_keys(h):
    assert h.chat("gpt-4o-mini", headers=bearer("sk-full"))[0] == 200
    _, _, body = h.request("GET", "/v1/models", headers=bearer("sk-full"))
    assert model_ids(body) == ["claude-x", "gpt-4o", "gpt-4o-mini"]


def test_a_model_outside_the_scope_is_a_403_naming_it(h):
    assert h.chat("gpt-4o", headers=bearer("sk-scoped"))[0] == 200
    before = len(h.upstream.seen)
    status, _, body = h.chat("gpt-4o-mini", headers=bearer("sk-scoped"))
    assert status == 403
    err = json.loads(body)["error"]
    assert err["code"] == "model_not_allowed" and "'gpt-4o-mini'" in err["message"] and "scoped" in err["message"]
    assert len(h.upstream.seen) == before  # nothing was sent upstream


def test_model_lists_show_only_what_the_key_may_use(h):
    _, _, body = h.request("GET", "/v1/models", headers=bearer("sk-scoped"))
    assert model_ids(body) == ["gpt-4o"]
    _, _, body = h.request("GET", "/v1/models", headers={**bearer("sk-claude-only"), "anthropic-version": "1"})
    assert model_ids(body) == ["claude-x"]
    _, _, body = h.request("GET", "/v1beta/models", headers={"x-goog-api-key": "sk-scoped"})
    assert model_ids(body) == ["gpt-4o"]
    assert h.request("GET", "/v1/models/gpt-4o-mini", headers=bearer("sk-scoped"))[0] == 404
    assert h.request("GET", "/v1/models/gpt-4o", headers=bearer("sk-scoped"))[0] == 200


def test_providers_limit_what_may_serve_the_key(h):
    status, _, body = h.chat("gpt-4o", headers=bearer("sk-claude-only"))
    assert status == 403
    err = json.loads(body)["error"]
    assert err["code"] == "provider_not_allowed" and "sim" in err["message"]
    status, _, _ = h.request("POST", "/v1/messages", {"model": "claude-x", "max_tokens": 10,
                                                      "messages": [{"role": "user", "content": "hi"}]},
                             headers={"x-api-key": "sk-claude-only"})
    assert status == 200


def test_the_conductor_skips_credentials_of_providers_the_key_may_not_use():
    # One model served by two providers: the key may use only one of them.
    h2 = Harness(config_data(**{
        "client-keys": [{"name": "c", "key": "sk-c-only", "providers": ["claude"]}],
        "openai-compatibility": [{"name": "sim", "base-url": UPSTREAM, "api-key-entries": [{"api-key": "sk-o"}],
                                  "models": [{"name": "shared"}]}],
        "claude-api-key": [{"api-key": "sk-c", "base-url": ROOT, "models": [{"name": "shared"}]}],
    }))
    for _ in range(3):
        assert h2.chat("shared", headers=bearer("sk-c-only"))[0] == 200
    assert set(h2.keys_seen()) == {"sk-c"}


def test_a_hashed_key_is_accepted_and_rpm_is_a_429_with_retry_after(h):
    assert h.chat("gpt-4o", headers=bearer("sk-hashed"))[0] == 200
    h.clock.advance(20)
    assert h.chat("gpt-4o", headers=bearer("sk-hashed"))[0] == 200
    h.clock.advance(10)
    status, headers, body = h.chat("gpt-4o", headers=bearer("sk-hashed"))
    assert status == 429
    assert headers.getRawHeaders("retry-after") == ["30"]
    err = json.loads(body)["error"]
    assert err["code"] == "client_key_limit" and err["limit"] == "rpm" and err["type"] == "rate_limit_error"
    h.clock.advance(30)
    assert h.chat("gpt-4o", headers=bearer("sk-hashed"))[0] == 200
    # the hash itself is not a key
    assert h.chat("gpt-4o", headers=bearer(sha("sk-hashed")))[0] == 401


def test_a_bcrypt_hashed_key_is_checked_once_and_remembered():
    hashed = bcrypt.hashpw(b"sk-bcrypt", bcrypt.gensalt(4)).decode()
    h = harness(client_keys=[{"name": "b", "key": hashed}])
    calls = []
    real = bcrypt.checkpw

    def counting(*a):
        calls.append(a)
        return real(*a)

    bcrypt.checkpw = counting
    try:
        assert h.chat("gpt-4o", headers=bearer("sk-bcrypt"))[0] == 200
        assert h.chat("gpt-4o", headers=bearer("sk-bcrypt"))[0] == 200
        assert h.chat("gpt-4o", headers=bearer("sk-wrong"))[0] == 401
        assert h.chat("gpt-4o", headers=bearer("sk-wrong"))[0] == 401
    finally:
        bcrypt.checkpw = real
    assert len(calls) == 2  # one for each presented key, whatever the outcome


def test_disabled_and_expired_keys_are_refused(h):
    status, _, body = h.chat("gpt-4o", headers=bearer("sk-off"))
    assert status == 401 and "disabled" in json.loads(body)["error"]["message"]
    status, _, body = h.chat("gpt-4o", headers=bearer("sk-old"))
    assert status == 401 and "expired" in json.loads(body)["error"]["message"]


def test_token_limits_count_reported_usage_and_refuse_until_the_day_ends(h):
    status, _, body = h.chat("gpt-4o", headers=bearer("sk-budget"))
    assert status == 200
    used = json.loads(body)["usage"]["total_tokens"]
    usage = h.state.key_usage("budget")
    assert usage.tokens == used and usage.day_tokens == used
    # a stream: counted at what its last usage event said
    status, _, body = h.chat("gpt-4o", stream=True, headers=bearer("sk-budget"),
                             stream_options={"include_usage": True})
    assert status == 200
    reported = [p["usage"]["total_tokens"] for p in sse_payloads(body) if isinstance(p, dict) and p.get("usage")]
    assert reported
    assert h.state.key_usage("budget").day_tokens == used + reported[-1]
    while True:
        status, headers, body = h.chat("gpt-4o", headers=bearer("sk-budget"))
        if status != 200:
            break
    assert status == 429
    assert json.loads(body)["error"]["limit"] == "daily-tokens"
    assert int(headers.getRawHeaders("retry-after")[0]) > 0


def test_errors_come_in_the_clients_own_format(h):
    status, headers, body = h.request("POST", "/v1/messages", {"model": "gpt-4o-mini", "max_tokens": 5,
                                                               "messages": [{"role": "user", "content": "x"}]},
                                      headers={"x-api-key": "sk-scoped"})
    data = json.loads(body)
    assert status == 403 and data["type"] == "error" and data["error"]["type"] == "permission_error"
    body_g = {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}
    status, _, body = h.request("POST", "/v1beta/models/gpt-4o-mini:generateContent", body_g,
                                headers={"x-goog-api-key": "sk-scoped"})
    err = json.loads(body)["error"]
    assert status == 403 and err["status"] == "PERMISSION_DENIED"
    for _ in range(2):
        h.request("POST", "/v1/responses", {"model": "gpt-4o", "input": "x"}, headers=bearer("sk-hashed"))
    status, headers, body = h.request("POST", "/v1/responses", {"model": "gpt-4o", "input": "x"},
                                      headers=bearer("sk-hashed"))
    assert status == 429 and headers.getRawHeaders("retry-after")
    assert json.loads(body)["error"]["code"] == "client_key_limit"


def test_counts_are_scoped_too(h):
    status, _, _ = h.request("POST", "/v1/messages/count_tokens",
                             {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
                             headers={"x-api-key": "sk-scoped"})
    assert status == 403


def test_the_records_survive_a_restart_through_the_state_snapshot(h):
    for _ in range(2):
        h.chat("gpt-4o", headers=bearer("sk-hashed"))
    data = json.loads(json.dumps(h.state.snapshot(h.clock.seconds())))
    again = harness()
    again.clock.advance(h.clock.seconds() - again.clock.seconds() + 5)
    assert again.state.restore(data, again.clock.seconds()) == []
    status, headers, _ = again.chat("gpt-4o", headers=bearer("sk-hashed"))
    assert status == 429 and headers.getRawHeaders("retry-after") == ["55"]


def test_max_parallel_refuses_while_a_request_runs_and_a_stream_is_estimated_as_it_goes(h):
    h.upstream.script("sk-up-1", "slow:5")
    h.upstream.script("sk-up-2", "slow:5")
    body = json.dumps({"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    running = h.front.request("POST", "http://proxy.test/v1/chat/completions", data=body.encode(),
                              headers=bearer("sk-pair"))
    h.flush()
    h.clock.advance(5)  # the stream's first content is in: it is being relayed
    h.flush()
    pair = next(k for k in h.generation.config.client_keys if k.name == "pair")
    assert h.daemon.frontend.keys.report(pair)["running"] == 1
    status, headers, body_ = h.chat("gpt-4o", headers=bearer("sk-pair"))
    assert status == 429 and headers.getRawHeaders("retry-after") == ["1"]
    assert json.loads(body_)["error"]["limit"] == "max-parallel"
    response = h.settle(running, advance=5)
    h.settle(h.front.content(response), advance=5)
    assert h.daemon.frontend.keys.report(pair)["running"] == 0
    assert h.chat("gpt-4o", advance=5, headers=bearer("sk-pair"))[0] == 200


def test_a_running_stream_counts_against_tpm_at_its_growing_estimate():
    h = harness(client_keys=[{"name": "t", "key": "sk-t", "tpm": 100000}])
    h.upstream.script("sk-up-1", "slow:5")
    h.upstream.script("sk-up-2", "slow:5")
    key = h.generation.config.client_keys[0]
    meter = h.daemon.frontend.keys
    body = json.dumps({"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    running = h.front.request("POST", "http://proxy.test/v1/chat/completions", data=body.encode(),
                              headers=bearer("sk-t"))
    h.flush()
    at_start = meter.report(key)["running-estimate"]
    assert at_start == (len(body) + 3) // 4
    h.clock.advance(5)
    h.flush()
    h.clock.advance(5)
    h.flush()
    assert meter.report(key)["running-estimate"] > at_start  # bytes sent raise it
    response = h.settle(running, advance=5)
    h.settle(h.front.content(response), advance=5)
    report = meter.report(key)
    assert report["running-estimate"] == 0 and report["tokens"] > 0
