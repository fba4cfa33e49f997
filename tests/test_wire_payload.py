"""
payload rules: default, default-raw, override, override-raw and filter
edit the body that leaves, on the passthrough path and the translated one,
for the models, protocols, client protocols, headers and body conditions
they name; nothing else is touched. Errors at load name the YAML path.
"""

from __future__ import annotations

import json

import pytest

from cliproxyd.config import ConfigError, parse_config
from cliproxyd.config.payload import PayloadConfig
from cliproxyd.executors.payload import PayloadRules
from cliproxyd.formats import openai_chat
from cliproxyd.formats.request import ClientRequest
from tests.conftest import Harness, config_data
from tests.test_formats_frontend import ask, matrix


def rules(**lists) -> dict:
    return {"payload": lists}


def models(name: str, **kw) -> list[dict]:
    return [{"name": name, **kw}]


def sent(h: Harness) -> dict:
    assert h.upstream.seen, "nothing reached the upstream"
    return h.upstream.seen[-1].body


def test_override_sets_a_value_on_the_passthrough_path_and_default_only_fills_a_gap():
    h = Harness(config_data(**rules(
        override=[{"models": models("gpt-4o*"), "params": {"temperature": 0.2, "metadata.tier": "gold"}}],
        default=[{"models": models("*"), "params": {"top_p": 0.5, "max_tokens": 7}},
                 {"models": models("*"), "params": {"top_p": 0.9}}],  # the first default to set a path wins
    )))
    assert h.chat(temperature=0.9, max_tokens=100)[0] == 200
    body = sent(h)
    assert body["temperature"] == 0.2 and body["metadata"] == {"tier": "gold"}
    assert body["top_p"] == 0.5
    assert body["max_tokens"] == 100  # the client's own value stays: a default fills gaps only


def test_a_rule_naming_other_models_or_another_protocol_leaves_the_bytes_alone():
    h = Harness(config_data(**rules(
        override=[{"models": models("claude-*"), "params": {"temperature": 0}},
                  {"models": models("*", protocol="gemini"), "params": {"temperature": 0}}],
    )))
    raw = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.9})
    seen = []
    original = h.up.request
    h.up.request = lambda method, url, **kw: seen.append(kw["data"]) or original(method, url, **kw)
    assert h.request("POST", "/v1/chat/completions", raw.encode())[0] == 200
    assert seen == [raw.encode()]  # exactly the client's bytes: no rule applied, nothing re-encoded


def test_rules_match_the_upstream_model_and_the_alias_the_client_asked_for():
    h = Harness(config_data(**rules(
        override=[{"models": models("sim-*"), "params": {"a": 1}},  # the upstream name of gpt-4o-mini
                  {"models": models("gpt-4o-mini"), "params": {"b": 2}},  # the alias itself
                  {"models": models("gpt-4o-mini(high)"), "params": {"c": 3}}],  # with its suffix
    )))
    h.chat(model="gpt-4o-mini")
    assert sent(h)["a"] == 1 and sent(h)["b"] == 2 and "c" not in sent(h)
    h.chat(model="gpt-4o-mini(high)")
    assert sent(h)["c"] == 3
    h.chat(model="gpt-4o")
    assert not {"a", "b", "c"} & sent(h).keys()


def test_raw_rules_set_json_text_and_filters_remove_paths():
    h = Harness(config_data(**rules(
        **{"default-raw": [{"models": models("*"), "params": {
            "response_format": '{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object"}}}'}}],
           "override-raw": [{"models": models("*"), "params": {"stop": '["END"]', "n": 1}}]},
        filter=[{"models": models("*"), "params": ["user", "metadata.secret"]}],
    )))
    h.chat(user="alice", metadata={"secret": "x", "keep": "y"}, stop="no")
    body = sent(h)
    assert body["response_format"]["json_schema"]["name"] == "a"
    assert body["stop"] == ["END"] and body["n"] == 1
    assert "user" not in body and body["metadata"] == {"keep": "y"}


def test_rules_apply_to_the_translated_body_and_from_protocol_names_the_client():
    h = matrix(**rules(
        override=[{"models": models("claude-sim", protocol="claude", **{"from-protocol": "openai"}),
                   "params": {"metadata.user_id": "from-openai"}},
                  {"models": models("claude-sim", protocol="claude", **{"from-protocol": "gemini"}),
                   "params": {"metadata.user_id": "from-gemini"}}],
        filter=[{"models": models("gemini-*", protocol="gemini"), "params": ["generationConfig.temperature"]}],
    ))
    assert ask(h, "openai", "via-claude")[0] == 200
    assert h.upstream.seen[-1].format == "claude" and sent(h)["metadata"]["user_id"] == "from-openai"
    assert ask(h, "gemini", "via-claude")[0] == 200
    assert sent(h)["metadata"]["user_id"] == "from-gemini"
    assert ask(h, "openai", "via-gemini", temperature=0.3)[0] == 200
    assert h.upstream.seen[-1].format == "gemini" and "temperature" not in sent(h).get("generationConfig", {})


def test_header_and_body_conditions_gate_a_rule():
    h = Harness(config_data(**rules(override=[{
        "models": models("*", headers={"X-Tier": "team-*"}, match=[{"metadata.mode": "fast"}],
                         **{"not-exist": ["metadata.skip"]}),
        "params": {"service_tier": "priority"},
    }])))
    h.chat(headers={"X-Tier": "team-a"}, metadata={"mode": "fast"})
    assert sent(h)["service_tier"] == "priority"
    h.chat(headers={"X-Tier": "solo"}, metadata={"mode": "fast"})
    assert "service_tier" not in sent(h)
    h.chat(headers={"X-Tier": "team-a"}, metadata={"mode": "slow"})
    assert "service_tier" not in sent(h)
    h.chat(headers={"X-Tier": "team-a"}, metadata={"mode": "fast", "skip": True})
    assert "service_tier" not in sent(h)


def test_a_query_path_picks_array_elements():
    tools = [{"type": "function", "function": {"name": "a", "parameters": {}}},
             {"type": "function", "function": {"name": "b", "parameters": {}}}]
    h = Harness(config_data(**rules(
        override=[{"models": models("*"), "params": {'tools.#(function.name=="b").function.strict': True}}],
        filter=[{"models": models("*"), "params": ['tools.#(type=="function")#.function.parameters']}],
    )))
    h.chat(tools=tools)
    got = sent(h)["tools"]
    assert "strict" not in got[0]["function"] and got[1]["function"]["strict"] is True
    assert all("parameters" not in t["function"] for t in got)


def test_oauth_envelopes_are_edited_inside_and_codex_protocol_is_the_responses_upstream():
    h = matrix(**rules(override=[{"models": models("codex-sim", protocol="codex"),
                                  "params": {"reasoning.effort": "high"}}]))
    assert ask(h, "openai", "via-codex")[0] == 200
    assert h.upstream.seen[-1].format == "responses" and sent(h)["reasoning"] == {"effort": "high"}


class Reloadable(Harness):
    """The harness over a config file, reloaded as SIGHUP or the poll would."""

    def __init__(self, path, data: dict) -> None:
        from treq.testing import StubTreq

        from cliproxyd.daemon import build_daemon
        from tests.conftest import _now

        self.path = path
        path.write_text(json.dumps(data))  # JSON is YAML
        super().__init__(data)
        self.daemon = build_daemon(self.clock, self.up, config_path=str(path), poll=0, run_in_thread=_now)
        self.runtime = self.daemon.runtime
        self.runtime.start()
        self.front = StubTreq(self.daemon.resource())

    def rewrite(self, data: dict) -> None:
        self.path.write_text(json.dumps(data))
        assert self.settle(self.runtime.reload("test")) is True


def test_a_reload_brings_new_rules_without_a_restart(tmp_path):
    h = Reloadable(tmp_path / "config.yaml", config_data())
    h.chat()
    assert "temperature" not in sent(h)
    h.rewrite(config_data(**rules(override=[{"models": models("*"), "params": {"temperature": 0}}])))
    h.chat()
    assert sent(h)["temperature"] == 0


def test_no_rules_means_no_compiled_rules_and_an_unnamed_model_is_not_parsed():
    assert PayloadRules.of(PayloadConfig()) is None
    config, _ = parse_config(rules(override=[{"models": models("other-*"), "params": {"x": 1}}]))
    compiled = PayloadRules.of(config.payload)
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
    req = ClientRequest.decode(openai_chat, body)
    assert compiled.apply(body, "openai", "gpt-4o", req) is body


@pytest.mark.parametrize("data, where", [
    (rules(override=[{"params": {"a": 1}}]), "payload.override[0].models"),
    (rules(override=[{"models": models("*", protocol="grpc"), "params": {"a": 1}}]),
     "payload.override[0].models[0].protocol"),
    (rules(default=[{"models": models("*", **{"from-protocol": "x"}), "params": {"a": 1}}]),
     "payload.default[0].models[0].from-protocol"),
    (rules(**{"default-raw": [{"models": models("*"), "params": {"a": "{not json"}}]}),
     "payload.default-raw[0].params.a"),
    (rules(override=[{"models": models("*"), "params": {"tools.*.x": 1}}]), "payload.override[0].params.tools.*.x"),
    (rules(filter=[{"models": models("*"), "params": ["a.#(b==c"]}]), "payload.filter[0].params[0]"),
    (rules(filter=[{"models": models("*"), "params": [3]}]), "payload.filter[0].params[0]"),
    (rules(override=[{"models": [{"protocol": "openai"}], "params": {"a": 1}}]),
     "payload.override[0].models[0].name"),
])
def test_a_bad_rule_is_refused_at_load_naming_its_yaml_path(data, where):
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert e.value.path == where


def test_payload_is_no_longer_reported_as_unsupported():
    _, warnings = parse_config(rules(filter=[{"models": models("*"), "params": ["a"]}]))
    assert warnings == []


def test_a_code_assist_envelope_is_edited_inside_and_gemini_cli_is_its_protocol(tmp_path):
    (tmp_path / "gemini-c.json").write_text(json.dumps({
        "type": "gemini", "project_id": "proj-c", "base_url": "http://upstream.test",
        "token": {"access_token": "ya29", "refresh_token": "r"}}))
    h = Harness({"auth-dir": str(tmp_path), **rules(
        override=[{"models": models("gemini-2.5-pro", protocol="gemini-cli"),
                   "params": {"generationConfig.temperature": 0.1}},
                  {"models": models("gemini-2.5-pro", protocol="gemini"), "params": {"never": True}}])})
    assert h.chat(model="gemini-2.5-pro")[0] == 200
    seen = h.upstream.seen[-1]
    assert seen.envelope == {"model": "gemini-2.5-pro", "project": "proj-c"}
    assert seen.body["generationConfig"]["temperature"] == 0.1 and "never" not in seen.body
