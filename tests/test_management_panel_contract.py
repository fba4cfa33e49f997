"""
The management routes as CLIProxyAPI's Management Center calls them,
written from the panel's own API client (src/services/api/*.ts of
router-for-me/Cli-Proxy-API-Management-Center): each test sends what the
panel sends (method, path, query, body) and checks every field the panel
reads from the answer, with its type. The daemon is the in-memory
L{ManagementRig}; writes are checked in the daemon's behaviour too.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from cliproxyd._version import __version__
from cliproxyd.config.load import parse_config_bytes
from cliproxyd.management.recent import BUCKET_SECONDS, BUCKETS
from cliproxyd.management.usagequeue import RETENTION_SECONDS
from tests.management_support import UPSTREAM, ManagementRig, claude_file


@pytest.fixture
def rig(tmp_path) -> ManagementRig:
    return ManagementRig(tmp_path)


def ok(result: tuple[int, Any]) -> Any:
    code, body = result
    assert code == 200, body
    return body


def typed(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    assert isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool)), (where, value)
    return value


# -- config.ts: GET /config, read by transformers.ts normalizeConfigResponse ---------------------------


def test_get_config_has_every_field_the_panel_reads_with_cliproxyapis_defaults(rig):
    raw = ok(rig.call("GET", "/config"))
    # booleans the panel reads with normalizeBoolean (anything else is "unset")
    for key, default in (("debug", False), ("request-log", False), ("logging-to-file", False), ("ws-auth", True),
                         ("force-model-prefix", False)):
        assert typed(raw[key], bool, key) is default
    assert typed(raw["proxy-url"], str, "proxy-url") == ""
    assert typed(raw["request-retry"], int, "request-retry") == 0  # the rig's file sets 0
    assert typed(raw["logs-max-total-size-mb"], int, "logs-max-total-size-mb") == 0
    assert raw["error-logs-max-files"] == 10
    quota = typed(raw["quota-exceeded"], dict, "quota-exceeded")
    assert quota == {"switch-project": False, "switch-preview-model": False, "antigravity-credits": False}
    assert typed(raw["routing"]["strategy"], str, "routing.strategy") == "round-robin"
    assert typed(raw["api-keys"], list, "api-keys") == []
    for section in ("gemini-api-key", "interactions-api-key", "codex-api-key", "xai-api-key", "claude-api-key",
                    "vertex-api-key"):
        assert typed(raw[section], list, section) == []
    [compat] = typed(raw["openai-compatibility"], list, "openai-compatibility")
    assert typed(compat["name"], str, "name") == "sim" and typed(compat["base-url"], str, "base-url")
    assert typed(compat["api-key-entries"][0]["api-key"], str, "api-key") == "sk-up-1"
    assert typed(raw["oauth-excluded-models"], dict, "oauth-excluded-models") == {}
    assert raw["max-body-mb"] == 8  # cliproxyd's own keys, with their defaults
    assert not {"host", "port", "remote-management", "auth-dir"} & set(raw)


def test_get_config_completes_a_section_the_file_sets_in_part_and_keeps_what_it_sets(rig):
    text = rig.config.read_bytes() + b"routing:\n  session-affinity: true\nws-auth: false\nrequest-log: null\n"
    assert rig.call("PUT", "/config.yaml", raw=text)[0] == 200
    raw = ok(rig.call("GET", "/config"))
    assert raw["routing"] == {"strategy": "round-robin", "session-affinity": True}
    assert raw["ws-auth"] is False and raw["request-log"] is False


# -- apiKeys.ts ----------------------------------------------------------------------------------------


def test_api_keys_list_replace_update_delete_as_the_panel_calls_them(rig):
    assert ok(rig.call("PUT", "/api-keys", ["sk-a", "sk-b"])) == {"status": "ok"}
    assert ok(rig.call("GET", "/api-keys")) == {"api-keys": ["sk-a", "sk-b"]}
    ok(rig.call("PATCH", "/api-keys", {"index": 1, "value": "sk-c"}))
    ok(rig.call("DELETE", "/api-keys?index=0"))
    assert ok(rig.call("GET", "/api-keys")) == {"api-keys": ["sk-c"]}
    assert rig.chat(headers={"Authorization": "Bearer sk-c"})[0] == 200
    assert rig.chat(headers={"Authorization": "Bearer sk-a"})[0] == 401
    # CLIProxyAPI's {"old", "new"} adds the new key when the old one is not there
    ok(rig.call("PATCH", "/api-keys", {"old": "gone", "new": "sk-d"}))
    ok(rig.call("DELETE", "/api-keys?value=sk-c"))
    assert ok(rig.call("GET", "/api-keys")) == {"api-keys": ["sk-d"]}


# -- providers.ts: GET /config, then PUT /<section> with the merged list ----------------------------------


def panel_put(rig: ManagementRig, section: str, mutate) -> dict[str, Any]:
    """mutateLatestProviderList: read the section from /config, change it, PUT it back whole."""
    latest = ok(rig.call("GET", "/config"))[section]
    return ok(rig.call("PUT", f"/{section}", mutate(list(latest))))


def gemini_key(key: str, **extra: Any) -> dict[str, Any]:
    """serializeGeminiKey with every field the panel's form can fill."""
    return {"api-key": key, "priority": 2, "weight": 3, "prefix": "team", "base-url": UPSTREAM,
            "headers": {"X-Team": "a"},
            "models": [{"name": "gemini-2.5-pro", "alias": "g-pro", "priority": 1, "test-model": "g-pro",
                        "thinking": {"level": "high"}}],
            "excluded-models": ["gemini-2.5-flash-lite"], "disable-cooling": True, **extra}


def test_provider_keys_take_every_field_the_panel_sends_and_say_which_are_not_acted_on(rig):
    answer = panel_put(rig, "gemini-api-key", lambda items: items + [gemini_key("gk-1")])
    # the panel's own test-model is no config key of cliproxyd's: kept, and said so
    assert answer["status"] == "ok" and "gemini-api-key[0].models[0].test-model" in answer["ignored"]
    [entry] = ok(rig.call("GET", "/config"))["gemini-api-key"]
    assert entry["weight"] == 3 and entry["models"][0]["test-model"] == "g-pro"
    assert "team/g-pro" in rig.models()  # in effect: the key serves its model under its prefix
    # the panel's edit: the raw record merged with the form's fields, the whole list PUT back
    panel_put(rig, "gemini-api-key", lambda items: [{**items[0], "prefix": "ops"}])
    assert "ops/g-pro" in rig.models() and "team/g-pro" not in rig.models()


def test_claude_codex_and_openai_fields_of_the_panel_are_taken(rig):
    claude = {"api-key": "ck-1", "weight": 1, "cloak": {"mode": "auto", "strict-mode": True,
                                                          "sensitive-words": ["x"], "cache-user-id": True},
              "experimental-cch-signing": True, "models": [{"name": "claude-sonnet-4-5"}]}
    assert ok(rig.call("PUT", "/claude-api-key", [claude]))["status"] == "ok"
    codex = {"api-key": "xk-1", "websockets": True, "weight": 2}
    assert ok(rig.call("PUT", "/codex-api-key", [codex]))["status"] == "ok"
    compat = ok(rig.call("GET", "/config"))["openai-compatibility"][0]
    compat = {**compat, "disabled": False, "test-model": "sim-small", "disable-cooling": True,
              "api-key-entries": [{"api-key": "sk-up-1", "weight": 5}, {"api-key": "sk-up-2"}],
              "models": [{"name": "sim-small", "alias": "gpt-4o-mini", "image": True, "test-model": "x"}]}
    answer = ok(rig.call("PUT", "/openai-compatibility", [compat]))
    assert {"openai-compatibility[0].test-model", "openai-compatibility[0].models[0].test-model"} <= \
        set(answer["ignored"])
    assert rig.chat()[0] == 200
    # updateOpenAIProviderDisabled, deleteOpenAIProvider
    assert ok(rig.call("PATCH", "/openai-compatibility", {"index": 0, "value": {"disabled": True}}))["status"] == "ok"
    assert ok(rig.call("GET", "/openai-compatibility"))["openai-compatibility"][0]["disabled"] is True
    ok(rig.call("DELETE", "/openai-compatibility?index=0"))
    assert ok(rig.call("GET", "/openai-compatibility")) == {"openai-compatibility": []}


def test_a_field_neither_cliproxyapi_nor_cliproxyd_knows_is_named_and_nothing_is_written(rig):
    before = rig.config.read_bytes()
    code, body = rig.call("PUT", "/gemini-api-key", [{"api-key": "gk", "wieght": 1}])
    assert code == 400 and body["error"].startswith("gemini-api-key[0].wieght: unknown key")
    code, body = rig.call("PUT", "/openai-compatibility",
                          [{"name": "x", "base-url": "http://x.test/v1", "api-key-entries": [{"api-key": "k",
                                                                                                 "proxy": "p"}]}])
    assert code == 400 and body["error"].startswith("openai-compatibility[0].api-key-entries[0].proxy: unknown key")
    code, body = rig.call("PUT", "/codex-api-key", [{"api-key": "xk", "weight": "heavy"}])
    assert (code, body) == (400, {"error": "codex-api-key[0].weight: must be a whole number"})
    assert rig.config.read_bytes() == before


def test_the_answer_only_auth_index_is_dropped(rig):
    ok(rig.call("PUT", "/gemini-api-key", [{"api-key": "gk", "auth-index": "abc"}]))
    assert ok(rig.call("GET", "/gemini-api-key")) == {"gemini-api-key": [{"api-key": "gk"}]}


def test_delete_by_api_key_and_base_url_as_the_panel_sends_it(rig):
    ok(rig.call("PUT", "/claude-api-key", [{"api-key": "same"}, {"api-key": "same", "base-url": UPSTREAM}]))
    # buildProviderDeleteQuery always sends base-url, empty for an entry without one
    code, body = rig.call("DELETE", "/claude-api-key?api-key=same")
    assert code == 400 and "base-url" in body["error"]
    ok(rig.call("DELETE", "/claude-api-key?api-key=same&base-url="))
    assert ok(rig.call("GET", "/claude-api-key")) == {"claude-api-key": [{"api-key": "same", "base-url": UPSTREAM}]}
    assert rig.call("DELETE", "/claude-api-key?api-key=same&base-url=") == (404, {"error": "no such entry"})
    ok(rig.call("DELETE", f"/claude-api-key?api-key=same&base-url={UPSTREAM}"))
    assert ok(rig.call("GET", "/claude-api-key")) == {"claude-api-key": []}


def test_patch_by_match_and_base_url(rig):
    ok(rig.call("PUT", "/codex-api-key", [{"api-key": "k"}, {"api-key": "k", "base-url": UPSTREAM}]))
    assert rig.call("PATCH", "/codex-api-key", {"match": "k", "value": {"prefix": "p"}})[0] == 400
    ok(rig.call("PATCH", f"/codex-api-key?base-url={UPSTREAM}", {"match": "k", "value": {"prefix": "p"}}))
    assert [e.get("prefix") for e in ok(rig.call("GET", "/codex-api-key"))["codex-api-key"]] == [None, "p"]


def test_xai_vertex_and_interactions_keys_are_edited_as_the_panel_edits_them(rig):
    for section, model in (("xai-api-key", "grok-4.5"), ("vertex-api-key", "gemini-2.5-flash"),
                           ("interactions-api-key", "gemini-3-flash-preview")):
        assert ok(rig.call("GET", f"/{section}")) == {section: []}
        ok(rig.call("PUT", f"/{section}", [{"api-key": "k-1", "prefix": "p"}]))
        assert f"p/{model}" in rig.models()
        ok(rig.call("PATCH", f"/{section}", {"index": 0, "value": {"prefix": "q"}}))
        assert [e["prefix"] for e in ok(rig.call("GET", f"/{section}"))[section]] == ["q"]
        assert f"q/{model}" in rig.models()
        ok(rig.call("DELETE", f"/{section}?api-key=k-1"))
        assert ok(rig.call("GET", f"/{section}")) == {section: []}
        assert f"q/{model}" not in rig.models()


# -- authFiles.ts: oauth-excluded-models ----------------------------------------------------------------


def test_oauth_excluded_models_as_the_panel_edits_them(rig):
    ok(rig.call("POST", "/auth-files?name=claude-a.json", raw=claude_file()))
    assert "claude-sonnet-4-5" in rig.models()
    assert ok(rig.call("GET", "/oauth-excluded-models")) == {"oauth-excluded-models": {}}
    # saveOauthExcludedModels
    ok(rig.call("PATCH", "/oauth-excluded-models", {"provider": "claude", "models": ["Claude-Sonnet-4-5", " "]}))
    assert ok(rig.call("GET", "/oauth-excluded-models")) == {"oauth-excluded-models": {"claude": ["claude-sonnet-4-5"]}}
    assert "claude-sonnet-4-5" not in rig.models()
    # replaceOauthExcludedModels: the whole map
    ok(rig.call("PUT", "/oauth-excluded-models", {"claude": ["claude-haiku-*"], "codex": ["gpt-5"]}))
    assert "claude-sonnet-4-5" in rig.models() and "claude-haiku-4-5" not in rig.models()
    # deleteOauthExcludedEntry
    ok(rig.call("DELETE", "/oauth-excluded-models?provider=claude"))
    assert ok(rig.call("GET", "/oauth-excluded-models")) == {"oauth-excluded-models": {"codex": ["gpt-5"]}}
    assert rig.call("DELETE", "/oauth-excluded-models?provider=claude")[0] == 404
    assert rig.call("DELETE", "/oauth-excluded-models")[0] == 400
    assert rig.call("PATCH", "/oauth-excluded-models", {"provider": "codex", "models": "gpt-5"})[0] == 400
    # an empty list removes the provider (CLIProxyAPI's PATCH)
    ok(rig.call("PATCH", "/oauth-excluded-models", {"provider": "codex", "models": []}))
    assert ok(rig.call("GET", "/config"))["oauth-excluded-models"] == {}


# -- authFiles.ts: oauth-model-alias --------------------------------------------------------------------


def test_oauth_model_alias_as_the_panel_edits_it(rig):
    ok(rig.call("POST", "/auth-files?name=claude-a.json", raw=claude_file()))
    assert ok(rig.call("GET", "/oauth-model-alias")) == {"oauth-model-alias": {}}
    # saveOauthModelAlias: {channel, aliases: serializeOauthModelAliases(...)}
    aliases = [{"name": "claude-sonnet-4-5", "alias": "sonnet", "fork": True, "force-mapping": False},
               {"name": "claude-haiku-4-5", "alias": "haiku"}]
    answer = ok(rig.call("PATCH", "/oauth-model-alias", {"channel": "Claude", "aliases": aliases}))
    assert answer["status"] == "ok"
    got = ok(rig.call("GET", "/oauth-model-alias"))["oauth-model-alias"]
    assert got == {"claude": [{"name": "claude-sonnet-4-5", "alias": "sonnet", "fork": True},
                              {"name": "claude-haiku-4-5", "alias": "haiku"}]}
    models = rig.models()
    assert {"sonnet", "claude-sonnet-4-5", "haiku"} <= models and "claude-haiku-4-5" not in models
    # deleteOauthModelAlias: PATCH with no aliases first, DELETE ?channel= if that were a 405
    ok(rig.call("PATCH", "/oauth-model-alias", {"channel": "claude", "aliases": []}))
    assert "haiku" not in rig.models()
    assert rig.call("PATCH", "/oauth-model-alias", {"channel": "claude", "aliases": []})[0] == 404
    ok(rig.call("PUT", "/oauth-model-alias", {"items": {"claude": [{"name": "claude-haiku-4-5", "alias": "h"}]}}))
    ok(rig.call("DELETE", "/oauth-model-alias?channel=claude"))
    assert ok(rig.call("GET", "/oauth-model-alias")) == {"oauth-model-alias": {}}
    code, body = rig.call("PATCH", "/oauth-model-alias", {"channel": "claude", "aliases": [{"name": "a", "alais": "b"}]})
    assert code == 400 and "oauth-model-alias.claude[0].alais" in body["error"]


# -- apiKeyUsage.ts + utils/recentRequests.ts -----------------------------------------------------------


def test_api_key_usage_has_the_panels_shape_per_provider_and_key(rig):
    rig.upstream.script("sk-up-1", "status:500", "ok")
    rig.upstream.script("sk-up-2", "ok")
    for _ in range(2):
        assert rig.chat()[0] == 200
    usage = ok(rig.call("GET", "/api-key-usage"))
    base = ok(rig.call("GET", "/config"))["openai-compatibility"][0]["base-url"]
    entries = usage["sim"]  # keyed by the provider, then buildRecentRequestCompositeKey(base-url, api-key)
    assert set(entries) == {f"{base}|sk-up-1", f"{base}|sk-up-2"}
    one = entries[f"{base}|sk-up-1"]
    assert typed(one["success"], int, "success") + typed(one["failed"], int, "failed") >= 1
    assert sum(e["success"] for e in entries.values()) == 2 and sum(e["failed"] for e in entries.values()) == 1
    buckets = typed(one["recent_requests"], list, "recent_requests")
    assert len(buckets) == BUCKETS
    for b in buckets:
        typed(b["time"], str, "time"), typed(b["success"], int, "success"), typed(b["failed"], int, "failed")
    assert re.fullmatch(r"\d\d:\d\d-\d\d:\d\d", buckets[-1]["time"])
    assert sum(b["success"] + b["failed"] for b in buckets) == one["success"] + one["failed"]


def test_recent_request_windows_move_with_the_clock_and_fall_off_after_twenty(rig):
    rig.upstream.script("sk-up-1", "ok")
    rig.upstream.script("sk-up-2", "ok")
    assert rig.chat()[0] == 200
    rig.clock.advance(BUCKET_SECONDS)

    def windows() -> list[int]:
        entries = ok(rig.call("GET", "/api-key-usage"))["sim"].values()
        return [sum(b["success"] for b in col) for col in zip(*(e["recent_requests"] for e in entries))]

    assert windows()[-2:] == [1, 0]
    rig.clock.advance(BUCKET_SECONDS * (BUCKETS - 2))
    assert windows()[0] == 1
    rig.clock.advance(BUCKET_SECONDS)
    assert sum(windows()) == 0
    # the totals since start-up stay
    assert sum(e["success"] for e in ok(rig.call("GET", "/api-key-usage"))["sim"].values()) == 1


def test_oauth_accounts_are_not_in_api_key_usage(rig):
    ok(rig.call("POST", "/auth-files?name=claude-a.json", raw=claude_file()))
    assert "claude-sonnet-4-5" in rig.models()
    assert set(ok(rig.call("GET", "/api-key-usage"))) == {"sim"}


# -- usage-queue, reset-quota, latest-version ----------------------------------------------------------


def test_usage_queue_hands_out_each_record_once_oldest_first_within_its_retention(rig):
    rig.upstream.script("sk-up-1", "status:429:60", "ok")
    rig.upstream.script("sk-up-2", "ok")
    assert rig.chat()[0] == 200
    [first] = ok(rig.call("GET", "/usage-queue"))
    assert first["failed"] is True and first["fail"]["status_code"] == 429
    assert first["provider"] == "sim" and first["model"] == "gpt-4o-mini" and first["auth_type"] == "apikey"
    assert first["timestamp"] == "1970-01-01T00:00:00.000Z"
    [second] = ok(rig.call("GET", "/usage-queue?count=5"))
    assert second["failed"] is False and second["auth_index"] != first["auth_index"]
    assert ok(rig.call("GET", "/usage-queue")) == []
    assert rig.chat()[0] == 200
    rig.clock.advance(RETENTION_SECONDS + 1)
    assert ok(rig.call("GET", "/usage-queue?count=10")) == []
    for bad in ("0", "-1", "x"):
        assert rig.call("GET", f"/usage-queue?count={bad}") == (400, {"error": "count must be a positive integer"})


def test_redis_usage_queue_retention_seconds_sets_how_long_records_wait(rig):
    text = rig.config.read_text()
    rig.config.write_text(text + "redis-usage-queue-retention-seconds: 600\n")
    ok(rig.call("PUT", "/config.yaml", raw=rig.config.read_bytes()))
    assert rig.chat()[0] == 200
    rig.clock.advance(RETENTION_SECONDS + 1)  # past the default: still kept
    [kept] = ok(rig.call("GET", "/usage-queue"))
    assert kept["failed"] is False
    assert rig.chat()[0] == 200
    rig.clock.advance(601)
    assert ok(rig.call("GET", "/usage-queue")) == []


@pytest.mark.parametrize("value, kept, warned", [(0, 60, False), (-5, 60, False), (1, 1, False),
                                                 (3600, 3600, False), (7200, 3600, True)])
def test_redis_usage_queue_retention_seconds_is_one_second_to_an_hour(value, kept, warned):
    config, warnings = parse_config_bytes(b"redis-usage-queue-retention-seconds: %d\n" % value, "c.yaml")
    assert config.usage_queue_retention == kept
    assert warnings == (["redis-usage-queue-retention-seconds: 7200 is more than 3600; 3600 is used"]
                        if warned else [])


def test_the_plugin_list_is_empty_in_cliproxyapis_shape(rig):
    # plugins.ts normalizePluginList: plugins_enabled, plugins_dir, plugins[]
    assert ok(rig.call("GET", "/plugins")) == {"plugins_enabled": False, "plugins_dir": "", "plugins": []}
    assert rig.call("GET", "/plugins/x/config")[0] == 501


def test_reset_quota_forgets_a_credentials_cooldowns(rig):
    rig.upstream.script("sk-up-1", "status:429:60", "ok")
    rig.upstream.script("sk-up-2", "ok")
    assert rig.chat()[0] == 200
    creds = ok(rig.call("GET", "/credentials"))["credentials"]
    [cooling] = [c["id"] for c in creds if c["model_states"].get("gpt-4o-mini", {}).get("cooling")]
    answer = ok(rig.call("POST", "/reset-quota", {"auth_index": cooling}))
    assert answer == {"status": "ok", "auth_index": cooling, "models": ["gpt-4o-mini"], "groups": []}
    creds = ok(rig.call("GET", "/credentials"))["credentials"]
    assert not any(c["model_states"].get("gpt-4o-mini", {}).get("cooling") for c in creds)
    assert rig.call("POST", "/reset-quota", {"auth_index": "nope"}) == (404, {"error": "no credential 'nope'"})
    assert rig.call("POST", "/reset-quota", {})[0] == 400
    assert rig.call("POST", "/reset-quota", {"auth_index": "x", "all": True})[0] == 400


def test_latest_version_is_the_running_version_and_says_why(rig):
    # SystemPage reads data['latest-version'] and compares it with the server's version
    answer = ok(rig.call("GET", "/latest-version"))
    assert typed(answer["latest-version"], str, "latest-version") == __version__
    assert "no update server" in answer["message"]


# -- CLIProxyAPI's third per-channel map (the panel edits it in config.yaml) ---------------------------


def test_oauth_request_scoped_errors_with_cliproxyapis_shapes(rig):
    assert ok(rig.call("GET", "/oauth-request-scoped-errors")) == {"oauth-request-scoped-errors": {}}
    rule = {"status": 400, "match": ["prompt is too long"], "action": "stop"}
    assert ok(rig.call("PATCH", "/oauth-request-scoped-errors", {"channel": "Claude", "rules": [rule]})) == \
        {"status": "ok"}
    assert ok(rig.call("GET", "/oauth-request-scoped-errors")) == {"oauth-request-scoped-errors": {"claude": [rule]}}
    assert "prompt is too long" in rig.config.read_text()
    before = rig.config.read_bytes()
    code, body = rig.call("PATCH", "/oauth-request-scoped-errors",
                          {"provider": "claude", "rules": [{**rule, "action": "explode"}]})
    assert code == 400 and "oauth-request-scoped-errors.claude[0].action" in body["error"]
    code, body = rig.call("PUT", "/oauth-request-scoped-errors", {"claude": [{**rule, "why": 1}]})
    assert code == 400 and "oauth-request-scoped-errors.claude[0].why: unknown key" in body["error"]
    assert rig.config.read_bytes() == before
    ok(rig.call("DELETE", "/oauth-request-scoped-errors?provider=claude"))
    assert rig.call("DELETE", "/oauth-request-scoped-errors?channel=claude")[0] == 404
