"""
Seed PR 000 (fill-first warmup): the feature, and one test per defect its
reviews named. Time is a Clock; the secondary provider's credentials live
on the simulated upstream like the primary's.
"""

import json

from twisted.internet.defer import Deferred

from cliproxyd.conductor.conductor import RequestMeta
from tests.conftest import decode_request
from tests.conftest import Harness, config_data


def mixed(secondary_keys=("b1",), secondary_models=None, warm=True, strategy="fill-first",
          primary_keys=("a1",), wrap_executor=None, **settings):
    # Providers are ordered by credential count, then name: "sim" comes before "warm".
    warmup = {"enabled": warm, "providers": ["warm"], "ttl-seconds": settings.get("ttl", 60),
              "timeout-seconds": settings.get("timeout", 10)}
    data = config_data(keys=primary_keys, routing={"strategy": strategy, "warmup": warmup})
    second = dict(data["openai-compatibility"][0], name="warm",
                  **{"api-key-entries": [{"api-key": k} for k in secondary_keys]})
    if secondary_models is not None:
        second["models"] = secondary_models
    data["openai-compatibility"].append(second)
    return Harness(data, warmups=True, wrap_executor=wrap_executor)


def warm_status(h):
    """The warmup counters under the running generation's settings, as the management API shows them."""
    return h.warmups.status(h.conductor.settings.warmup)


def warm_requests(h):
    return [s for s in h.upstream.seen if s.key.startswith("b")]


def test_a_warmup_reaches_the_secondary_provider_without_delaying_the_users_answer():
    h = mixed()
    h.upstream.script("b1", "hang")
    code, _, body = h.chat()
    assert code == 200 and "(key ...a1)" in json.loads(body)["choices"][0]["message"]["content"]
    assert h.clock.seconds() == 0  # answered at once, the warmup still hanging
    [warm] = warm_requests(h)
    assert warm.model == "sim-small" and not warm.stream
    assert warm_status(h)["in_flight"] == ["warm"]


def test_a_successful_warmup_is_counted_and_its_ttl_holds():
    h = mixed(ttl=60)
    h.chat()
    assert warm_status(h)["succeeded"] == 1
    for _ in range(3):
        h.chat()
    assert len(warm_requests(h)) == 1  # within the TTL
    h.clock.advance(60)
    h.chat()
    assert len(warm_requests(h)) == 2


def test_ttl_entries_are_pruned():
    """Review: the TTL map had no clean-up and grew without bound."""
    h = mixed(ttl=30)
    h.chat()
    assert warm_status(h)["reserved"] == 1
    h.clock.advance(30)
    assert warm_status(h)["reserved"] == 0


def test_one_warmup_in_flight_per_provider():
    """Review: a goroutine per pick fanned out under load."""
    h = mixed()
    h.upstream.script("b1", "hang")
    for _ in range(5):
        h.chat()
    assert len(warm_requests(h)) == 1
    assert warm_status(h)["skipped_in_flight"] == 4


def test_a_warmup_has_its_own_timeout_and_a_timeout_releases_the_reservation():
    """Review: detached warmups had no deadline and could pile up."""
    h = mixed(timeout=10)
    h.upstream.script("b1", "hang", "ok")
    h.chat()
    h.clock.advance(10)
    h.flush()
    status = warm_status(h)
    assert status["in_flight"] == [] and status["failed"] == 1
    assert warm_requests(h)[0].disconnected  # the hanging request was aborted
    h.chat()
    assert len(warm_requests(h)) == 2  # released: warmed again at once


def test_a_non_2xx_warmup_fails_and_releases_its_reservation():
    """Review (blocking): any HTTP answer counted as success and held the TTL for a minute."""
    h = mixed()
    h.upstream.script("b1", "status:429", "ok")
    h.chat()
    assert warm_status(h)["failed"] == 1
    h.chat()
    assert len(warm_requests(h)) == 2
    assert warm_status(h)["succeeded"] == 1


def test_the_ttl_is_per_credential_not_per_provider():
    """Review: a warmup of one credential suppressed the others of the same provider."""
    h = mixed(secondary_keys=("b1", "b2"), primary_keys=("a1", "a2"))
    h.chat()
    # b1 starts cooling for the model; the next credential of the provider is b2.
    h.conductor.scheduler.set_blocked(h.creds[2].id, "gpt-4o-mini", h.clock.seconds() + 600)
    h.chat()
    assert [s.key for s in warm_requests(h)] == ["b1", "b2"]


def test_count_requests_send_no_warmups():
    """Review: the count path shares picking and sent billable warmups."""
    class Counting:
        def __init__(self, real):
            self.execute = real.execute

        async def count_tokens(self, cred, req, upstream):
            from cliproxyd.replies import Reply
            return Reply(200, b"application/json", b"{}", local=True)

    h = mixed(wrap_executor=Counting)
    d = Deferred.fromCoroutine(h.conductor.count(decode_request(
        b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}')))
    h.settle(d)
    assert warm_requests(h) == [] and warm_status(h)["sent"] == 0


def test_pinned_requests_warm_nothing():
    """Review: a pinned request cannot fail over, so warming others is waste."""
    h = mixed()
    d = Deferred.fromCoroutine(h.conductor.execute(decode_request(
        b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}'), RequestMeta(pinned=h.creds[0].id)))
    h.settle(d)
    assert warm_requests(h) == []


def test_warming_does_not_advance_an_alias_pool():
    """Review: the warmup consumed a pool rotation slot before real traffic arrived."""
    pool = [{"name": "up-a", "alias": "gpt-4o-mini"}, {"name": "up-b", "alias": "gpt-4o-mini"}]
    h = mixed(secondary_models=pool)
    h.chat()
    assert [s.model for s in warm_requests(h)] == ["up-a"]
    h.upstream.script("a1", "status:503")  # the primary fails: real traffic reaches the pool
    h.chat()
    assert [s.model for s in warm_requests(h)] == ["up-a", "up-a"]  # the pool's own first turn


def test_the_thinking_suffix_is_stripped_from_the_warmup_model():
    """Review: the suffixed name went upstream and the warmup always failed."""
    h = mixed()
    h.chat(model="gpt-4o-mini(high)")
    [warm] = warm_requests(h)
    assert warm.model == "sim-small"


def test_stopping_cancels_warmups_in_flight():
    h = mixed()
    h.upstream.script("b1", "hang")
    h.chat()
    h.warmups.stopService()
    h.flush()
    assert warm_status(h)["in_flight"] == []
    assert h.clock.getDelayedCalls() == []


def test_no_warmups_unless_enabled_or_with_round_robin():
    h = mixed(warm=False)
    h.chat(), h.chat()
    assert [s.key for s in h.upstream.seen] == ["a1", "a1"]
    rr = mixed(strategy="round-robin")
    rr.chat(), rr.chat()
    assert warm_status(rr)["sent"] == 0


def test_warmup_config_and_status_route():
    from cliproxyd.config import parse_config

    config, warnings = parse_config({"routing": {"strategy": "ff", "warmup": {
        "enabled": True, "providers": ["OpenAI", "other"], "ttl-seconds": 30, "timeout-seconds": 5}}})
    assert warnings == []
    w = config.routing.warmup
    assert (w.enabled, w.providers, w.ttl, w.timeout) == (True, ("openai", "other"), 30, 5)
    h = Harness(config_data(**{"remote-management": {"secret-key": "m"}}))
    status, _, body = h.request("GET", "/v0/management/status", headers={"Authorization": "Bearer m"})
    assert json.loads(body)["warmups"] == {"enabled": False}
