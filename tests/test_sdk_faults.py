"""
What users see of upstream faults inside a 200, through the official SDKs.

One daemon (twistd) and one simulated upstream (both subprocesses), two keys
for each upstream wire format, fill-first, so that the first key is always
tried first and its script decides. A stream that ends before its final
event after content reached the client must make every SDK raise, never
hand back the partial text as an answer; a stream that opens with an error,
and a whole answer that is no JSON object, must never reach the client while
the second key can answer.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.test_e2e import http_get, processes
from tests.test_stream_faults import MODELS, fault_config

KEY = "sk-faults-client"
ASK = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    def config(up: str) -> dict:
        # Every test starts with the first key: none of them leaves it cooling.
        return {**fault_config(up), "api-keys": [KEY], "disable-cooling": True}

    with processes(tmp_path_factory.mktemp("faults"), config) as (url, up, _):
        yield url, up


def script(daemon, model: str, behaviour: str) -> None:
    """The next request to the model's first key gets C{behaviour}; every later one an answer."""
    body = json.dumps({MODELS[model][1]: [behaviour, "ok"]}).encode()
    request = urllib.request.Request(daemon[1] + "/_sim/script", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def seen(daemon) -> list[str]:
    return [r["key"] for r in json.loads(http_get(daemon[1] + "/_sim/requests")[1])]


@pytest.fixture(scope="module")
def openai_client(daemon):
    import openai

    return openai.OpenAI(base_url=daemon[0] + "/v1", api_key=KEY, max_retries=0, timeout=20)


@pytest.fixture(scope="module")
def anthropic_client(daemon):
    import anthropic

    return anthropic.Anthropic(base_url=daemon[0], api_key=KEY, max_retries=0, timeout=20)


@pytest.fixture(scope="module")
def genai_client(daemon):
    from google import genai
    from google.genai import types

    return genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=daemon[0], timeout=20_000))


# -- a stream that ends before its final event, after content: every SDK raises ------------------


@pytest.mark.parametrize("model", list(MODELS))
def test_openai_chat_raises_on_a_stream_that_ends_early(daemon, openai_client, model):
    import openai

    script(daemon, model, "end-early:3")
    text = []
    with pytest.raises(openai.APIError, match="ended before its final event"):
        for chunk in openai_client.chat.completions.create(model=model, messages=ASK, stream=True):
            text += [c.delta.content or "" for c in chunk.choices]
    assert "".join(text).startswith("Hello")  # the partial text came, and then the error


@pytest.mark.parametrize("model", list(MODELS))
def test_openai_responses_raise_on_a_stream_that_ends_early(daemon, openai_client, model):
    script(daemon, model, "end-early:3")
    with openai_client.responses.stream(model=model, input="hi") as stream:
        got = list(stream)
        with pytest.raises(RuntimeError, match="response.completed"):
            stream.get_final_response()
    assert got[-1].type == "error" and "ended before its final event" in got[-1].message
    assert "".join(e.delta for e in got if e.type == "response.output_text.delta").startswith("Hello")


@pytest.mark.parametrize("model", list(MODELS))
def test_anthropic_raises_on_a_stream_that_ends_early(daemon, anthropic_client, model):
    import anthropic

    script(daemon, model, "end-early:3")
    text = []
    with pytest.raises(anthropic.APIError, match="ended before its final event"):
        with anthropic_client.messages.stream(model=model, max_tokens=64, messages=ASK) as stream:
            for piece in stream.text_stream:
                text.append(piece)
            stream.get_final_message()
    assert "".join(text).startswith("Hello")


@pytest.mark.parametrize("model", list(MODELS))
def test_genai_raises_on_a_stream_that_ends_early(daemon, genai_client, model):
    from google.genai import errors

    script(daemon, model, "end-early:3")
    text = []
    with pytest.raises(errors.APIError, match="ended before its final event"):
        for chunk in genai_client.models.generate_content_stream(model=model, contents="hi"):
            text.append(chunk.text or "")
    assert "".join(text).startswith("Hello")


# -- faults before any content: the SDK gets the second key's answer, and nothing else -------------


def answers(daemon, clients, model: str, stream: bool) -> str:
    """The text one client format's SDK gets for C{model} (the client is the model's own format)."""
    fmt = MODELS[model][0]
    openai_client, anthropic_client, genai_client = clients
    if fmt == "openai":
        if stream:
            return "".join(c.choices[0].delta.content or "" for c in openai_client.chat.completions.create(
                model=model, messages=ASK, stream=True) if c.choices)
        return openai_client.chat.completions.create(model=model, messages=ASK).choices[0].message.content
    if fmt == "responses":
        if stream:
            with openai_client.responses.stream(model=model, input="hi") as s:
                return s.get_final_response().output_text
        return openai_client.responses.create(model=model, input="hi").output_text
    if fmt == "claude":
        if stream:
            with anthropic_client.messages.stream(model=model, max_tokens=64, messages=ASK) as s:
                return s.get_final_message().content[0].text
        return anthropic_client.messages.create(model=model, max_tokens=64, messages=ASK).content[0].text
    if stream:
        return "".join(c.text or "" for c in genai_client.models.generate_content_stream(model=model, contents="hi"))
    return genai_client.models.generate_content(model=model, contents="hi").text


@pytest.mark.parametrize("behaviour, stream", [
    ("error-first", True), ("preamble-error", True), ("overloaded", True), ("end-early:1", True),
    ("garbage:truncated", False), ("garbage:html", False), ("overloaded", False)])
@pytest.mark.parametrize("model", list(MODELS))
def test_a_fault_before_any_content_is_never_seen_while_another_key_answers(
        daemon, openai_client, anthropic_client, genai_client, model, behaviour, stream):
    if model == "via-gemini" and behaviour == "end-early:1":
        behaviour = "end-early:0"  # a Gemini stream's first event is content already
    script(daemon, model, behaviour)
    before = len(seen(daemon))
    text = answers(daemon, (openai_client, anthropic_client, genai_client), model, stream)
    _, first, second = MODELS[model]
    assert text.endswith(f"(key ...{second[-6:]}).")
    assert seen(daemon)[before:] == [first, second]
