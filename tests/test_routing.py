"""Round-robin, fill-first and failover before the first byte, in memory."""

import json

import pytest
from twisted.logger import capturedLogs

from tests.conftest import Harness, config_data, sse_payloads


def test_round_robin_alternates_between_keys(harness):
    for _ in range(4):
        assert harness.chat()[0] == 200
    assert harness.keys_seen() == ["sk-up-1", "sk-up-2", "sk-up-1", "sk-up-2"]


def test_fill_first_always_starts_with_the_first_key():
    h = Harness(config_data(routing={"strategy": "fill-first"}))
    for _ in range(3):
        h.chat()
    assert h.keys_seen() == ["sk-up-1"] * 3


def test_fill_first_moves_on_when_the_first_key_fails():
    h = Harness(config_data(routing={"strategy": "ff"}))
    h.upstream.script("sk-up-1", "status:503")
    assert h.chat()[0] == 200
    assert h.keys_seen() == ["sk-up-1", "sk-up-2"]


def test_higher_priority_provider_is_used_first_and_lower_is_the_fallback():
    data = config_data(keys=("sk-low",))
    high = dict(data["openai-compatibility"][0], name="high", priority=10,
                **{"api-key-entries": [{"api-key": "sk-high"}]})
    data["openai-compatibility"].append(high)
    h = Harness(data)
    for _ in range(3):
        h.chat()
    assert h.keys_seen() == ["sk-high"] * 3
    h.upstream.script("sk-high", "status:500")
    assert h.chat()[0] == 200
    assert h.keys_seen()[-2:] == ["sk-high", "sk-low"]


def test_each_failure_status_moves_to_the_next_key():
    for status in (429, 500, 502, 503, 504, 401, 403, 408):
        h = Harness()
        h.upstream.script("sk-up-1", f"status:{status}")
        code, _, body = h.chat()
        assert code == 200, status
        assert json.loads(body)["choices"][0]["message"]["content"].endswith("(key ...k-up-2).")
        assert h.keys_seen() == ["sk-up-1", "sk-up-2"]


def test_stream_failures_before_the_first_payload_move_on():
    for behaviour in ("status:429", "cut:0", "error-event"):
        h = Harness()
        h.upstream.script("sk-up-1", behaviour)
        code, _, body = h.chat(stream=True)
        assert code == 200, behaviour
        assert sse_payloads(body)[-1] == "[DONE]"
        assert h.keys_seen() == ["sk-up-1", "sk-up-2"], behaviour


@pytest.mark.parametrize("timeouts, limit", [({"response-seconds": 30}, 30), ({}, 540)])  # by default, 9 min
def test_timeout_before_the_response_moves_on(timeouts, limit):
    h = Harness(config_data(timeouts=timeouts))
    h.upstream.script("sk-up-1", "hang")
    code, _, _ = h.chat(advance=5)
    assert code == 200
    assert h.keys_seen() == ["sk-up-1", "sk-up-2"]
    assert limit <= h.clock.seconds() < limit + 10


def test_response_seconds_zero_waits_for_a_hanging_key_without_limit():
    h = Harness(config_data(timeouts={"response-seconds": 0}))
    h.upstream.script("sk-up-1", "hang")
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}).encode()
    answers = []
    h.front.request("POST", "http://proxy.test/v1/chat/completions", data=body).addBoth(answers.append)
    for _ in range(48):
        h.clock.advance(3600)
        h.flush()
    assert answers == [] and h.keys_seen() == ["sk-up-1"]


def test_a_key_that_hangs_is_cooled_so_the_next_requests_do_not_wait_for_it():
    h = Harness(config_data(timeouts={"response-seconds": 30}))
    h.upstream.script("sk-up-1", "hang")
    assert h.chat(advance=5)[0] == 200
    state = h.state.model_state(h.creds[0].id, "gpt-4o-mini")
    assert (state.reason, state.next_retry_at) == ("timeout", 30 + 60)
    started = h.clock.seconds()
    for _ in range(3):  # round-robin would put the hanging key first on one of these
        assert h.chat(advance=5)[0] == 200
    assert h.clock.seconds() == started, "no request waited for the hanging key"
    assert h.keys_seen() == ["sk-up-1"] + ["sk-up-2"] * 4


def test_a_stream_silent_before_its_first_payload_cools_its_key():
    h = Harness(config_data(timeouts={"stream-idle-seconds": 20}))
    h.upstream.script("sk-up-1", "stall:0")
    assert h.chat(stream=True, advance=5)[0] == 200
    state = h.state.model_state(h.creds[0].id, "gpt-4o-mini")
    assert state.reason == "timeout" and state.blocked(h.clock.seconds())


def test_stream_that_stays_silent_before_its_first_payload_moves_on():
    h = Harness(config_data(timeouts={"stream-idle-seconds": 20}))
    h.upstream.script("sk-up-1", "stall:0")
    code, _, body = h.chat(stream=True, advance=5)
    assert code == 200
    assert sse_payloads(body)[-1] == "[DONE]"
    assert h.keys_seen() == ["sk-up-1", "sk-up-2"]
    assert 20 <= h.clock.seconds() < 30


def test_when_every_key_fails_the_client_gets_the_last_error_with_retry_after(harness):
    harness.upstream.script("sk-up-1", "status:500")
    harness.upstream.script("sk-up-2", "status:429:7")
    code, headers, body = harness.chat()
    assert code == 429
    assert headers.getRawHeaders(b"retry-after") == [b"7"]
    assert json.loads(body)["error"]["message"] == "simulated failure 429"
    assert harness.keys_seen() == ["sk-up-1", "sk-up-2"]


def test_upstream_auth_failure_is_not_reported_as_the_clients_401(harness):
    harness.upstream.script("sk-up-1", "status:401")
    harness.upstream.script("sk-up-2", "status:401")
    code, _, body = harness.chat()
    assert code == 502
    assert json.loads(body)["error"]["code"] == "upstream_auth_failed"


def test_timeouts_everywhere_give_a_504():
    h = Harness(config_data(timeouts={"response-seconds": 10}))
    h.upstream.script("sk-up-1", "hang")
    h.upstream.script("sk-up-2", "hang")
    code, _, body = h.chat(advance=5)
    assert code == 504
    assert json.loads(body)["error"]["code"] == "upstream_timeout"


def test_an_invalid_request_is_not_retried_on_other_keys(harness):
    harness.upstream.script("sk-up-1", "status:422")
    code, _, _ = harness.chat()
    assert code == 422
    assert harness.keys_seen() == ["sk-up-1"]


def test_max_retry_credentials_caps_distinct_keys_per_request():
    h = Harness(config_data(keys=("k1", "k2", "k3"), **{"max-retry-credentials": 2}))
    for key in ("k1", "k2", "k3"):
        h.upstream.script(key, "status:503")
    code, _, _ = h.chat()
    assert code == 503
    seen = h.keys_seen()
    assert len(seen) == 2 and len(set(seen)) == 2  # two distinct keys, the third never asked


def test_a_key_echoed_in_an_upstream_error_never_reaches_logs_or_client():
    h = Harness(config_data(keys=("sk-secret-one", "sk-secret-two")))
    h.upstream.known_keys = frozenset()  # every key is refused, and echoed back
    original = h.upstream._error

    def echoing(request, fmt, status, message, kind, code=None):
        key = request.getHeader(b"authorization").decode()[7:]
        return original(request, fmt, status, f"{message}: {key}", kind, code)

    h.upstream._error = echoing
    with capturedLogs() as events:
        code, _, body = h.chat()
    assert code == 502
    assert b"sk-secret" not in body
    assert events, "the failover was logged"
    for event in events:
        assert "sk-secret" not in repr(event)
    warnings = [e for e in events if e.get("key")]
    assert {e["key"] for e in warnings} == {c.fingerprint for c in h.creds}


def test_failover_is_logged_with_structured_fields(harness):
    harness.upstream.script("sk-up-1", "status:503")
    with capturedLogs() as events:
        harness.chat()
    [event] = [e for e in events if e.get("status") == 503]
    assert event["provider"] == "sim"
    assert (event["model"], event["upstream"]) == ("gpt-4o-mini", "sim-small")
    assert event["decision"] == "next credential"
    assert event["cred"].startswith("openai-compatibility:sim:")
    assert event["key"].startswith("fp:")


def test_attempts_are_counted_per_credential(harness):
    harness.upstream.script("sk-up-1", "status:503")
    harness.chat()
    first, second = harness.creds
    assert harness.state.stats(first.id).failures == 1
    assert harness.state.stats(first.id).last_status == 503
    assert harness.state.stats(second.id).successes == 1


def test_a_cancelled_request_tries_no_other_key():
    """A client that goes away while the first key hangs must not cost a second upstream request."""
    from twisted.internet.defer import CancelledError, Deferred

    from tests.conftest import decode_request

    for stream in (False, True):
        h = Harness()
        h.upstream.script("sk-up-1", "hang" if not stream else "stall:0")
        req = decode_request(json.dumps(
            {"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "x"}]}
        ).encode())
        d = Deferred.fromCoroutine(h.conductor.execute(req))
        h.flush()
        assert not d.called
        d.cancel()
        h.flush()
        failures = []
        d.addErrback(failures.append)
        assert failures and failures[0].check(CancelledError), stream
        assert h.keys_seen() == ["sk-up-1"], stream
        assert h.upstream.seen[0].disconnected, stream
        assert h.clock.getDelayedCalls() == [], stream
        # The client left: nothing is held against the key, no timeout, no cooldown.
        cred = h.creds[0]
        assert h.state.model_states(cred.id) == {}, stream
        assert h.state.stats(cred.id).failures == 0, stream


def test_a_client_that_leaves_while_its_key_hangs_does_not_cool_the_key():
    """Through the frontend: the client's connection goes before response-seconds is up."""
    h = Harness(config_data(timeouts={"response-seconds": 30}))
    h.upstream.script("sk-up-1", "hang")
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}).encode()
    d = h.front.request("POST", "http://proxy.test/v1/chat/completions", data=body)
    given_up = []
    d.addErrback(given_up.append)
    h.flush()
    h.clock.advance(10)
    d.cancel()  # the client gives up and closes its connection
    h.flush()
    h.clock.advance(60)
    h.flush()
    assert given_up and h.upstream.seen[0].disconnected
    assert h.keys_seen() == ["sk-up-1"]
    assert h.state.model_states(h.creds[0].id) == {}
    assert h.state.stats(h.creds[0].id).failures == 0


def test_debug_logs_which_key_answered_and_is_quiet_otherwise():
    for debug in (False, True):
        h = Harness(config_data(debug=debug))
        h.upstream.script("sk-up-1", "status:503")
        with capturedLogs() as events:
            h.chat()
        answered = [e for e in events if e.get("decision") == "success"]
        if debug:
            [event] = answered
            assert (event["status"], event["key"]) == (200, h.creds[1].fingerprint)
        else:
            assert answered == []
