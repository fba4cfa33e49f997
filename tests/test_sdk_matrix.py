"""
Every client format against every upstream format, with the official SDKs.

One daemon (twistd) and one simulated upstream (both subprocesses) serve
four models, one per upstream wire format: ``via-openai`` (an
openai-compatibility provider), ``via-claude`` (claude-api-key),
``via-gemini`` (gemini-api-key) and ``via-codex`` (codex-api-key, OpenAI
Responses). Each SDK asks each of them, streamed and not, and runs a tool
call round trip; the simulated upstream calls the first tool it is given and
then repeats what the tool said.
"""

from __future__ import annotations

import json

import pytest

from tests.test_e2e import http_get, processes

KEY = "sk-matrix-client"
UPSTREAMS = ["via-openai", "via-claude", "via-gemini", "via-codex"]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def four_upstreams(up: str) -> dict:
    """The providers of a config: one model of each upstream format (L{UPSTREAMS}) at the simulated upstream C{up}."""
    return {
        "openai-compatibility": [{"name": "sim", "base-url": up + "/v1", "api-key-entries": [{"api-key": "sk-o"}],
                                  "models": [{"name": "sim-small", "alias": "via-openai"}]}],
        "claude-api-key": [{"api-key": "sk-c", "base-url": up,
                            "models": [{"name": "claude-sim", "alias": "via-claude"}]}],
        "gemini-api-key": [{"api-key": "sk-g", "base-url": up,
                            "models": [{"name": "gemini-sim", "alias": "via-gemini"}]}],
        "codex-api-key": [{"api-key": "sk-x", "base-url": up + "/v1",
                           "models": [{"name": "codex-sim", "alias": "via-codex"}]}],
    }


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    def config(up: str) -> dict:
        return {"api-keys": [KEY], **four_upstreams(up)}

    with processes(tmp_path_factory.mktemp("matrix"), config) as (url, up, _):
        yield url, up


def last_upstream_request(up: str) -> dict:
    return json.loads(http_get(up + "/_sim/requests")[1])[-1]


# -- openai: chat completions ---------------------------------------------------------


@pytest.fixture(scope="module")
def openai_client(daemon):
    import openai

    return openai.OpenAI(base_url=daemon[0] + "/v1", api_key=KEY, max_retries=0, timeout=20)


@pytest.mark.parametrize("model", UPSTREAMS)
def test_openai_chat(openai_client, daemon, model):
    ask = [{"role": "user", "content": "hi"}]
    reply = openai_client.chat.completions.create(model=model, messages=ask)
    assert reply.choices[0].message.content.startswith("Hello from the simulated upstream")
    assert reply.choices[0].finish_reason == "stop" and reply.usage.completion_tokens > 0
    assert last_upstream_request(daemon[1])["format"] == FORMAT[model]
    chunks = list(openai_client.chat.completions.create(model=model, messages=ask, stream=True,
                                                        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", UPSTREAMS)
def test_openai_chat_tool_round_trip(openai_client, model, streamed):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                               "parameters": SCHEMA}}]
    ask = [{"role": "user", "content": "weather in Paris?"}]
    if streamed:
        calls: dict[int, dict] = {}
        for chunk in openai_client.chat.completions.create(model=model, messages=ask, tools=tools, stream=True):
            for d in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                call = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                call["id"] = d.id or call["id"]
                call["name"] = (d.function.name or "") or call["name"]
                call["arguments"] += d.function.arguments or ""
        [call] = calls.values()
    else:
        reply = openai_client.chat.completions.create(model=model, messages=ask, tools=tools)
        assert reply.choices[0].finish_reason == "tool_calls"
        [c] = reply.choices[0].message.tool_calls
        call = {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
    second = openai_client.chat.completions.create(model=model, tools=tools, messages=[
        *ask,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ])
    assert "sunny" in second.choices[0].message.content


# -- openai: responses ------------------------------------------------------------------


@pytest.mark.parametrize("model", UPSTREAMS)
def test_openai_responses(openai_client, model):
    reply = openai_client.responses.create(model=model, input="hi", instructions="be brief")
    assert reply.output_text.startswith("Hello from the simulated upstream")
    assert reply.status == "completed" and reply.usage.output_tokens > 0
    with openai_client.responses.stream(model=model, input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == reply.output_text


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", UPSTREAMS)
def test_openai_responses_tool_round_trip(openai_client, model, streamed):
    tools = [{"type": "function", "name": "get_weather", "description": "Weather", "parameters": SCHEMA,
              "strict": False}]
    if streamed:
        with openai_client.responses.stream(model=model, input="weather in Paris?", tools=tools) as stream:
            first = stream.get_final_response()
    else:
        first = openai_client.responses.create(model=model, input="weather in Paris?", tools=tools)
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    second = openai_client.responses.create(model=model, tools=tools, input=[
        {"role": "user", "content": "weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ])
    assert "sunny" in second.output_text


# -- anthropic --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anthropic_client(daemon):
    import anthropic

    return anthropic.Anthropic(base_url=daemon[0], api_key=KEY, max_retries=0, timeout=20)


@pytest.mark.parametrize("model", UPSTREAMS)
def test_anthropic_messages(anthropic_client, model):
    ask = [{"role": "user", "content": "hi"}]
    reply = anthropic_client.messages.create(model=model, max_tokens=64, system="be brief", messages=ask)
    assert reply.content[0].text.startswith("Hello from the simulated upstream")
    assert reply.stop_reason == "end_turn"
    with anthropic_client.messages.stream(model=model, max_tokens=64, messages=ask) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == reply.content[0].text and final.usage.output_tokens > 0
    count = anthropic_client.messages.count_tokens(model=model, messages=ask)
    assert count.input_tokens > 0


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", UPSTREAMS)
def test_anthropic_tool_round_trip(anthropic_client, model, streamed):
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": SCHEMA}]
    ask = [{"role": "user", "content": "weather in Paris?"}]
    if streamed:
        with anthropic_client.messages.stream(model=model, max_tokens=64, tools=tools, messages=ask) as stream:
            first = stream.get_final_message()
    else:
        first = anthropic_client.messages.create(model=model, max_tokens=64, tools=tools, messages=ask)
    assert first.stop_reason == "tool_use"
    [call] = [b for b in first.content if b.type == "tool_use"]
    assert (call.name, call.input) == ("get_weather", {"city": "Paris"})
    second = anthropic_client.messages.create(model=model, max_tokens=64, tools=tools, messages=[
        *ask,
        {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},
    ])
    assert "sunny" in second.content[0].text


# -- google-genai ----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["v1beta", "v1"])
def genai_client(daemon, request):
    from google import genai
    from google.genai import types

    return genai.Client(api_key=KEY, http_options=types.HttpOptions(
        base_url=daemon[0], api_version=request.param, timeout=20_000))


@pytest.mark.parametrize("model", UPSTREAMS)
def test_genai_generate_content(genai_client, model):
    reply = genai_client.models.generate_content(model=model, contents="hi")
    assert reply.text.startswith("Hello from the simulated upstream")
    assert reply.candidates[0].finish_reason == "STOP"
    assert reply.usage_metadata.candidates_token_count > 0
    text = "".join(chunk.text or "" for chunk in genai_client.models.generate_content_stream(model=model, contents="hi"))
    assert text == reply.text
    assert genai_client.models.count_tokens(model=model, contents="hi").total_tokens > 0


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", UPSTREAMS)
def test_genai_tool_round_trip(genai_client, model, streamed):
    from google.genai import types

    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[types.FunctionDeclaration(
            name="get_weather", description="Weather", parameters_json_schema=SCHEMA)])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    ask = types.Content(role="user", parts=[types.Part(text="weather in Paris?")])
    if streamed:
        calls = [c for chunk in genai_client.models.generate_content_stream(model=model, contents=[ask], config=config)
                 for c in chunk.function_calls or ()]
    else:
        calls = genai_client.models.generate_content(model=model, contents=[ask], config=config).function_calls
    [call] = calls
    assert call.name == "get_weather" and call.args == {"city": "Paris"}
    second = genai_client.models.generate_content(model=model, config=config, contents=[
        ask,
        types.Content(role="model", parts=[types.Part(function_call=call)]),
        types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
            id=call.id, name=call.name, response={"result": "sunny"}))]),
    ])
    assert "sunny" in second.text


FORMAT = {"via-openai": "openai", "via-claude": "claude", "via-gemini": "gemini", "via-codex": "responses"}
