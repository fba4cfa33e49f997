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
