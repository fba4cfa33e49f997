"""
Seed PR 002 (model-support fallback): one test per defect its reviews named.

A 400/422 saying the model is not supported for a key is not a request
error: the request falls through to the next pool member or credential, and
that (credential, upstream model) is suspended for 12 hours.
"""

from twisted.internet.defer import Deferred

from cliproxyd.conductor.conductor import Conductor, ConductorSettings
from cliproxyd.replies import Reply, UpstreamError
from tests.conftest import decode_request
from tests.conftest import CountingExecutor, Harness, config_data, sse_payloads

POOL = [{"name": "up-a", "alias": "pool"}, {"name": "up-b", "alias": "pool"}]
TWELVE_HOURS = 12 * 3600


def test_model_support_400_and_422_fall_through_to_the_next_credential():
    for code in (400, 422):
        h = Harness()
        h.upstream.script("sk-up-1", f"unsupported:{code}")
        status, _, _ = h.chat()
        assert status == 200, code
        assert h.keys_seen() == ["sk-up-1", "sk-up-2"]
        state = h.state.model_state(h.creds[0].id, "gpt-4o-mini")
        assert state.reason == "model_not_supported"
        assert state.next_retry_at == h.clock.seconds() + TWELVE_HOURS


def test_pool_suspension_is_kept_on_the_member_and_survives_another_members_success():
    """Review P1: the suspension was keyed to the alias, so the next success cleared it."""
    h = Harness(config_data(keys=("only",), models=POOL))
    h.upstream.script("only", "unsupported", "ok")
    assert h.chat(model="pool")[0] == 200
    assert [s.model for s in h.upstream.seen] == ["up-a", "up-b"]
    for _ in range(6):
        assert h.chat(model="pool")[0] == 200
    assert [s.model for s in h.upstream.seen][2:] == ["up-b"] * 6
    cred = h.creds[0].id
    assert h.state.model_state(cred, "up-a").blocked(h.clock.seconds())
    h.clock.advance(TWELVE_HOURS)
    h.upstream.seen.clear()
    h.chat(model="pool"), h.chat(model="pool")
    assert sorted(s.model for s in h.upstream.seen) == ["up-a", "up-b"]


def test_pool_suspension_also_holds_on_the_stream_path():
    h = Harness(config_data(keys=("only",), models=POOL))
    h.upstream.script("only", "unsupported", "ok")
    code, _, body = h.chat(model="pool", stream=True)
    assert code == 200 and sse_payloads(body)[-1] == "[DONE]"
    for _ in range(3):
        h.chat(model="pool", stream=True)
    assert [s.model for s in h.upstream.seen] == ["up-a", "up-b", "up-b", "up-b", "up-b"]


def test_a_fully_blocked_pool_credential_does_not_burn_the_retry_budget():
    """Review: a credential whose every pool member is suspended must not count toward max-retry-credentials."""
    h = Harness(config_data(keys=("first", "second"), models=POOL, routing={"strategy": "fill-first"},
                            **{"max-retry-credentials": 1}))
    h.upstream.script("first", "unsupported")
    # The first request spends its one credential on "first" (both members unsupported).
    assert h.chat(model="pool")[0] == 400
    assert [s.key for s in h.upstream.seen] == ["first", "first"]
    # Now every member of "first" is suspended: it is skipped without counting,
    # so the one credential this request may try is "second".
    h.upstream.seen.clear()
    assert h.chat(model="pool")[0] == 200
    assert [s.key for s in h.upstream.seen] == ["second"]


Counting = CountingExecutor


def _count(conductor, model="gpt-4o-mini"):
    d = Deferred.fromCoroutine(conductor.count(decode_request(
        b'{"model":"%s","messages":[{"role":"user","content":"x"}]}' % model.encode())))
    d.addErrback(lambda f: f.value)
    return d.result


def test_the_count_path_records_model_support_failures():
    """Review P2: counting fell through but never marked the unsupported key, so every count retried it."""
    h = Harness()
    unsupported = UpstreamError("http", "The requested model is not supported", status=400)
    counting = Counting([unsupported, "remote", "remote", "remote"])
    conductor = Conductor(h.creds, counting, h.state, h.clock, ConductorSettings(strategy="fill-first"))
    for _ in range(3):
        assert isinstance(_count(conductor), Reply)
    assert counting.calls == ["sk-up-1", "sk-up-2", "sk-up-2", "sk-up-2"]


def test_a_local_token_count_does_not_clear_a_suspension():
    """Review P1: a successful local count reset the model state and routed traffic back to a suspended key."""
    h = Harness(config_data(keys=("only",)))
    cred = h.creds[0]
    h.upstream.script("only", "unsupported", "ok")
    assert h.chat()[0] == 400  # the only key: the model-support error is what the client gets
    conductor = Conductor(h.creds, Counting(["local"]), h.state, h.clock)
    before = h.state.model_state(cred.id, "gpt-4o-mini")
    assert before.blocked(h.clock.seconds())
    # A pick skips a suspended credential, so clear the way: expire the block
    # but keep the record, as a local count after the window would see it.
    h.clock.advance(TWELVE_HOURS)
    assert isinstance(_count(conductor), Reply)
    after = h.state.model_state(cred.id, "gpt-4o-mini")
    assert after == before  # recorded as a count, state untouched


def test_retry_waits_consider_pooled_members_not_the_alias():
    """Review P2: with every pool member cooling, the wait looked at the alias, found nothing, and gave up."""
    h = Harness(config_data(keys=("only",), models=POOL, **{"request-retry": 1, "max-retry-interval": 10}))
    h.upstream.script("only", "status:429:4", "status:503", "ok")
    code, _, _ = h.chat(model="pool", advance=0.5)
    assert code == 200
    assert 4 <= h.clock.seconds() < 5


def test_a_stream_bootstrap_failure_continues_rotation_when_another_key_can_run():
    """Follow-up in the PR: a pre-first-byte stream failure moves on instead of ending the request."""
    for behaviour in ("unsupported", "cut:0", "error-event", "status:503"):
        h = Harness()
        h.upstream.script("sk-up-1", behaviour)
        code, _, body = h.chat(stream=True)
        assert code == 200, behaviour
        assert sse_payloads(body)[-1] == "[DONE]", behaviour
        assert h.keys_seen() == ["sk-up-1", "sk-up-2"], behaviour
