"""
models[] fields (display-name, max-context-length, max-output-tokens,
thinking, input-modalities, output-modalities) and oauth-model-alias
display-name reach the model lists of every client format: OpenAI's
/v1/models, Claude's (same path, Claude clients) and Gemini's /v1beta/models,
and the single-model answers.
"""

from __future__ import annotations

import json

import pytest

from cliproxyd.config import ConfigError, parse_config
from cliproxyd.modelnames import claude_listed_name
from tests.conftest import UPSTREAM, Harness

KIMI = {
    "name": "moonshot/kimi-k2", "alias": "kimi", "display-name": "Kimi K2",
    "max-context-length": 262144, "max-output-tokens": 16384,
    "thinking": {"levels": ["low", "High"], "min": 1024, "max": 32768, "dynamic-allowed": True},
    "input-modalities": ["text", "image"], "output-modalities": ["text"],
}


def harness(models=None, **top) -> Harness:
    provider = {"name": "sim", "base-url": UPSTREAM, "prefix": "team", "api-key-entries": [{"api-key": "k"}],
                "models": models if models is not None else [KIMI, {"name": "plain"}]}
    return Harness({"openai-compatibility": [provider], **top})


def listed(h: Harness, path: str, headers=None) -> dict:
    code, _, body = h.request("GET", path, headers=headers)
    assert code == 200, body
    return json.loads(body)


def test_openai_list_carries_the_configured_fields_and_plain_models_stay_plain():
    h = harness()
    data = {m["id"]: m for m in listed(h, "/v1/models")["data"]}
    assert set(data) == {"kimi", "team/kimi", "plain", "team/plain"}
    for name in ("kimi", "team/kimi"):  # the prefixed name is the same model
        kimi = data[name]
        assert kimi["display_name"] == "Kimi K2"
        assert kimi["context_length"] == 262144 and kimi["max_completion_tokens"] == 16384
        assert kimi["thinking"] == {"levels": ["low", "high"], "min": 1024, "max": 32768, "dynamic_allowed": True}
        assert kimi["input_modalities"] == ["text", "image"] and kimi["output_modalities"] == ["text"]
    assert set(data["plain"]) == {"id", "object", "created", "owned_by"}


def test_claude_list_shows_display_name_and_token_limits():
    h = harness()
    data = {claude_listed_name(m["id"]): m for m in listed(h, "/v1/models", {"anthropic-version": "2023-06-01"})["data"]}
    assert data["kimi"]["display_name"] == "Kimi K2"
    assert data["kimi"]["max_input_tokens"] == 262144 and data["kimi"]["max_tokens"] == 16384
    assert data["plain"]["display_name"] == "plain" and "max_tokens" not in data["plain"]


def test_gemini_list_and_single_model_show_the_fields_in_gemini_spelling():
    h = harness()
    models = {m["name"]: m for m in listed(h, "/v1beta/models")["models"]}
    kimi = models["models/kimi"]
    assert kimi["displayName"] == kimi["description"] == "Kimi K2"
    assert kimi["inputTokenLimit"] == 262144 and kimi["outputTokenLimit"] == 16384
    assert kimi["thinking"] is True
    assert kimi["supportedInputModalities"] == ["TEXT", "IMAGE"] and kimi["supportedOutputModalities"] == ["TEXT"]
    assert models["models/plain"]["displayName"] == "plain" and "thinking" not in models["models/plain"]
    assert listed(h, "/v1beta/models/kimi") == kimi


def test_the_single_openai_model_answer_carries_the_fields_too():
    h = harness()
    one = listed(h, "/v1/models/kimi")
    assert one["id"] == "kimi" and one["display_name"] == "Kimi K2" and one["context_length"] == 262144


def test_an_alias_pool_lists_once_with_its_first_entry_s_fields():
    h = harness([{"name": "a", "alias": "pool", "display-name": "First"},
                 {"name": "b", "alias": "pool", "display-name": "Second"}])
    data = [m for m in listed(h, "/v1/models")["data"] if m["id"] == "pool"]
    assert len(data) == 1 and data[0]["display_name"] == "First"


def test_api_key_entries_models_carry_fields():
    h = Harness({"claude-api-key": [{"api-key": "k", "base-url": UPSTREAM,
                                     "models": [{"name": "claude-sonnet-4-5", "alias": "sonnet",
                                                 "display-name": "Sonnet", "max-context-length": 200000}]}]})
    data = {claude_listed_name(m["id"]): m for m in listed(h, "/v1/models", {"anthropic-version": "2023-06-01"})["data"]}
    assert data["sonnet"]["display_name"] == "Sonnet" and data["sonnet"]["max_input_tokens"] == 200000


def test_oauth_model_alias_display_name_names_the_alias_in_every_list(tmp_path):
    auth = tmp_path / "auth"
    auth.mkdir()
    (auth / "a.json").write_text(json.dumps({"type": "claude", "access_token": "t", "refresh_token": "r"}))
    h = Harness({"auth-dir": str(auth), "oauth-model-alias": {"claude": [
        {"name": "claude-sonnet-4-5", "alias": "sonnet", "display-name": "Claude Sonnet (pool)", "fork": True}]}})
    data = {m["id"]: m for m in listed(h, "/v1/models")["data"]}
    assert data["sonnet"]["display_name"] == "Claude Sonnet (pool)"
    assert "display_name" not in data["claude-sonnet-4-5"]  # the forked original keeps its own name
    claude = {claude_listed_name(m["id"]): m for m in listed(h, "/v1/models", {"anthropic-version": "2023-06-01"})["data"]}
    assert claude["sonnet"]["display_name"] == "Claude Sonnet (pool)"
    gemini = {m["name"]: m for m in listed(h, "/v1beta/models")["models"]}
    assert gemini["models/sonnet"]["displayName"] == "Claude Sonnet (pool)"


def test_a_reload_changes_the_lists():
    h = harness()
    assert listed(h, "/v1/models")["data"][0]["id"]
    config, _ = parse_config({"openai-compatibility": [{
        "name": "sim", "base-url": UPSTREAM, "api-key-entries": [{"api-key": "k"}],
        "models": [{**KIMI, "display-name": "Kimi K2 (new)"}]}]})
    h.runtime.source.current = h.runtime.assembly.build(config)  # as a reload swaps it in
    data = {m["id"]: m for m in listed(h, "/v1/models")["data"]}
    assert data["kimi"]["display_name"] == "Kimi K2 (new)"


@pytest.mark.parametrize(
    "model, path, problem",
    [
        ({"max-context-length": -1}, "models[0].max-context-length", "must be 0 or more"),
        ({"max-output-tokens": "big"}, "models[0].max-output-tokens", "must be an integer"),
        ({"display-name": 3}, "models[0].display-name", "must be a string"),
        ({"display-name": "a\nb"}, "models[0].display-name", "line break"),
        ({"thinking": {"levels": "high"}}, "models[0].thinking.levels", "must be a list"),
        ({"thinking": {"levels": ["very high"]}}, "models[0].thinking.levels[0]", "one word"),
        ({"thinking": {"min": 10, "max": 5}}, "models[0].thinking.min", "must not be more than max"),
        ({"thinking": {"zero-allowed": "yes"}}, "models[0].thinking.zero-allowed", "true or false"),
        ({"input-modalities": [1]}, "models[0].input-modalities[0]", "must be a string"),
        ({"force-mapping": "yes"}, "models[0].force-mapping", "true or false"),
    ],
)
def test_bad_model_fields_name_their_yaml_path(model, path, problem):
    data = {"openai-compatibility": [{"name": "p", "base-url": UPSTREAM, "api-key-entries": [{"api-key": "k"}],
                                      "models": [{"name": "m", **model}]}]}
    with pytest.raises(ConfigError) as info:
        parse_config(data, "config.yaml")
    assert info.value.path == f"openai-compatibility[0].{path}"
    assert problem in info.value.problem


def test_bad_alias_fields_name_their_yaml_path():
    for entry, key in (({"display-name": ["x"]}, "display-name"), ({"force-mapping": 1}, "force-mapping")):
        with pytest.raises(ConfigError) as info:
            parse_config({"oauth-model-alias": {"claude": [{"name": "a", "alias": "b", **entry}]}})
        assert info.value.path == f"oauth-model-alias.claude[0].{key}"
