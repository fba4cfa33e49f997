"""
Seed PR 003 (OAuth quota groups): the feature, and one test per defect its
reviews named. The provider is called "antigravity" so the default groups
(Claude family, Gemini family) apply, as they would to Antigravity accounts.
"""

import json

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from cliproxyd.assembly import Assembly
from cliproxyd.conductor.conductor import Conductor
from cliproxyd.conductor.quota import DEFAULT_GROUPS, compile_groups, reaper
from cliproxyd.replies import UpstreamError
from tests.conftest import decode_request
from cliproxyd.state import MemoryStateStore
from tests.conftest import Harness, config_data

MODELS = [{"name": "claude-sonnet-4-5"}, {"name": "claude-opus-4-1"}, {"name": "gemini-2.5-pro"}]
MGMT = {"Authorization": "Bearer m"}


def antigravity(**top):
    data = config_data(keys=("ag-1", "ag-2"), models=MODELS, routing={"strategy": "fill-first"},
                       **{"remote-management": {"secret-key": "m"}}, **top)
    data["openai-compatibility"][0]["name"] = "antigravity"
    return Harness(data)  # the default quota groups apply, as in production


def mgmt(h, method, path, body=None):
    code, _, raw = h.request(method, "/v0/management" + path, body, headers=MGMT)
    return code, json.loads(raw)


def test_a_429_on_one_claude_model_moves_claude_traffic_while_gemini_stays():
    h = antigravity()
    h.upstream.script("ag-1", "status:429:600", "ok")
    assert h.chat(model="claude-sonnet-4-5")[0] == 200  # ag-1 429, ag-2 answers
    h.upstream.seen.clear()
    h.chat(model="claude-opus-4-1")  # another Claude model: the group is suspended on ag-1
    h.chat(model="gemini-2.5-pro")  # Gemini: a different group, stays on ag-1
    assert [(s.key, s.model) for s in h.upstream.seen] == [
        ("ag-2", "claude-opus-4-1"), ("ag-1", "gemini-2.5-pro")]


def test_a_transient_503_stays_model_scoped():
    h = antigravity()
    h.upstream.script("ag-1", "status:503", "ok")
    h.chat(model="claude-sonnet-4-5")
    h.upstream.seen.clear()
    h.chat(model="claude-opus-4-1")
    assert [s.key for s in h.upstream.seen] == ["ag-1"]
    assert mgmt(h, "GET", "/quota-groups")[1]["states"][0]["suspended"] is False


def test_group_suspension_lasts_until_the_upstream_reset_then_the_reaper_forgets_it():
    h = antigravity()
    h.upstream.script("ag-1", "status:429:90", "ok")
    h.chat(model="claude-sonnet-4-5")
    [entry] = [e for e in mgmt(h, "GET", "/quota-groups")[1]["states"]
               if e["auth_id"] == h.creds[0].id and e["group_id"] == "antigravity-claude"]
    assert entry["auto_suspended"] and entry["auto_suspended_until"] == 90
    h.clock.advance(90)
    h.upstream.seen.clear()
    h.chat(model="claude-opus-4-1")
    assert [s.key for s in h.upstream.seen] == ["ag-1"]  # the suspension ended by itself
    # The reaper, not a request, removes the expired record.
    assert len(h.state.group_states()) == 1
    job = reaper(h.state, h.clock)
    job.startService()
    h.clock.advance(30)
    assert h.state.group_states() == []
    job.stopService()
    assert h.clock.getDelayedCalls() == []


def test_manual_suspension_and_lifting_take_effect_at_once():
    """Review P1: manual changes showed in management but routing kept the stale state."""
    h = antigravity()
    cred = h.creds[0].id
    code, entry = mgmt(h, "PATCH", "/quota-groups/manual", {
        "auth_id": cred, "group_id": "antigravity-gemini", "manual_suspended": True,
        "reason": "billing", "updated_by": "ops"})
    assert code == 200 and entry["manual_suspended"] and entry["updated_by"] == "ops"
    h.chat(model="gemini-2.5-pro")
    assert h.keys_seen() == ["ag-2"]
    mgmt(h, "PATCH", "/quota-groups/manual", {"auth_id": cred, "group_id": "antigravity-gemini",
                                              "manual_suspended": False})
    h.chat(model="gemini-2.5-pro")
    assert h.keys_seen() == ["ag-2", "ag-1"]


def test_every_credential_suspended_gives_model_cooldown_without_a_reset_time():
    h = antigravity()
    for cred in h.creds:
        mgmt(h, "PATCH", "/quota-groups/manual", {"auth_id": cred.id, "group_id": "antigravity-gemini",
                                                  "manual_suspended": True})
    code, headers, body = h.chat(model="gemini-2.5-pro")
    assert code == 429 and json.loads(body)["error"]["code"] == "model_cooldown"
    assert json.loads(body)["error"]["reset_seconds"] is None
    assert headers.getRawHeaders(b"retry-after") is None


def test_auto_clear_and_auto_clear_all_keep_manual_suspensions():
    h = antigravity()
    cred = h.creds[0].id
    h.upstream.script("ag-1", "status:429:600")
    h.chat(model="claude-sonnet-4-5"), h.chat(model="gemini-2.5-pro")
    mgmt(h, "PATCH", "/quota-groups/manual", {"auth_id": cred, "group_id": "antigravity-gemini",
                                              "manual_suspended": True, "reason": "hold"})
    code, out = mgmt(h, "PATCH", "/quota-groups/auto-clear", {"auth_id": cred, "group_id": "antigravity-claude"})
    assert (code, out) == (200, {"cleared": ["antigravity-claude"]})
    code, out = mgmt(h, "POST", "/quota-groups/auto-clear-all", {"auth_id": cred})
    assert out == {"cleared": ["antigravity-gemini"]}
    states = {e["group_id"]: e for e in mgmt(h, "GET", "/quota-groups")[1]["states"] if e["auth_id"] == cred}
    assert not states["antigravity-claude"]["suspended"]
    assert states["antigravity-gemini"]["manual_suspended"] and not states["antigravity-gemini"]["auto_suspended"]
    h.upstream.script("ag-1", "ok")
    h.upstream.seen.clear()
    h.chat(model="claude-opus-4-1")
    assert h.keys_seen() == ["ag-1"]  # cleared: back in rotation


def test_management_routes_answer_404_and_400_clearly():
    h = antigravity()
    cred = h.creds[0].id
    assert mgmt(h, "PATCH", "/quota-groups/manual", {"auth_id": "nope", "group_id": "antigravity-claude",
                                                     "manual_suspended": True})[0] == 404
    assert mgmt(h, "PATCH", "/quota-groups/auto-clear", {"auth_id": cred, "group_id": "nope"})[0] == 404
    assert mgmt(h, "PATCH", "/quota-groups/manual", {"auth_id": cred, "group_id": "antigravity-claude",
                                                     "manual_suspended": "yes"})[0] == 400
    assert mgmt(h, "POST", "/quota-groups/auto-clear-all", {})[0] == 400
    code, _, _ = h.request("PATCH", "/v0/management/quota-groups/manual", b"{oops", headers=MGMT)
    assert code == 400


def test_routes_work_when_no_group_applies():
    """Review: handlers dereferenced pieces that were not wired."""
    h = Harness(config_data(**{"remote-management": {"secret-key": "m"}}))
    code, out = mgmt(h, "GET", "/quota-groups")
    # The default groups are configured, as in production, but cover no credential here.
    assert code == 200 and out == {"groups": [g.as_json() for g in compile_groups(DEFAULT_GROUPS)], "states": []}
    assert mgmt(h, "POST", "/quota-groups/auto-clear-all", {"auth_id": h.creds[0].id})[1] == {"cleared": []}


def test_configured_groups_replace_the_defaults():
    h = antigravity(**{"oauth-quota-groups": [{"id": "all-claude", "providers": ["antigravity"],
                                               "models": ["claude-*", "gemini-*"]}]})
    groups = mgmt(h, "GET", "/quota-groups")[1]["groups"]
    assert groups == [{"id": "all-claude", "providers": ["antigravity"], "models": ["claude-*", "gemini-*"]}]
    h.upstream.script("ag-1", "status:429:600", "ok")
    h.chat(model="claude-sonnet-4-5")
    h.upstream.seen.clear()
    h.chat(model="gemini-2.5-pro")
    assert h.keys_seen() == ["ag-2"]


def test_state_survives_a_restart_and_lives_in_the_state_store_not_config():
    """Review: the PR wrote group state into config.yaml, racily and lossily."""
    h = antigravity()
    cred = h.creds[0].id
    h.upstream.script("ag-1", "status:429:600", "ok")
    h.chat(model="claude-sonnet-4-5")
    mgmt(h, "PATCH", "/quota-groups/manual", {"auth_id": cred, "group_id": "antigravity-gemini",
                                              "manual_suspended": True, "reason": "hold", "updated_by": "ops"})
    snapshot = json.loads(json.dumps(h.state.snapshot(h.clock.seconds())))
    store = MemoryStateStore()
    store.restore(snapshot, h.clock.seconds() + 10)
    h.clock.advance(10)
    conductor = Assembly(h.up, h.clock, store).build(h.config).conductor  # a restarted daemon
    h.upstream.seen.clear()
    for model in ("claude-opus-4-1", "gemini-2.5-pro"):
        h.settle(Deferred.fromCoroutine(conductor.execute(decode_request(json.dumps(
            {"model": model, "messages": [{"role": "user", "content": "x"}]}).encode()))))
    assert h.keys_seen() == ["ag-2", "ag-2"]
    assert store.group_state(cred, "antigravity-gemini").manual_reason == "hold"


def test_concurrent_429s_do_not_lose_each_others_update():
    """Review P1: two 429s cloned the same snapshot and the second publish dropped the first."""
    h = antigravity()
    reqs = [decode_request(json.dumps({"model": m, "messages": [{"role": "user", "content": "x"}]}).encode())
            for m in ("claude-sonnet-4-5", "gemini-2.5-pro")]
    h.upstream.script("ag-1", "status:429:100", "status:429:200", "ok")
    ds = [Deferred.fromCoroutine(h.conductor.execute(r)) for r in reqs]
    for d in ds:
        h.settle(d)
    cred = h.creds[0].id
    assert h.state.group_state(cred, "antigravity-claude").auto_until == 100
    assert h.state.group_state(cred, "antigravity-gemini").auto_until == 200


def test_two_conductors_never_share_state():
    """Review P2: the quota runtime was process-global."""
    a, b = antigravity(), antigravity()
    a.upstream.script("ag-1", "status:429:600", "ok")
    a.chat(model="claude-sonnet-4-5")
    b.chat(model="claude-opus-4-1")
    assert b.keys_seen() == ["ag-1"]
    assert b.state.group_states() == []


def test_a_count_404_does_not_suspend_the_credential():
    """Review follow-up: compat upstreams without count_tokens answered 404 and got suspended for hours."""
    h = antigravity()

    class NoCountEndpoint:
        calls = 0

        async def count_tokens(self, cred, req, upstream):
            NoCountEndpoint.calls += 1
            raise UpstreamError("http", "Not Found", status=404)

    conductor = Conductor(h.creds, NoCountEndpoint(), h.state, h.clock, quota_groups=compile_groups(DEFAULT_GROUPS))
    req = decode_request(b'{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"x"}]}')
    for _ in range(2):
        d = Deferred.fromCoroutine(conductor.count(req))
        d.addErrback(lambda f: None)
    now = h.clock.seconds()
    assert all(not h.state.model_state(c.id, "claude-sonnet-4-5").blocked(now) for c in h.creds)
    assert NoCountEndpoint.calls == 4  # both credentials asked, both times


def test_no_hard_coded_attempt_timeout():
    """Review (blocking): a fixed 25 s per-attempt timeout failed slow but healthy answers."""
    h = Harness(config_data())
    h.upstream.script("sk-up-1", "slow:400")
    code, _, _ = h.chat(advance=10)
    assert code == 200 and h.keys_seen() == ["sk-up-1"]  # 400 s is fine: the default limit is longer
    assert 400 < h.config.timeouts.response < 600  # and shorter than the SDKs' own 10 min


def test_the_reaper_loop_survives_an_error():
    clock = Clock()

    class Broken(MemoryStateStore):
        def group_states(self):
            raise RuntimeError("boom")

    job = reaper(Broken(), clock, interval=30)
    job.startService()
    clock.advance(30)
    clock.advance(30)
    assert job.failures == 2 and job.running
    assert len(clock.getDelayedCalls()) == 1  # the next run is scheduled
    job.stopService()
