"""
client-keys end to end, per client format, with the official SDKs over
loopback: the daemon (twistd) and a simulated upstream serving one model
per upstream format. A key's scope shows in its model lists and refuses the
rest with the SDK's own 403 error; a key over its rpm gets the SDK's own
429 with Retry-After; the tokens a stream reports are what the key is
charged, read through the management API.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from cliproxyd.modelnames import claude_listed_id
from tests.test_e2e import processes
from tests.test_sdk_matrix import four_upstreams

MGMT = "mgmt-loopback-1"
FORMATS = ("openai", "responses", "claude", "gemini")


def _keys() -> list[dict]:
    keys = [{"name": "scoped", "key": "sk-lb-scoped", "models": ["via-*"], "excluded-models": ["via-codex"]}]
    for fmt in FORMATS:
        keys.append({"name": f"rpm-{fmt}", "key": f"sk-lb-rpm-{fmt}", "rpm": 1})
        keys.append({"name": f"tok-{fmt}", "key": f"sk-lb-tok-{fmt}", "daily-tokens": 1_000_000})
    return keys


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    def config(up: str) -> dict:
        return {
            "api-keys": ["sk-lb-full"],
            "client-keys": _keys(),
            "remote-management": {"secret-key": MGMT},
            **four_upstreams(up),
        }

    with processes(tmp_path_factory.mktemp("clientkeys"), config) as (url, _, _):
        yield url


def charged(url: str, name: str) -> int:
    req = urllib.request.Request(f"{url}/v0/management/client-keys/{name}",
                                 headers={"Authorization": f"Bearer {MGMT}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["usage"]["day-tokens"]


def openai(url: str, key: str):
    import openai as sdk

    return sdk.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=20)


def anthropic(url: str, key: str):
    import anthropic as sdk

    return sdk.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=20)


def genai(url: str, key: str):
    from google import genai as sdk
    from google.genai import types

    return sdk.Client(api_key=key, http_options=types.HttpOptions(base_url=url, api_version="v1beta",
                                                                   timeout=20_000))


ALLOWED = ["via-claude", "via-gemini", "via-openai"]


# -- scope ---------------------------------------------------------------------------------


def test_openai_lists_and_refuses_by_scope(daemon):
    import openai as sdk

    client = openai(daemon, "sk-lb-scoped")
    assert sorted(m.id for m in client.models.list()) == ALLOWED
    with pytest.raises(sdk.PermissionDeniedError) as e:
        client.chat.completions.create(model="via-codex", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 403 and "via-codex" in e.value.message
    assert e.value.body["code"] == "model_not_allowed"
    with pytest.raises(sdk.PermissionDeniedError):
        client.responses.create(model="via-codex", input="hi")
    assert client.chat.completions.create(model="via-openai", messages=[{"role": "user", "content": "hi"}]).choices


def test_anthropic_lists_and_refuses_by_scope(daemon):
    import anthropic as sdk

    client = anthropic(daemon, "sk-lb-scoped")
    # A Claude list names the models that are not Claude's under claude- ids (claude-code cloaking), the
    # key's list too.
    assert sorted(m.id for m in client.models.list()) == sorted(claude_listed_id(name) for name in ALLOWED)
    with pytest.raises(sdk.PermissionDeniedError) as e:
        client.messages.create(model="via-codex", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 403 and e.value.body["error"]["type"] == "permission_error"


def test_genai_lists_and_refuses_by_scope(daemon):
    from google.genai import errors

    client = genai(daemon, "sk-lb-scoped")
    assert sorted(m.name.removeprefix("models/") for m in client.models.list()) == ALLOWED
    with pytest.raises(errors.ClientError) as e:
        client.models.generate_content(model="via-codex", contents="hi")
    assert e.value.code == 403 and e.value.status == "PERMISSION_DENIED"


# -- rpm -----------------------------------------------------------------------------------------


def test_openai_chat_over_rpm_is_a_rate_limit_error_with_retry_after(daemon):
    import openai as sdk

    client = openai(daemon, "sk-lb-rpm-openai")
    client.chat.completions.create(model="via-claude", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(sdk.RateLimitError) as e:
        client.chat.completions.create(model="via-claude", messages=[{"role": "user", "content": "hi"}])
    assert 0 < int(e.value.response.headers["retry-after"]) <= 60
    assert e.value.body["code"] == "client_key_limit"


def test_openai_responses_over_rpm_is_a_rate_limit_error(daemon):
    import openai as sdk

    client = openai(daemon, "sk-lb-rpm-responses")
    client.responses.create(model="via-codex", input="hi")
    with pytest.raises(sdk.RateLimitError) as e:
        client.responses.create(model="via-codex", input="hi")
    assert int(e.value.response.headers["retry-after"]) > 0


def test_anthropic_over_rpm_is_a_rate_limit_error(daemon):
    import anthropic as sdk

    client = anthropic(daemon, "sk-lb-rpm-claude")
    ask = [{"role": "user", "content": "hi"}]
    client.messages.create(model="via-gemini", max_tokens=16, messages=ask)
    with pytest.raises(sdk.RateLimitError) as e:
        client.messages.create(model="via-gemini", max_tokens=16, messages=ask)
    assert int(e.value.response.headers["retry-after"]) > 0
    assert e.value.body["error"]["type"] == "rate_limit_error"


def test_genai_over_rpm_is_a_429(daemon):
    from google.genai import errors

    client = genai(daemon, "sk-lb-rpm-gemini")
    client.models.generate_content(model="via-openai", contents="hi")
    with pytest.raises(errors.ClientError) as e:
        client.models.generate_content(model="via-openai", contents="hi")
    assert e.value.code == 429 and e.value.status == "RESOURCE_EXHAUSTED"


# -- tokens: what streams report is what the key is charged --------------------------------------


@pytest.mark.parametrize("model", ["via-openai", "via-claude"])
def test_openai_stream_is_charged_its_reported_usage(daemon, model):
    client = openai(daemon, "sk-lb-tok-openai")
    before = charged(daemon, "tok-openai")
    chunks = list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, stream_options={"include_usage": True}))
    [usage] = [c.usage for c in chunks if c.usage]
    assert charged(daemon, "tok-openai") - before == usage.total_tokens


def test_responses_stream_is_charged_its_reported_usage(daemon):
    client = openai(daemon, "sk-lb-tok-responses")
    before = charged(daemon, "tok-responses")
    with client.responses.stream(model="via-codex", input="hi") as stream:
        final = stream.get_final_response()
    assert charged(daemon, "tok-responses") - before == final.usage.total_tokens


def test_anthropic_stream_is_charged_its_reported_usage(daemon):
    client = anthropic(daemon, "sk-lb-tok-claude")
    before = charged(daemon, "tok-claude")
    with client.messages.stream(model="via-claude", max_tokens=64,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        final = stream.get_final_message()
    assert charged(daemon, "tok-claude") - before == final.usage.input_tokens + final.usage.output_tokens


def test_genai_stream_is_charged_its_reported_usage(daemon):
    client = genai(daemon, "sk-lb-tok-gemini")
    before = charged(daemon, "tok-gemini")
    chunks = list(client.models.generate_content_stream(model="via-gemini", contents="hi"))
    total = [c.usage_metadata.total_token_count for c in chunks if c.usage_metadata][-1]
    assert charged(daemon, "tok-gemini") - before == total
