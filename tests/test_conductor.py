"""
The conductor's rules through the whole in-memory path, on a Clock:
cooldowns, retry rounds, pools, pins, affinity, mixed providers, counting,
streams and restarts.
"""

import json

import attr
from twisted.internet.defer import Deferred

from cliproxyd.assembly import Assembly
from cliproxyd.conductor.conductor import AllCooling, Conductor, ConductorSettings, RequestMeta
from cliproxyd.conductor.policy import ModelState
from cliproxyd.replies import UpstreamError
from tests.conftest import decode_request
from cliproxyd.state import MemoryStateStore
from tests.conftest import CountingExecutor, Harness, config_data


def key_counts(h):
    out = {}
    for key in h.keys_seen():
        out[key] = out.get(key, 0) + 1
    return out


# -- cooldowns ---------------------------------------------------------------------


def test_a_failed_key_cools_for_its_table_time_then_returns():
    h = Harness()
    h.upstream.script("sk-up-1", "status:503", "ok")
    assert h.chat()[0] == 200  # 503 on key 1, answered by key 2
    h.upstream.seen.clear()
    for _ in range(4):
        h.chat()
    assert h.keys_seen() == ["sk-up-2"] * 4  # key 1 cools for 60 s
    h.clock.advance(60)
    h.upstream.seen.clear()
    h.chat()
    h.chat()
    assert sorted(h.keys_seen()) == ["sk-up-1", "sk-up-2"]


def test_a_retry_after_hint_sets_the_cooldown():
    h = Harness()
    h.upstream.script("sk-up-1", "status:429:7", "ok")
    h.chat()
    h.clock.advance(6.9)
    h.upstream.seen.clear()
    h.chat(), h.chat()
    assert h.keys_seen() == ["sk-up-2", "sk-up-2"]
    h.clock.advance(0.1)
    h.upstream.seen.clear()
    h.chat(), h.chat()
    assert "sk-up-1" in h.keys_seen()


def test_cooldown_is_per_model_not_per_key():
    h = Harness()
    h.upstream.script("sk-up-1", "status:503", "ok")
    h.chat(model="gpt-4o-mini")
    h.upstream.seen.clear()
    h.chat(model="gpt-4o"), h.chat(model="gpt-4o")
    assert sorted(h.keys_seen()) == ["sk-up-1", "sk-up-2"]


def test_when_every_key_cools_the_client_gets_model_cooldown_without_an_upstream_call():
    h = Harness()
    h.upstream.script("sk-up-1", "status:429:30")
    h.upstream.script("sk-up-2", "status:429:45")
    assert h.chat()[0] == 429
    h.upstream.seen.clear()
    h.clock.advance(10)
    code, headers, body = h.chat()
    assert code == 429
    assert len(h.upstream.seen) == 0
    err = json.loads(body)["error"]
    assert err["code"] == "model_cooldown"
    assert err["reset_seconds"] == 20 and err["reset_time"] == "20s"
    assert err["provider"] == "sim" and err["model"] == "gpt-4o-mini"
    assert headers.getRawHeaders(b"retry-after") == [b"20"]


def test_disable_cooling_retries_transient_failures_at_once_but_not_auth_failures():
    h = Harness(config_data(**{"disable-cooling": True}))
    h.upstream.script("sk-up-1", "status:503")
    h.chat(), h.chat(), h.chat()
    assert h.keys_seen().count("sk-up-1") >= 2  # still asked: no cooldown
    h2 = Harness(config_data(**{"disable-cooling": True}))
    h2.upstream.script("sk-up-1", "status:401")
    h2.chat(), h2.chat(), h2.chat()
    assert h2.keys_seen().count("sk-up-1") == 1  # 30 minutes, whatever the switch


def test_request_invalid_answers_at_once_and_cools_nothing():
    h = Harness()
    h.upstream.script("sk-up-1", "status:422", "ok")
    assert h.chat()[0] == 422
    assert h.keys_seen() == ["sk-up-1"]
    assert not h.state.model_state(h.creds[0].id, "gpt-4o-mini").blocked(h.clock.seconds())


# -- retry rounds ------------------------------------------------------------------


def retrying(**over):
    return Harness(config_data(**{"request-retry": 1, "max-retry-interval": 10, **over}))


def test_a_failed_round_waits_for_the_nearest_cooldown_then_runs_again():
    h = retrying()
    h.upstream.script("sk-up-1", "status:429:8", "ok")
    h.upstream.script("sk-up-2", "status:429:5", "ok")
    code, _, body = h.chat(advance=1)
    assert code == 200
    assert h.keys_seen() == ["sk-up-1", "sk-up-2", "sk-up-2"]
    assert 5 <= h.clock.seconds() < 6  # waited for key 2, the nearer one


def test_no_round_when_the_wait_is_longer_than_max_retry_interval():
    h = retrying()
    h.upstream.script("sk-up-1", "status:429:30")
    h.upstream.script("sk-up-2", "status:429:20")
    code, headers, _ = h.chat(advance=1)
    assert code == 429 and h.clock.seconds() == 0
    assert headers.getRawHeaders(b"retry-after") == [b"20"]


def test_rounds_stop_after_request_retry_extra_rounds():
    h = retrying(**{"request-retry": 2})
    h.upstream.script("sk-up-1", "status:429:1")
    h.upstream.script("sk-up-2", "status:429:1")
    assert h.chat(advance=0.5)[0] == 429
    assert len(h.keys_seen()) == 6  # three rounds of two


def test_max_retry_interval_zero_means_no_rounds():
    h = retrying(**{"max-retry-interval": 0})
    h.upstream.script("sk-up-1", "status:429:1", "ok")
    h.upstream.script("sk-up-2", "status:429:1", "ok")
    assert h.chat(advance=0.5)[0] == 429
    assert len(h.keys_seen()) == 2


def test_a_credential_request_retry_override_is_honoured():
    h = retrying()
    creds = tuple(attr.evolve(c, request_retry=0) for c in h.creds)
    conductor = Conductor(creds, h.executor, MemoryStateStore(), h.clock,
                          ConductorSettings(request_retry=1, max_retry_interval=10))
    h.upstream.script("sk-up-1", "status:429:2", "ok")
    h.upstream.script("sk-up-2", "status:429:2", "ok")
    d = Deferred.fromCoroutine(conductor.execute(decode_request(
        b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}')))
    failures = []
    d.addErrback(failures.append)
    h.flush()
    h.clock.advance(5)
    h.flush()
    assert failures and failures[0].check(Exception)
    assert len(h.keys_seen()) == 2  # no second round: each credential's own request-retry is 0


def test_waiting_for_a_round_is_cancelled_with_the_request():
    h = retrying()
    h.upstream.script("sk-up-1", "status:429:5")
    h.upstream.script("sk-up-2", "status:429:5")
    d = Deferred.fromCoroutine(h.conductor.execute(decode_request(
        b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}')))
    h.flush()
    assert not d.called and h.clock.getDelayedCalls()
    d.cancel()
    d.addErrback(lambda f: None)
    assert h.clock.getDelayedCalls() == []


# -- pools, suffixes, exclusions -----------------------------------------------------


POOL = [{"name": "up-a", "alias": "pool"}, {"name": "up-b", "alias": "pool"}]


def test_an_alias_pool_rotates_per_credential():
    h = Harness(config_data(keys=("only",), models=POOL))
    for _ in range(4):
        assert h.chat(model="pool")[0] == 200
    assert [s.model for s in h.upstream.seen] == ["up-a", "up-b", "up-a", "up-b"]


def test_a_pool_member_failure_moves_to_the_next_member_and_cools_only_that_member():
    h = Harness(config_data(keys=("only",), models=POOL))
    h.upstream.script("only", "status:503", "ok")
    assert h.chat(model="pool")[0] == 200
    assert [s.model for s in h.upstream.seen] == ["up-a", "up-b"]
    cred = h.creds[0]
    now = h.clock.seconds()
    assert h.state.model_state(cred.id, "up-a").blocked(now)
    assert not h.state.model_state(cred.id, "pool").blocked(now)  # keyed to the member, not the alias
    h.upstream.seen.clear()
    for _ in range(3):
        h.chat(model="pool")
    assert [s.model for s in h.upstream.seen] == ["up-b"] * 3


def test_a_fully_cooling_pool_credential_is_skipped_without_spending_max_retry_credentials():
    h = Harness(config_data(keys=("first", "second"), models=POOL,
                            routing={"strategy": "fill-first"}, **{"max-retry-credentials": 1}))
    now = h.clock.seconds()
    for member in ("up-a", "up-b"):
        h.state.set_model_state(h.creds[0].id, member, ModelState(unavailable=True, next_retry_at=now + 100))
    assert h.chat(model="pool")[0] == 200
    assert h.keys_seen() == ["second"]


def test_retry_waits_consider_pool_member_cooldowns():
    h = Harness(config_data(keys=("only",), models=POOL, **{"request-retry": 1, "max-retry-interval": 10}))
    h.upstream.script("only", "status:429:3", "status:429:6", "ok")
    code, _, _ = h.chat(model="pool", advance=0.5)
    assert code == 200
    assert 3 <= h.clock.seconds() < 4  # the first member back, not "nothing is cooling"


def test_thinking_suffix_routes_by_base_name_and_becomes_reasoning_effort():
    h = Harness()
    captured = []
    original = h.up.request
    h.up.request = lambda method, url, **kw: (captured.append(json.loads(kw["data"])), original(method, url, **kw))[1]
    assert h.chat(model="gpt-4o-mini(high)", reasoning_effort="low")[0] == 200
    assert captured[-1]["model"] == "sim-small" and captured[-1]["reasoning_effort"] == "high"
    h.chat(model="gpt-4o(8192)")
    assert captured[-1]["model"] == "gpt-4o" and captured[-1]["reasoning_effort"] == "medium"


def test_excluded_models_are_not_served():
    data = config_data(models=[{"name": "gpt-4o"}, {"name": "gpt-4o-preview"}, {"name": "o1-mini"}])
    data["openai-compatibility"][0]["excluded-models"] = ["*-preview", "*mini*"]
    h = Harness(data)
    assert h.chat(model="gpt-4o")[0] == 200
    assert h.chat(model="gpt-4o-preview")[0] == 404
    assert h.chat(model="o1-mini")[0] == 404
    assert [m["id"] for m in json.loads(h.request("GET", "/v1/models")[2])["data"]] == ["gpt-4o"]


# -- mixed providers, pins and affinity -----------------------------------------------


def two_providers(**over):
    data = config_data(keys=("a1", "a2"))
    other = dict(data["openai-compatibility"][0], name="other", **{"api-key-entries": [{"api-key": "b1"}]})
    other.update(over)
    data["openai-compatibility"].append(other)
    return data


def test_round_robin_alternates_between_providers_of_one_model():
    h = Harness(two_providers())
    for _ in range(4):
        h.chat()
    providers = ["other" if k == "b1" else "sim" for k in h.keys_seen()]
    assert providers == ["sim", "other", "sim", "other"]


def test_a_higher_priority_provider_is_used_alone_while_it_has_a_ready_credential():
    h = Harness(two_providers(priority=5))
    for _ in range(3):
        h.chat()
    assert h.keys_seen() == ["b1"] * 3
    h.upstream.script("b1", "status:503")
    h.chat()
    assert h.keys_seen()[-2:] == ["b1", "a1"]


def run(h, meta, model="gpt-4o-mini"):
    d = Deferred.fromCoroutine(h.conductor.execute(decode_request(
        json.dumps({"model": model, "messages": [{"role": "user", "content": "x"}]}).encode()), meta))
    return h.settle(d)


def test_a_pinned_request_never_leaves_its_credential():
    h = Harness()
    pinned = RequestMeta(pinned=h.creds[1].id)
    for _ in range(3):
        run(h, pinned)
    assert h.keys_seen() == ["sk-up-2"] * 3
    h.upstream.script("sk-up-2", "status:503")
    try:
        run(h, pinned)
    except Exception as e:
        assert type(e).__name__ == "AllAttemptsFailed"
    assert h.keys_seen()[-1] == "sk-up-2" and "sk-up-1" not in h.keys_seen()
    try:
        run(h, pinned)  # now cooling: an error, not another credential
    except AllCooling:
        pass
    assert "sk-up-1" not in h.keys_seen()


def test_session_affinity_prefers_the_sessions_credential_and_rebinds_when_it_cools():
    h = Harness(config_data(keys=("a", "b", "c"), routing={"session-affinity": True}))
    one = {"X-Session-Affinity": "s-1"}
    for _ in range(3):
        h.chat(headers=one)
    assert h.keys_seen() == ["a"] * 3
    h.upstream.script("a", "status:503")
    assert h.chat(headers=one)[0] == 200
    h.upstream.seen.clear()
    for _ in range(3):
        h.chat(headers=one)
    assert len(set(h.keys_seen())) == 1 and h.keys_seen()[0] != "a"  # moved, and stays


# -- count, streams, restarts ---------------------------------------------------------


Counting = CountingExecutor


def test_a_local_count_is_recorded_but_never_clears_cooldown_state():
    h = Harness(config_data(keys=("only",)))
    counting = Counting([UpstreamError("http", "quota", status=429), "local", UpstreamError("http", "quota", status=429)])
    conductor = Conductor(h.creds, counting, h.state, h.clock)
    req = decode_request(b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}')
    cred = h.creds[0]

    def count():
        d = Deferred.fromCoroutine(conductor.count(req))
        d.addErrback(lambda f: f.value)
        return d.result

    count()
    assert h.state.model_state(cred.id, "gpt-4o-mini").backoff_level == 1
    h.clock.advance(2)
    assert count().local
    assert h.state.model_state(cred.id, "gpt-4o-mini").backoff_level == 1  # not reset by a local count
    assert h.state.stats(cred.id).successes == 1
    count()
    state = h.state.model_state(cred.id, "gpt-4o-mini")
    assert state.next_retry_at - h.clock.seconds() == 2  # the backoff carried on: 1 s, then 2 s


def test_a_stream_is_judged_when_it_ends():
    h = Harness()
    h.upstream.script("sk-up-1", "cut:3")
    h.chat(stream=True)
    cred = h.creds[0]
    stats = h.state.stats(cred.id)
    assert (stats.failures, stats.successes) == (1, 0)
    assert "broke off" in stats.last_error
    h.chat(stream=True)
    assert h.state.stats(h.creds[1].id).successes == 1


def test_cooldowns_survive_a_restart_of_the_conductor():
    h = Harness()
    h.upstream.script("sk-up-1", "status:429:300")
    h.chat()
    snapshot = json.loads(json.dumps(h.state.snapshot(h.clock.seconds())))
    restored = MemoryStateStore()
    restored.restore(snapshot, h.clock.seconds() + 10)
    h.clock.advance(10)
    conductor = Assembly(h.up, h.clock, restored).build(h.config).conductor  # a restarted daemon
    h.upstream.seen.clear()
    for _ in range(3):
        d = Deferred.fromCoroutine(conductor.execute(decode_request(
            b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}')))
        h.settle(d)
    assert h.keys_seen() == ["sk-up-2"] * 3


def test_management_credentials_shows_model_states():
    h = Harness(config_data(**{"remote-management": {"secret-key": "m"}}))
    h.upstream.script("sk-up-1", "status:429:90")
    h.chat()
    h.clock.advance(30)
    status, _, body = h.request("GET", "/v0/management/credentials", headers={"Authorization": "Bearer m"})
    assert status == 200
    first = json.loads(body)["credentials"][0]
    state = first["model_states"]["gpt-4o-mini"]
    assert state["cooling"] and state["reason"] == "quota" and state["retry_in_seconds"] == 60
    assert first["counters"]["failures"] == 1 and first["key"].startswith("fp:")
    assert first["unavailable"] is False  # gpt-4o still serves
