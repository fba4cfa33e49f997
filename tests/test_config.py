"""config.yaml: the example loads, and every bad file says where it is wrong."""

import os

import pytest
import yaml

from cliproxyd.config import ConfigError, load_config, parse_config
from cliproxyd.config.model import Config

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "etc", "cliproxyd.example.yaml")


def test_the_example_config_loads_without_warnings():
    config, warnings = load_config(EXAMPLE)
    assert warnings == []
    assert config.listen == "tcp:8317:interface=127.0.0.1"
    assert config.api_keys == ("sk-client-change-me",)
    [provider] = config.openai_compatibility
    assert provider.base_url == "https://openrouter.ai/api/v1"
    assert [e.api_key for e in provider.api_key_entries] == ["sk-or-v1-first-key", "sk-or-v1-second-key"]
    assert [m.route_name for m in provider.models] == [
        "gpt-4o-mini", "anthropic/claude-3.5-haiku", "llama-70b", "llama-70b"]
    assert config.oauth_model_alias[0][0] == "gemini-cli"
    assert config.state_path == os.path.expanduser("~/.cli-proxy-api") + "/cliproxyd-state.json"
    assert provider.headers == (("X-Title", "cliproxyd"),)
    assert config.auth_dir == os.path.expanduser("~/.cli-proxy-api")
    assert config.request_retry == 3 and config.max_retry_interval == 30


def test_an_empty_file_is_the_default_config():
    assert parse_config(None) == (Config(), [])


def test_client_connections_may_be_idle_for_a_minute_unless_told_otherwise():
    assert parse_config(None)[0].timeouts.client_idle == 60
    assert parse_config({"timeouts": {"client-idle-seconds": 0}})[0].timeouts.client_idle == 0  # no limit
    with pytest.raises(ConfigError, match=r"^timeouts.client-idle-seconds: must be a number, not a string"):
        parse_config({"timeouts": {"client-idle-seconds": "1m"}})
    with pytest.raises(ConfigError, match=r"^timeouts.client-idle-seconds: must be 0 or more, not -5$"):
        parse_config({"timeouts": {"client-idle-seconds": -5}})


def test_upstreams_get_nine_minutes_for_their_response_headers_unless_told_otherwise():
    assert parse_config(None)[0].timeouts.response == 540
    assert parse_config({"timeouts": {"response-seconds": 0}})[0].timeouts.response == 0  # no limit
    assert parse_config({"timeouts": {"response-seconds": 900}})[0].timeouts.response == 900
    with pytest.raises(ConfigError, match=r"^timeouts.response-seconds: must be 0 or more, not -1$"):
        parse_config({"timeouts": {"response-seconds": -1}})


def provider(**over):
    p = {"name": "p", "base-url": "http://u.test/v1", "api-key-entries": [{"api-key": "k"}],
         "models": [{"name": "m"}]}
    p.update(over)
    return p


@pytest.mark.parametrize(
    "data, path, problem",
    [
        ({"port": "8317"}, "port", "must be an integer, not a string ('8317')"),
        ({"port": 70000}, "port", "must be between 1 and 65535"),
        ({"debug": "yes please"}, "debug", "must be true or false"),
        ({"api-keys": "one-key"}, "api-keys", "must be a list"),
        ({"api-keys": ["ok", 12]}, "api-keys[1]", "must be a string"),
        ({"api-keys": ["  "]}, "api-keys[0]", "must not be empty"),
        ({"request-retry": -1}, "request-retry", "must be 0 or more"),
        ({"routing": {"strategy": "random"}}, "routing.strategy", "unknown strategy 'random'"),
        ({"routing": "rr"}, "routing", "must be a mapping"),
        ({"timeouts": {"connect-seconds": 0}}, "timeouts.connect-seconds", "must be more than 0"),
        ({"openai-compatibility": [provider(), {"name": "q"}]}, "openai-compatibility[1].base-url", "required"),
        ({"openai-compatibility": [provider(**{"base-url": "ftp://x"})]}, "openai-compatibility[0].base-url", "http:// or https://"),
        ({"openai-compatibility": [provider(name="")]}, "openai-compatibility[0].name", "must not be empty"),
        ({"openai-compatibility": [provider(), provider(name="P")]}, "openai-compatibility[1].name", "already used"),
        ({"openai-compatibility": [provider(prefix="a/b")]}, "openai-compatibility[0].prefix", "single path segment"),
        ({"openai-compatibility": [provider(models=[{"alias": "x"}])]}, "openai-compatibility[0].models[0].name", "required"),
        ({"openai-compatibility": [provider(**{"api-key-entries": [{"api-key": 5}]})]},
         "openai-compatibility[0].api-key-entries[0].api-key", "must be a string"),
        ({"openai-compatibility": [provider(**{"api-key-entries": [{"api-key": "k", "proxy-url": "ftp://p:1"}]})]},
         "openai-compatibility[0].api-key-entries[0].proxy-url", "unsupported proxy scheme 'ftp'"),
        ({"openai-compatibility": [provider(headers={"X-A": "1\r\nX-B: 2"})]},
         "openai-compatibility[0].headers.X-A", "line break"),
        ({"remote-management": {"allow-remote": "no"}}, "remote-management.allow-remote", "true or false"),
    ],
)
def test_bad_values_name_their_yaml_path(data, path, problem):
    with pytest.raises(ConfigError) as info:
        parse_config(data, "config.yaml")
    assert info.value.path == path
    assert problem in info.value.problem
    message = str(info.value)
    assert message.startswith(f"config.yaml: {path}: ")
    assert "\n" not in message


def test_unknown_and_not_yet_supported_keys_are_warnings():
    _, warnings = parse_config(
        {"colour": "blue", "xai": {"inject-x-search": True}, "routing": {"strategy": "rr", "sticky": True},
         "openai-compatibility": [provider(extra=1)]}
    )
    assert sorted(warnings) == [
        "colour: unknown key; ignored",
        "openai-compatibility[0].extra: unknown key; ignored",
        "routing.sticky: unknown key; ignored",
        "xai: not used by cliproxyd: cliproxyd never adds xAI's x_search tool; a client's own tools pass "
        "as sent",
    ]


def test_a_provider_with_no_keys_or_models_is_a_warning():
    _, warnings = parse_config({"openai-compatibility": [provider(**{"api-key-entries": [], "models": []})]})
    assert any("has no API keys" in w for w in warnings)
    assert any("lists no models" in w for w in warnings)


def test_strategy_aliases_and_key_clean_up():
    config, _ = parse_config({
        "routing": {"strategy": "FF"},
        "api-keys": [" a ", "a", "b"],
        "openai-compatibility": [provider(**{"api-key-entries": [{"api-key": "k"}, {"api-key": "k"},
                                                                  {"api-key": "j", "proxy-url": "direct"}],
                                             "api-keys": ["legacy"]})],
    })
    assert config.routing.strategy == "fill-first"
    assert config.api_keys == ("a", "b")
    assert [e.api_key for e in config.openai_compatibility[0].api_key_entries] == ["k", "j", "legacy"]


def test_host_and_port_make_the_listen_endpoint():
    assert parse_config({"host": "::1", "port": 9000})[0].listen == r"tcp:9000:interface=\:\:1"
    assert parse_config({})[0].listen == "tcp:8317:interface=0.0.0.0"


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("port: 8317\nrouting:\n  strategy: [rr\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value).startswith(f"{path}: YAML syntax error: line ")


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "nope.yaml"))
    assert "cannot read the file" in str(info.value)


def test_top_level_must_be_a_mapping():
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_load("- a\n- b\n"), "c.yaml")
    assert str(info.value) == "c.yaml: must be a mapping, not a list"


def test_a_secret_key_that_starts_like_a_bcrypt_hash_must_be_one():
    good = "$2a$10$" + "a" * 53
    assert parse_config({"remote-management": {"secret-key": good}})[0].remote_management.secret_key == good
    assert parse_config({"remote-management": {"secret-key": "$2"}})[0].remote_management.secret_key == "$2"
    with pytest.raises(ConfigError) as info:
        parse_config({"remote-management": {"secret-key": "$2b$10$short"}}, "c.yaml")
    assert str(info.value).startswith("c.yaml: remote-management.secret-key: starts like a bcrypt hash")
