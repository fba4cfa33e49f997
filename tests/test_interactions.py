"""
Google's Interactions API: the C{interactions} format, the
C{interactions-api-key} list and C{POST /v1beta/interactions}, through the
same conductor as every provider (picks, failover, cooldowns), on loopback
with the simulated upstream, and with Google's own SDK against the daemon.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import treq

from cliproxyd.config import ConfigError, parse_config
from cliproxyd.formats import canonical as C
from cliproxyd.formats import interactions
from cliproxyd.formats.common import Origin
from cliproxyd.formats.translate import SSEParser
from tests.test_accounts import Served

ORIGIN = Origin(now=lambda: 1_700_000_000.0, new_id=lambda: "fixedid")


# -- the format -------------------------------------------------------------------------------


def test_a_request_of_steps_decodes_to_the_canonical_conversation():
    body = {
        "model": "models/gemini-2.5-flash",
        "system_instruction": "be brief",
        "input": [
            {"type": "user_input", "content": [{"type": "text", "text": "weather?"}]},
            {"type": "function_call", "id": "c1", "name": "get_weather", "arguments": {"city": "Paris"}},
            {"type": "function_result", "call_id": "c1", "name": "get_weather", "result": "sunny"},
            {"type": "model_output", "content": [{"type": "text", "text": "It is sunny."}]},
            "and tomorrow?",
        ],
        "tools": [{"type": "function", "name": "get_weather", "description": "Weather",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "generation_config": {"temperature": 0.5, "max_output_tokens": 64, "thinking_level": "low",
                              "stop_sequences": ["END"]},
        "stream": True,
    }
    assert interactions.validate(body) == ("gemini-2.5-flash", True)
    req = interactions.request_to_canonical(body)
    assert req.model == "gemini-2.5-flash" and req.stream and req.system == "be brief"
    assert [m.role for m in req.messages] == ["user", "assistant", "user", "assistant", "user"]
    assert req.messages[1].parts == (C.ToolCall("c1", "get_weather", '{"city":"Paris"}'),)
    assert req.messages[2].parts == (C.ToolResult("c1", "sunny"),)
    assert req.tools[0].name == "get_weather" and req.temperature == 0.5 and req.max_tokens == 64
    assert req.stop == ("END",) and req.reasoning.level == "low"
    # And back out: the same steps, the function result named after its call.
    out = interactions.request_from_canonical(req, "gemini-2.5-pro")
    assert out["model"] == "gemini-2.5-pro" and out["system_instruction"] == "be brief" and out["stream"] is True
    assert [s["type"] for s in out["input"]] == ["user_input", "function_call", "function_result", "model_output",
                                                 "user_input"]
    assert out["input"][1]["arguments"] == {"city": "Paris"} and out["input"][2]["name"] == "get_weather"
    assert out["generation_config"] == {"temperature": 0.5, "max_output_tokens": 64, "stop_sequences": ["END"],
                                        "thinking_level": "low"}


@pytest.mark.parametrize("body, message", [
    ({"input": "hi"}, "model"),
    ({"agent": "deep-research", "input": "hi"}, "agent"),
    ({"model": "m"}, "input"),
    ({"model": "m", "input": []}, "input"),
    ({"model": "m", "input": 3}, "input"),
    ({"model": "m", "input": "hi", "stream": "yes"}, "stream"),
])
def test_a_body_that_is_no_interaction_is_refused_naming_the_field(body, message):
    with pytest.raises(C.BadRequest, match=message):
        interactions.request_to_canonical(body)


def test_an_answer_and_its_stream_say_the_same_thing():
    answer = C.Response("i-1", "gemini-2.5-flash",
                        (C.Thinking("hmm"), C.Text("Hel"), C.Text("lo"), C.ToolCall("c9", "f", '{"a":1}')),
                        C.TOOL_CALLS, C.Usage(7, 5, 0, 2))
    whole = interactions.response_from_canonical(answer, "gemini-2.5-flash", origin=ORIGIN)
    assert [s["type"] for s in whole["steps"]] == ["thought", "model_output", "function_call"]
    assert whole["usage"] == {"total_input_tokens": 7, "total_output_tokens": 3, "total_tokens": 12,
                              "total_thought_tokens": 2}
    back = interactions.response_to_canonical(whole)
    assert back.parts == (C.Thinking("hmm"), C.Text("Hel"), C.Text("lo"), C.ToolCall("c9", "f", '{"a":1}'))
    assert back.stop_reason == C.TOOL_CALLS and back.usage == C.Usage(7, 5, 0, 2)

    encoder = interactions.StreamEncoder("gemini-2.5-flash", origin=ORIGIN)
    events = [C.Start("i-1", "gemini-2.5-flash"), C.ThinkingDelta("hmm"), C.TextDelta("Hel"), C.TextDelta("lo"),
              C.ToolCallStart(0, "c9", "f"), C.ToolCallDelta(0, '{"a":1}'), C.Finish(C.TOOL_CALLS),
              C.UsageEvent(C.Usage(7, 5, 0, 2))]
    sse = b"".join(encoder.feed(e) for e in events) + encoder.close()
    assert interactions.is_stream_end(sse)
    names = [line[len(b"event: "):] for line in sse.split(b"\n") if line.startswith(b"event: ")]
    assert names == [b"interaction.created", b"interaction.status_update",
                     b"step.start", b"step.delta", b"step.stop",  # the thought
                     b"step.start", b"step.delta", b"step.delta", b"step.stop",  # the text, one step
                     b"step.start", b"step.delta", b"step.stop",  # the call and its arguments
                     b"interaction.completed"]
    decoder = interactions.StreamDecoder(origin=ORIGIN)
    decoded = [e for payload in SSEParser().feed(sse) for e in decoder.feed(json.loads(payload))]
    assert decoded == [C.Start("i-1", "gemini-2.5-flash"), C.ThinkingDelta("hmm"), C.TextDelta("Hel"),
                       C.TextDelta("lo"), C.ToolCallStart(0, "c9", "f"), C.ToolCallDelta(0, '{"a":1}'),
                       C.Finish(C.TOOL_CALLS), C.UsageEvent(C.Usage(7, 5, 0, 2))]
    assert not interactions.is_stream_end(sse.split(b"event: interaction.completed")[0])


def test_an_error_inside_a_stream_is_the_apis_error_event():
    event = interactions.stream_error_event("quota gone", 429)
    [payload] = SSEParser().feed(event)
    assert event.startswith(b"event: error\n")
    assert interactions.StreamDecoder().feed(json.loads(payload)) == [C.ErrorEvent("quota gone", "429", 429)]
    assert json.loads(interactions.error_body(404, "no such model")) == {
        "error": {"code": 404, "message": "no such model", "status": "NOT_FOUND"}}


# -- config -----------------------------------------------------------------------------------


def test_interactions_keys_are_parsed_and_errors_name_their_yaml_path():
    config, warnings = parse_config({"interactions-api-key": [
        {"api-key": "ik-1", "prefix": "native", "weight": 3, "priority": 2, "base-url": "https://gw.example",
         "headers": {"X-A": "1"}, "excluded-models": ["*-pro"], "proxy-url": "direct",
         "models": [{"name": "gemini-2.5-flash", "alias": "flash"}]}]})
    assert warnings == []
    [key] = config.interactions_api_key
    assert (key.api_key, key.prefix, key.weight, key.priority) == ("ik-1", "native", 3, 2)
    with pytest.raises(ConfigError, match=r"interactions-api-key\[1\]\.api-key"):
        parse_config({"interactions-api-key": [{"api-key": "a"}, {"api-key": ""}]})
    with pytest.raises(ConfigError, match=r"interactions-api-key\[0\]\.weight"):
        parse_config({"interactions-api-key": [{"api-key": "a", "weight": "heavy"}]})


# -- through the frontend, on loopback --------------------------------------------------------


async def _interact(served: Served, body: dict, headers: dict | None = None, path: str = "/v1beta/interactions"):
    response = await treq.post(served.url + path, json=body, headers=headers)
    return response, await response.content()


def _events(raw: bytes) -> list[dict]:
    return [json.loads(p) for p in SSEParser().feed(raw) if p != b"[DONE]"]


def _text_of_stream(raw: bytes) -> str:
    return "".join(e["delta"].get("text", "") for e in _events(raw) if e.get("event_type") == "step.delta")


@pytest_twisted.ensureDeferred
async def test_an_interactions_client_reaches_an_interactions_key_as_it_asked():
    from twisted.internet import reactor

    served = Served(reactor, lambda base: {"interactions-api-key": [
        {"api-key": "ik-native", "base-url": base, "models": [{"name": "gemini-2.5-flash", "alias": "flash"}]}]})
    try:
        ask = {"model": "flash", "input": "hi", "store": False, "previous_interaction_id": "v1_abc"}
        response, raw = await _interact(served, ask)
        assert response.code == 200, raw
        body = json.loads(raw)
        assert body["status"] == "completed" and body["model"] == "gemini-2.5-flash"  # passed through as it came
        assert body["steps"][0]["content"][0]["text"].startswith("Hello from the simulated upstream")
        seen = served.upstream.seen[-1]
        # Passed through: renamed, and every field the client sent still there for Google to judge.
        assert seen.path == "/v1beta/interactions" and seen.format == "interactions"
        assert seen.body == {**ask, "model": "gemini-2.5-flash"}
        assert seen.headers["x-goog-api-key"] == "ik-native" and seen.headers["api-revision"] == "2026-05-20"
        # Streamed, at Google's SDK path, with the client's own revision.
        response, raw = await _interact(served, {**ask, "stream": True}, {"Api-Revision": "2025-12-01"},
                                        path="/v1/interactions")
        assert response.code == 200 and response.headers.getRawHeaders(b"content-type")[0].startswith(
            b"text/event-stream")
        assert _text_of_stream(raw).startswith("Hello from the simulated upstream")
        assert _events(raw)[-1]["event_type"] == "interaction.completed"
        assert served.upstream.seen[-1].headers["api-revision"] == "2025-12-01"
        assert served.upstream.seen[-1].stream is True
    finally:
        await served.close()


@pytest_twisted.ensureDeferred
async def test_other_clients_reach_an_interactions_key_and_an_interactions_client_reaches_other_upstreams():
    from twisted.internet import reactor

    served = Served(reactor, lambda base: {
        "interactions-api-key": [{"api-key": "ik-1", "base-url": base,
                                  "models": [{"name": "gemini-2.5-flash", "alias": "via-interactions"}]}],
        "gemini-api-key": [{"api-key": "gk-1", "base-url": base,
                            "models": [{"name": "gemini-2.5-pro", "alias": "via-gemini"}]}],
        "claude-api-key": [{"api-key": "ck-1", "base-url": base,
                            "models": [{"name": "claude-sim", "alias": "via-claude"}]}],
    })
    try:
        response, body = await served.chat("via-interactions")  # OpenAI client, Interactions upstream
        assert response.code == 200, body
        assert body["choices"][0]["message"]["content"].startswith("Hello from the simulated upstream")
        seen = served.upstream.seen[-1]
        assert seen.format == "interactions" and seen.body["input"] == [
            {"type": "user_input", "content": [{"type": "text", "text": "hi"}]}]
        for model, fmt in (("via-gemini", "gemini"), ("via-claude", "claude")):
            for stream in (False, True):
                ask = {"model": model, "input": [{"type": "user_input", "content": [{"type": "text", "text": "hi"}]}],
                       "system_instruction": "be brief", "stream": stream}
                response, raw = await _interact(served, ask)
                assert response.code == 200, raw
                text = _text_of_stream(raw) if stream else json.loads(raw)["steps"][0]["content"][0]["text"]
                assert text.startswith("Hello from the simulated upstream"), raw
                assert served.upstream.seen[-1].format == fmt
        # A tool round trip from an Interactions client to Claude: the call, then what the tool said.
        tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
        ask = {"model": "via-claude", "input": "weather?", "tools": tools}
        response, raw = await _interact(served, ask)
        [call] = [s for s in json.loads(raw)["steps"] if s["type"] == "function_call"]
        assert call["name"] == "get_weather" and call["arguments"] == {"city": "Paris"}
        ask["input"] = ["weather?", call, {"type": "function_result", "call_id": call["id"], "result": "sunny"}]
        response, raw = await _interact(served, ask)
        assert json.loads(raw)["steps"][0]["content"][0]["text"] == "The tool said: sunny"
    finally:
        await served.close()


@pytest_twisted.ensureDeferred
async def test_a_failing_key_fails_over_cools_and_all_cooling_is_googles_429():
    from twisted.internet import reactor

    served = Served(reactor, lambda base: {"routing": {"strategy": "fill-first"}, "interactions-api-key": [
        {"api-key": "ik-a", "base-url": base}, {"api-key": "ik-b", "base-url": base}]})
    upstream = served.upstream
    try:
        upstream.script("ik-a", "status:429:600")
        for stream in (False, True):
            response, raw = await _interact(served, {"model": "gemini-2.5-flash", "input": "hi", "stream": stream})
            assert response.code == 200, raw
        # a's 429 once, then it cools: the second request goes to b at once.
        assert [s.key for s in upstream.seen] == ["ik-a", "ik-b", "ik-b"]
        upstream.script("ik-b", "error-event")  # a stream whose first event is an error: b fails before a byte
        response, raw = await _interact(served, {"model": "gemini-2.5-flash", "input": "hi", "stream": True})
        assert response.code == 500, raw  # the status the error event names, its error as it came
        assert json.loads(raw)["error"]["message"] == "simulated in-stream error"
        upstream.script("ik-b", "status:429:600")
        response, raw = await _interact(served, {"model": "gemini-2.5-flash", "input": "hi"})
        assert response.code == 429 and response.headers.getRawHeaders(b"retry-after")
        assert json.loads(raw)["error"]["status"] == "RESOURCE_EXHAUSTED"
        # A body that is no interaction is the client's 400, in Google's shape, sent nowhere.
        before = len(upstream.seen)
        response, raw = await _interact(served, {"model": "gemini-2.5-flash"})
        assert response.code == 400 and json.loads(raw)["error"]["status"] == "INVALID_ARGUMENT"
        assert len(upstream.seen) == before
    finally:
        await served.close()


# -- Google's SDK against the daemon ----------------------------------------------------------

SDK_KEY = "sk-interactions-client"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    from tests.test_e2e import processes

    def config(up: str) -> dict:
        return {"api-keys": [SDK_KEY],
                "interactions-api-key": [{"api-key": "ik-sdk", "base-url": up,
                                          "models": [{"name": "gemini-2.5-flash", "alias": "native-flash"}]}],
                "gemini-api-key": [{"api-key": "gk-sdk", "base-url": up,
                                    "models": [{"name": "gemini-2.5-pro", "alias": "via-gemini"}]}]}

    with processes(tmp_path_factory.mktemp("interactions"), config) as (url, up, _):
        yield url, up


@pytest.mark.parametrize("model, upstream_format", [("native-flash", "interactions"), ("via-gemini", "gemini")])
def test_googles_sdk_creates_interactions_whole_and_streamed(daemon, model, upstream_format):
    from google import genai

    from tests.test_e2e import http_get

    client = genai.Client(api_key=SDK_KEY, http_options={"base_url": daemon[0]})
    interaction = client.interactions.create(model=model, input="hi", system_instruction="be brief")
    assert interaction.status == "completed"
    assert interaction.output_text.startswith("Hello from the simulated upstream")
    assert interaction.usage.total_tokens > 0
    seen = json.loads(http_get(daemon[1] + "/_sim/requests")[1])[-1]
    assert seen["format"] == upstream_format
    events = list(client.interactions.create(model=model, input=[
        {"type": "user_input", "content": [{"type": "text", "text": "hi"}]}], stream=True))
    assert [e.event_type for e in events][0] == "interaction.created"
    assert events[-1].event_type == "interaction.completed"
    text = "".join(e.delta.text for e in events if e.event_type == "step.delta" and e.delta.type == "text")
    assert text == interaction.output_text


def test_googles_sdk_sees_an_unknown_model_as_its_own_error(daemon):
    from google import genai
    from google.genai._interactions_errors import NotFoundError

    client = genai.Client(api_key=SDK_KEY, http_options={"base_url": daemon[0]})
    with pytest.raises(NotFoundError) as raised:
        client.interactions.create(model="no-such-model", input="hi")
    error = raised.value.body["error"]
    assert error["code"] == 404 and error["status"] == "NOT_FOUND" and "no-such-model" in error["message"]
    assert error["details"][0]["reason"] == "MODEL_NOT_FOUND"


@pytest_twisted.ensureDeferred
async def test_payload_rules_name_the_interactions_protocol_on_both_sides():
    from twisted.internet import reactor

    served = Served(reactor, lambda base: {
        "interactions-api-key": [{"api-key": "ik-p", "base-url": base}],
        "payload": {"override": [
            {"models": [{"name": "gemini-*", "protocol": "interactions", "from-protocol": "interactions"}],
             "params": {"generation_config.temperature": 0.2}},
            {"models": [{"name": "gemini-*", "protocol": "interactions", "from-protocol": "openai"}],
             "params": {"generation_config.top_p": 0.5}}]},
    })
    try:
        assert served.warnings == []
        response, raw = await _interact(served, {"model": "gemini-2.5-flash", "input": "hi"})
        assert response.code == 200, raw
        assert served.upstream.seen[-1].body["generation_config"] == {"temperature": 0.2}
        response, _ = await served.chat("gemini-2.5-flash")
        assert response.code == 200
        assert served.upstream.seen[-1].body["generation_config"] == {"top_p": 0.5}
    finally:
        await served.close()


def test_a_client_keys_token_count_reads_interactions_usage_whole_and_streamed():
    from cliproxyd.formats.usage import StreamUsage, answer_tokens

    whole = interactions.response_from_canonical(C.Response("i", "m", (C.Text("hi"),), usage=C.Usage(7, 5)), "m",
                                                 origin=ORIGIN)
    assert answer_tokens("interactions", whole) == 12
    encoder = interactions.StreamEncoder("m", origin=ORIGIN)
    sse = b"".join(encoder.feed(e) for e in (C.Start("i", "m"), C.TextDelta("hi"), C.UsageEvent(C.Usage(3, 4))))
    usage = StreamUsage("interactions")
    usage.feed(sse + encoder.close())
    assert usage.tokens == 7
