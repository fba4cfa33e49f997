"""
Routing keys of CLIProxyAPI's config.example.yaml, through the in-memory
path on a Clock: weighted-round-robin and weight, disabled, the transient
cooldown, per-entry disable-cooling and request-retry, request-scoped-errors.
"""

from __future__ import annotations

import json

import pytest

from cliproxyd.config import parse_config
from cliproxyd.config.load import ConfigError
from cliproxyd.credentials.authfiles import AuthFileError, credential_for, parse_account
from tests.conftest import Harness, config_data


def weighted(*keys, strategy="weighted-round-robin", **provider):
    """One openai-compatibility provider whose entries are (key, weight) pairs, under C{strategy}."""
    data = config_data(keys=(), routing={"strategy": strategy})
    data["openai-compatibility"][0]["api-key-entries"] = [
        {"api-key": k, "weight": w} if w is not None else {"api-key": k} for k, w in keys]
    data["openai-compatibility"][0].update(provider)
    return data


def counts(keys):
    out: dict[str, int] = {}
    for k in keys:
        out[k] = out.get(k, 0) + 1
    return out


# -- weighted-round-robin ----------------------------------------------------------


def test_weighted_round_robin_gives_each_key_its_weights_share_spread_out():
    h = Harness(weighted(("a", 3), ("b", 1)))
    for _ in range(8):
        assert h.chat()[0] == 200
    # 6 to 2, and smooth: b's picks are apart, not after a run of six a's (README's example).
    assert h.keys_seen() == ["a", "a", "b", "a", "a", "a", "b", "a"]


def test_an_omitted_weight_is_one_and_equal_weights_are_plain_round_robin():
    h = Harness(weighted(("a", None), ("b", 1), ("c", None)))
    for _ in range(6):
        h.chat()
    assert h.keys_seen() == ["a", "b", "c", "a", "b", "c"]


def test_weight_zero_excludes_a_key_under_weighted_round_robin_only():
    h = Harness(weighted(("a", 0), ("b", 2)))
    for _ in range(4):
        h.chat()
    assert h.keys_seen() == ["b"] * 4
    rr = Harness(weighted(("a", 0), ("b", 2), strategy="round-robin"))
    for _ in range(4):
        rr.chat()
    assert counts(rr.keys_seen()) == {"a": 2, "b": 2}


def test_weights_apply_within_the_highest_priority_tier_across_providers():
    data = weighted(("a", 1))
    other = dict(data["openai-compatibility"][0], name="other",
                 **{"api-key-entries": [{"api-key": "b", "weight": 3}]})
    low = dict(data["openai-compatibility"][0], name="low", priority=-1,
               **{"api-key-entries": [{"api-key": "z", "weight": 100}]})
    data["openai-compatibility"] += [other, low]
    h = Harness(data)
    for _ in range(8):
        h.chat()
    assert counts(h.keys_seen()) == {"a": 2, "b": 6}  # z's tier is lower: unused while these are ready
    h.upstream.script("a", "status:503")
    h.upstream.script("b", "status:503")
    h.upstream.seen.clear()
    assert h.chat()[0] == 200
    assert h.keys_seen()[-1] == "z"


def test_a_key_back_from_a_cooldown_takes_its_share_from_then_on_not_a_burst():
    h = Harness(weighted(("a", 1), ("b", 1)))
    h.upstream.script("a", "status:503", "ok")
    h.chat()  # a fails (cools 60 s), b answers
    for _ in range(20):
        h.chat()
    h.clock.advance(60)
    h.upstream.seen.clear()
    for _ in range(6):
        h.chat()
    assert counts(h.keys_seen()) == {"a": 3, "b": 3}


def test_weight_is_validated_at_load_naming_its_path():
    with pytest.raises(ConfigError, match=r"openai-compatibility\[0\].api-key-entries\[0\].weight: must be at most"):
        parse_config(weighted(("a", 1_000_001)))
    with pytest.raises(ConfigError, match=r"gemini-api-key\[0\].weight: must be an integer"):
        parse_config({"gemini-api-key": [{"api-key": "k", "weight": "heavy"}]})
    config, warnings = parse_config({"claude-api-key": [{"api-key": "k", "weight": -4}],
                                     "routing": {"strategy": "wrr"}})
    assert config.claude_api_key[0].weight == 0 and config.routing.strategy == "weighted-round-robin"
    assert warnings == []


def account(tmp_path, **fields):
    raw = json.dumps({"type": "claude", "access_token": "t", "refresh_token": "r", **fields}).encode()
    return parse_account(str(tmp_path / "a.json"), raw)


def test_an_auth_files_weight_and_its_checks(tmp_path):
    config, _ = parse_config({})
    assert credential_for(account(tmp_path), config).weight == 1
    assert credential_for(account(tmp_path, weight=7), config).weight == 7
    assert credential_for(account(tmp_path, weight="7"), config).weight == 7
    assert credential_for(account(tmp_path, weight=0), config).weight == 0
    for bad in (2.5, "x", 2_000_000, True):
        with pytest.raises(AuthFileError, match="weight"):
            credential_for(account(tmp_path, weight=bad), config)


# -- disabled ----------------------------------------------------------------------


def test_a_disabled_openai_compatibility_provider_is_neither_served_nor_listed():
    data = config_data(keys=("a",))
    other = dict(data["openai-compatibility"][0], name="other", disabled=True, prefix="o",
                 **{"api-key-entries": [{"api-key": "b"}], "models": [{"name": "only-there"}]})
    data["openai-compatibility"].append(other)
    h = Harness(data)
    listed = {m["id"] for m in json.loads(h.request("GET", "/v1/models")[2])["data"]}
    assert "only-there" not in listed and "o/only-there" not in listed and "gpt-4o-mini" in listed
    assert h.chat(model="only-there")[0] == 404
    assert h.chat(model="o/gpt-4o-mini")[0] == 404
    for _ in range(3):
        h.chat()
    assert h.keys_seen() == ["a"] * 3


def test_an_api_key_entry_is_switched_off_the_management_centers_way_by_excluding_every_model():
    data = config_data(keys=("a",))
    data["gemini-api-key"] = [{"api-key": "g", "excluded-models": ["*"],
                               "models": [{"name": "gemini-x", "alias": "gpt-4o-mini"}]}]
    h = Harness(data)
    for _ in range(3):
        h.chat()
    assert h.keys_seen() == ["a"] * 3


def test_a_disabled_auth_file_is_not_served(tmp_path):
    config, _ = parse_config({})
    assert credential_for(account(tmp_path, disabled=True), config).disabled
    assert not credential_for(account(tmp_path), config).disabled


# -- transient-error-cooldown-seconds -------------------------------------------------


@pytest.mark.parametrize("seconds, cooled_for", [(0, 60), (10, 10), (-1, 0)])
def test_transient_error_cooldown_seconds(seconds, cooled_for):
    h = Harness(config_data(**{"transient-error-cooldown-seconds": seconds}))
    h.upstream.script("sk-up-1", "status:503", "ok")
    h.chat()
    if cooled_for:
        h.clock.advance(cooled_for - 0.5)
        h.upstream.seen.clear()
        h.chat(), h.chat()
        assert h.keys_seen() == ["sk-up-2", "sk-up-2"]
        h.clock.advance(0.5)
    h.upstream.seen.clear()
    h.chat(), h.chat()
    assert sorted(h.keys_seen()) == ["sk-up-1", "sk-up-2"]


def test_transient_error_cooldown_seconds_must_be_an_integer():
    with pytest.raises(ConfigError, match="transient-error-cooldown-seconds: must be an integer"):
        parse_config({"transient-error-cooldown-seconds": "1m"})


# -- disable-cooling and request-retry per entry -----------------------------------


def test_an_entrys_disable_cooling_overrides_the_global_value():
    h = Harness(config_data(**{"disable-cooling": True}))
    h.upstream.script("sk-up-1", "status:503", "ok")
    h.chat()
    h.upstream.seen.clear()
    h.chat(), h.chat()
    assert sorted(h.keys_seen()) == ["sk-up-1", "sk-up-2"]  # globally off: not cooled
    data = config_data(**{"disable-cooling": True})
    data["openai-compatibility"][0]["disable-cooling"] = False
    h = Harness(data)
    h.upstream.script("sk-up-1", "status:503", "ok")
    h.chat()
    h.upstream.seen.clear()
    h.chat(), h.chat()
    assert h.keys_seen() == ["sk-up-2", "sk-up-2"]  # the provider's false turns cooling back on


def test_every_api_key_list_takes_disable_cooling_and_request_retry():
    for kind in ("gemini-api-key", "claude-api-key", "codex-api-key"):
        config, warnings = parse_config({kind: [{"api-key": "k", "disable-cooling": True, "request-retry": 2},
                                                {"api-key": "j", "request-retry": -1}]})
        entries = getattr(config, kind.replace("-", "_"))
        assert (entries[0].disable_cooling, entries[0].request_retry) == (True, 2)
        assert (entries[1].disable_cooling, entries[1].request_retry) == (None, None)  # inherit
        assert warnings == []


def test_a_providers_request_retry_runs_rounds_for_its_keys():
    data = config_data(keys=("only",), **{"max-retry-interval": 30})
    data["openai-compatibility"][0]["request-retry"] = 1
    h = Harness(data)
    h.upstream.script("only", "status:429:5", "ok")
    code, _, _ = h.chat(advance=1)
    assert code == 200 and h.keys_seen() == ["only", "only"]  # the second round after the 5 s cooldown


# -- request-scoped-errors -----------------------------------------------------------


def scoped(*rules, **top):
    data = config_data(**top)
    data["openai-compatibility"][0]["request-scoped-errors"] = list(rules)
    return data


def test_stop_answers_the_client_at_once_and_cools_nothing():
    h = Harness(scoped({"status": 503, "match": ["simulated failure"], "action": "stop"}))
    h.upstream.script("sk-up-1", "status:503", "ok")
    code, _, body = h.chat()
    assert code == 503 and h.keys_seen() == ["sk-up-1"]  # no other key tried
    h.upstream.seen.clear()
    h.chat(), h.chat()
    assert sorted(h.keys_seen()) == ["sk-up-1", "sk-up-2"]  # and sk-up-1 is not cooling


def test_continue_moves_on_without_cooling_even_a_request_invalid_error():
    h = Harness(scoped({"status": 422, "match-regexr": [r"simulated failure 4\d\d"], "action": "continue"}))
    h.upstream.script("sk-up-1", "status:422", "ok")
    assert h.chat()[0] == 200
    assert h.keys_seen() == ["sk-up-1", "sk-up-2"]  # a 422 would have answered at once
    h.upstream.seen.clear()
    h.chat(), h.chat()
    assert sorted(h.keys_seen()) == ["sk-up-1", "sk-up-2"]


def test_continue_and_cooldown_cools_what_the_table_would_not_even_under_disable_cooling():
    h = Harness(scoped({"status": 409, "match": ["simulated"], "action": "continue-and-cooldown"},
                       **{"disable-cooling": True}))
    h.upstream.script("sk-up-1", "status:409", "ok")
    assert h.chat()[0] == 200
    h.upstream.seen.clear()
    h.chat(), h.chat()
    assert h.keys_seen() == ["sk-up-2", "sk-up-2"]  # cooled for 60 s
    h.clock.advance(60)
    h.upstream.seen.clear()
    h.chat(), h.chat()
    assert sorted(h.keys_seen()) == ["sk-up-1", "sk-up-2"]


def test_stop_and_cooldown_answers_and_cools():
    h = Harness(scoped({"status": 400, "match": ["nothing like it"], "action": "continue"},
                       {"status": 400, "match": ["simulated failure 400"], "action": "stop-and-cooldown"}))
    h.upstream.script("sk-up-1", "status:400", "ok")
    assert h.chat()[0] == 400 and h.keys_seen() == ["sk-up-1"]
    h.upstream.seen.clear()
    h.chat(), h.chat()
    assert h.keys_seen() == ["sk-up-2", "sk-up-2"]


def test_a_rule_of_another_status_or_body_changes_nothing():
    h = Harness(scoped({"status": 500, "match": ["simulated"], "action": "stop"},
                       {"status": 503, "match": ["not in the body"], "action": "stop"}))
    h.upstream.script("sk-up-1", "status:503", "ok")
    assert h.chat()[0] == 200 and h.keys_seen() == ["sk-up-1", "sk-up-2"]  # the usual failover


def test_request_scoped_errors_are_validated_at_load_naming_their_path():
    bad = [
        ({"match": ["x"], "action": "stop"}, r"request-scoped-errors\[0\].status: required"),
        ({"status": 400, "action": "stop"}, r"request-scoped-errors\[0\].match: a rule needs"),
        ({"status": 400, "match": ["x"], "action": "halt"}, r"request-scoped-errors\[0\].action: must be one of"),
        ({"status": 400, "match-regexr": ["("], "action": "stop"},
         r"request-scoped-errors\[0\].match-regexr\[0\]: not a valid regular expression"),
        ({"status": 4000, "match": ["x"], "action": "stop"}, r"status: must be an HTTP status"),
    ]
    for rule, message in bad:
        with pytest.raises(ConfigError, match=message):
            parse_config({"codex-api-key": [{"api-key": "k", "request-scoped-errors": [rule]}]})


def test_oauth_request_scoped_errors_apply_to_the_channels_accounts_unless_the_file_has_its_own(tmp_path):
    config, _ = parse_config({"oauth-request-scoped-errors": {
        "claude": [{"status": 400, "match": ["prompt is too long"], "action": "stop"}]}})
    cred = credential_for(account(tmp_path), config)
    assert cred.scoped_errors.action(400, "the prompt is too long") == "stop"
    assert cred.scoped_errors.action(400, "something else") is None
    own = credential_for(account(tmp_path, request_scoped_errors=[
        {"status": 400, "match": ["prompt"], "action": "continue-and-cooldown"}]), config)
    assert own.scoped_errors.action(400, "the prompt is too long") == "continue-and-cooldown"
    with pytest.raises(AuthFileError, match=r"request_scoped_errors\[0\].action"):
        credential_for(account(tmp_path, request_scoped_errors=[{"status": 400, "match": ["x"]}]), config)
    with pytest.raises(ConfigError, match=r"oauth-request-scoped-errors.codex\[0\].status"):
        parse_config({"oauth-request-scoped-errors": {"codex": [{"status": "400", "match": ["x"], "action": "stop"}]}})


# -- quota-exceeded -----------------------------------------------------------------


def test_quota_exceeded_switches_are_read_and_checked():
    config, warnings = parse_config({"quota-exceeded": {"switch-project": True, "switch-preview-model": False}})
    assert config.quota_exceeded.switch_project and not config.quota_exceeded.switch_preview_model
    assert not any("quota-exceeded" in w and "switch" in w for w in warnings)
    with pytest.raises(ConfigError, match="quota-exceeded.switch-project: must be true or false"):
        parse_config({"quota-exceeded": {"switch-project": "yes"}})


def test_the_weighted_scheduler_skips_tried_and_cooling_members_without_moving_their_turn():
    from cliproxyd.conductor.scheduler import Scheduler
    from cliproxyd.credentials import Credential, Route

    route = Route("m", "m", ("m",))
    creds = [Credential(id=i, provider="p", kind="k", api_key=i, base_url="u", routes=(route,), weight=w)
             for i, w in (("a", 2), ("b", 1), ("z", 0))]
    s = Scheduler(creds, "weighted-round-robin")
    picks = [s.pick("m", set(), 0).cred.id for _ in range(6)]
    assert picks == ["a", "b", "a", "a", "b", "a"]  # z (weight 0) never
    assert s.pick("m", {"a"}, 0).cred.id == "b"  # a was next; a request that tried it gets b
    assert s.pick("m", set(), 0).cred.id == "a"  # and a's turn is still there
    s.set_blocked("a", "m", 10.0)
    assert [s.pick("m", set(), 1).cred.id for _ in range(3)] == ["b"] * 3
    assert s.pick("m", {"b"}, 1) is None
    assert {s.pick("m", set(), 10).cred.id for _ in range(3)} == {"a", "b"}  # back after its cooldown


def test_the_attempts_log_line_names_the_rule_that_decided():
    from twisted.logger import capturedLogs

    h = Harness(scoped({"status": 503, "match": ["simulated"], "action": "continue"}))
    h.upstream.script("sk-up-1", "status:503", "ok")
    with capturedLogs() as events:
        h.chat()
    [failed] = [e for e in events if e.get("cred") == h.creds[0].id and e.get("status") == 503]
    assert failed["scoped_rule"] == "continue" and failed["decision"] == "next credential"
