"""The OpenAI Responses wire format: requests, answers, streams and errors, checked against the official SDK."""

import json

import httpx2
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.responses import Response as SDKResponse

from cliproxyd.formats import canonical as C
from cliproxyd.formats import responses as R
from cliproxyd.formats.translate import SSEParser
from cliproxyd.modelnames import Reasoning

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


# -- helpers ------------------------------------------------------------------------


def sdk(body: bytes, status: int = 200, content_type: str = "text/event-stream") -> openai.OpenAI:
    """The official client, with strict validation, answered by C{body} whatever it asks."""
    transport = httpx2.MockTransport(
        lambda request: httpx2.Response(status, headers={"content-type": content_type}, content=body))
    return openai.OpenAI(api_key="sk-test", base_url="http://upstream.test/v1", max_retries=0,
                         http_client=httpx2.Client(transport=transport), _strict_response_validation=True)


def sdk_stream(raw: bytes):
    """What client.responses.stream makes of C{raw}: the event types it yielded and its final response."""
    with sdk(raw).responses.stream(model="gpt-5", input="hi") as stream:
        types = [e.type for e in stream]
        return types, stream.get_final_response()


def encode(events, model="gpt-5") -> bytes:
    enc = R.StreamEncoder(model)
    return b"".join(enc.feed(e) for e in events) + enc.close()


def frames(raw: bytes) -> list[dict]:
    return [json.loads(payload) for payload in SSEParser().feed(raw)]


def decode(raw: bytes) -> list:
    dec = R.StreamDecoder()
    return [e for data in frames(raw) for e in dec.feed(data)]


def summary(events) -> dict:
    """What a stream says, however it was split into deltas."""
    calls: dict[int, list[str]] = {}
    out = {"text": "", "thinking": "", "finish": [], "usage": []}
    for e in events:
        if isinstance(e, C.TextDelta):
            out["text"] += e.text
        elif isinstance(e, C.ThinkingDelta):
            out["thinking"] += e.text
        elif isinstance(e, C.ToolCallStart):
            calls[e.index] = [e.id, e.name, ""]
        elif isinstance(e, C.ToolCallDelta) and e.index in calls:
            calls[e.index][2] += e.arguments
        elif isinstance(e, C.Finish):
            out["finish"].append(e.stop_reason)
        elif isinstance(e, C.UsageEvent):
            out["usage"].append(e.usage)
    out["calls"] = [tuple(calls[i]) for i in sorted(calls)]
    return out


def expected_stop(stop: str | None, has_calls: bool) -> str:
    """Responses says only "incomplete, and why"; tool calls are seen in the output."""
    if stop in (C.LENGTH, C.CONTENT_FILTER):
        return stop
    return C.TOOL_CALLS if has_calls else C.STOP


# -- requests -----------------------------------------------------------------------


def test_a_codex_style_request_with_string_input():
    body = {
        "model": "gpt-5-codex", "instructions": "You are Codex, a coding agent.",
        "input": "List the files in this repository.", "stream": True, "store": False,
        "reasoning": {"effort": "high", "summary": "auto"}, "include": ["reasoning.encrypted_content"],
        "max_output_tokens": 4096, "parallel_tool_calls": False, "prompt_cache_key": "0199a7c2",
    }
    assert R.validate(body) == ("gpt-5-codex", True)
    assert R.request_to_canonical(body) == C.Request(
        model="gpt-5-codex",
        messages=(C.Message("user", (C.Text("List the files in this repository."),)),),
        system="You are Codex, a coding agent.",
        max_tokens=4096, stream=True, reasoning=Reasoning(level="high"),
    )


def test_a_request_with_a_tool_round_and_an_image():
    body = {
        "model": "gpt-5",
        "instructions": "Be brief.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Answer in French."}]},
            {"role": "user", "content": [
                {"type": "input_text", "text": "What is this, and the weather in Paris?"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"},
                {"type": "input_image", "image_url": "https://example.com/cat.jpg", "detail": "low"},
                {"type": "input_file", "file_id": "file-123"},
            ]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Need the weather."}],
             "encrypted_content": "gAAAAABoSig"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Un chat."}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_abc", "name": "get_weather",
             "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
            {"type": "function_call_output", "call_id": "call_abc", "output": "sunny, 24C"},
            {"type": "function_call_output", "call_id": "call_def",
             "output": [{"type": "input_text", "text": "no "}, {"type": "input_text", "text": "rain"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Il fait beau."}]},
            {"role": "user", "content": "merci"},
            {"type": "item_reference", "id": "msg_old"},
        ],
        "tools": [{"type": "function", "name": "get_weather", "description": "Weather for a city",
                   "parameters": WEATHER, "strict": False},
                  {"type": "web_search"}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "temperature": 0.5, "top_p": 0.9,
    }
    req = R.request_to_canonical(body)
    assert req.messages == (
        C.Message("user", (C.Text("What is this, and the weather in Paris?"),
                           C.Image(data="iVBORw0KGgo=", media_type="image/png"),
                           C.Image(url="https://example.com/cat.jpg"))),
        C.Message("assistant", (C.Thinking("Need the weather.", "gAAAAABoSig"), C.Text("Un chat."),
                                C.ToolCall("call_abc", "get_weather", '{"city":"Paris"}'))),
        C.Message("user", (C.ToolResult("call_abc", "sunny, 24C"), C.ToolResult("call_def", "no rain"))),
        C.Message("assistant", (C.Text("Il fait beau."),)),
        C.Message("user", (C.Text("merci"),)),
    )
    assert req.system == "Be brief.\n\nAnswer in French."
    assert [(t.name, t.description, t.parameters) for t in req.tools] == [
        ("get_weather", "Weather for a city", WEATHER)]
    assert (req.tool_choice, req.temperature, req.top_p, req.stream, req.reasoning) == (
        "get_weather", 0.5, 0.9, False, None)


def test_request_from_canonical():
    req = C.Request(
        model="claude-ish", system="Be brief.", stream=True, max_tokens=100, temperature=0.2, stop=("END",),
        tools=(C.Tool("get_weather", "Weather for a city", WEATHER),), tool_choice="required",
        reasoning=Reasoning(budget=0),
        messages=(
            C.Message("user", (C.Text("weather?"), C.Image(data="iVBO", media_type="image/png"))),
            C.Message("assistant", (C.Thinking("hmm", "sig-from-elsewhere"), C.Text("Checking."),
                                    C.ToolCall("t1", "get_weather", '{"city":"Oslo"}'))),
            C.Message("user", (C.ToolResult("t1", "rain", is_error=True), C.Text("and tomorrow?"))),
        ),
    )
    assert R.request_from_canonical(req, "gpt-5") == {
        "model": "gpt-5",
        "input": [
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "weather?"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBO", "detail": "auto"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
            {"type": "function_call", "call_id": "t1", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
            {"type": "function_call_output", "call_id": "t1", "output": "rain"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "and tomorrow?"}]},
        ],
        "instructions": "Be brief.",
        "tools": [{"type": "function", "name": "get_weather", "description": "Weather for a city",
                   "parameters": WEATHER, "strict": False}],
        "tool_choice": "required",
        "max_output_tokens": 100, "temperature": 0.2,
        "reasoning": {"effort": "none"},
        "stream": True, "store": False,
    }


def test_tool_choice_by_name_and_no_stream_flag_when_not_streaming():
    body = R.request_from_canonical(C.Request("m", (), tool_choice="get_weather", reasoning=Reasoning(level="auto")),
                                    "gpt-5")
    assert body["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert "stream" not in body and "reasoning" not in body and body["store"] is False


def test_set_model_and_apply_reasoning():
    body = {"model": "gpt-5(high)", "input": "hi", "reasoning": {"effort": "low", "summary": "auto"}}
    renamed = R.set_model(body, "gpt-5")
    assert renamed["model"] == "gpt-5" and body["model"] == "gpt-5(high)"
    R.apply_reasoning(renamed, Reasoning(budget=8192))
    assert renamed["reasoning"] == {"effort": "medium", "summary": "auto"}
    assert body["reasoning"] == {"effort": "low", "summary": "auto"}
    R.apply_reasoning(renamed, Reasoning(level="max"))
    assert renamed["reasoning"]["effort"] == "xhigh"
    R.apply_reasoning(renamed, Reasoning(level="auto"))
    assert renamed["reasoning"] == {"summary": "auto"}
    plain = {"model": "gpt-5", "input": "hi", "reasoning": {"effort": "high"}}
    R.apply_reasoning(plain, Reasoning(level="auto"))
    assert "reasoning" not in plain
    R.apply_reasoning(plain, Reasoning(level="none"))
    assert plain["reasoning"] == {"effort": "none"}


@pytest.mark.parametrize("body, where", [
    ([], "the body"),
    ({"input": "hi"}, "model"),
    ({"model": " ", "input": "hi"}, "model"),
    ({"model": "m"}, "input"),
    ({"model": "m", "input": {"role": "user"}}, "input"),
    ({"model": "m", "input": "hi", "stream": "yes"}, "stream"),
    ({"model": "m", "input": ["hi"]}, "input[0]"),
    ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"model": "m", "input": [{"role": "user", "content": 5}]}, "input[0].content"),
    ({"model": "m", "input": [{"role": "user", "content": "a"}, {"role": "user", "content": [
        {"type": "input_text", "text": "ok"}, {"type": "input_text", "text": 3}]}]}, "input[1].content[1].text"),
    ({"model": "m", "input": [{"role": "user", "content": ["x"]}]}, "input[0].content[0]"),
    ({"model": "m", "input": [{"type": "function_call", "name": "f"}]}, "input[0]"),
    ({"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": 5}]}, "input[0].output"),
    ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"model": "m", "input": "hi", "tools": {}}, "tools"),
    ({"model": "m", "input": "hi", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"model": "m", "input": "hi", "tool_choice": "sometimes"}, "tool_choice"),
    ({"model": "m", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": "m", "input": "hi", "temperature": "hot"}, "temperature"),
    ({"model": "m", "input": "hi", "top_p": True}, "top_p"),
    ({"model": "m", "input": "hi", "reasoning": "high"}, "reasoning"),
    ({"model": "m", "input": "hi", "reasoning": {"effort": 3}}, "reasoning.effort"),
])
def test_bad_requests_name_the_field(body, where):
    with pytest.raises(C.BadRequest) as e:
        R.request_to_canonical(body)
    assert str(e.value).startswith(where)


# -- answers ------------------------------------------------------------------------

RECORDED_RESPONSE = {
    "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b", "object": "response",
    "created_at": 1741476542, "status": "completed", "error": None, "incomplete_details": None,
    "instructions": None, "max_output_tokens": None, "model": "gpt-5-2025-08-07",
    "output": [
        {"type": "reasoning", "id": "rs_67cc", "summary": [{"type": "summary_text", "text": "**Weather**"},
                                                          {"type": "summary_text", "text": "Call the tool."}],
         "encrypted_content": "gAAAAABoEnc"},
        {"type": "message", "id": "msg_67cc", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}]},
        {"type": "function_call", "id": "fc_67cc", "call_id": "call_12345xyz", "name": "get_weather",
         "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
    ],
    "parallel_tool_calls": True, "previous_response_id": None, "reasoning": {"effort": "medium", "summary": "auto"},
    "store": False, "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
    "tools": [], "top_p": 1.0, "truncation": "disabled",
    "usage": {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 12}, "output_tokens": 87,
              "output_tokens_details": {"reasoning_tokens": 64}, "total_tokens": 123},
    "user": None, "metadata": {},
}


def test_a_recorded_response():
    assert R.response_to_canonical(RECORDED_RESPONSE) == C.Response(
        id="resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b", model="gpt-5-2025-08-07",
        parts=(C.Thinking("**Weather**\n\nCall the tool.", "gAAAAABoEnc"), C.Text("Let me check."),
               C.ToolCall("call_12345xyz", "get_weather", '{"city":"Paris"}')),
        stop_reason=C.TOOL_CALLS, usage=C.Usage(36, 87, 12, 64),
    )


@pytest.mark.parametrize("reason, stop", [("max_output_tokens", C.LENGTH), ("content_filter", C.CONTENT_FILTER)])
def test_an_incomplete_response(reason, stop):
    data = {"id": "resp_1", "model": "gpt-5", "status": "incomplete", "incomplete_details": {"reason": reason},
            "output": [{"type": "message", "id": "m", "role": "assistant", "status": "incomplete",
                        "content": [{"type": "output_text", "text": "Once upon", "annotations": []}]}]}
    resp = R.response_to_canonical(data)
    assert (resp.parts, resp.stop_reason, resp.usage) == ((C.Text("Once upon"),), stop, C.Usage())


def test_the_sdk_reads_our_answers():
    resp = C.Response("chatcmpl-1", "x", (C.Thinking("plan", "sig"), C.Text("Hello, "), C.Text("world"),
                                          C.ToolCall("call_1", "get_weather", '{"city":"Oslo"}')),
                      C.TOOL_CALLS, C.Usage(10, 5, 2, 1))
    body = R.response_from_canonical(resp, "gpt-5")
    parsed = SDKResponse.model_validate(body)
    assert parsed.id == "resp_chatcmpl-1" and parsed.model == "gpt-5" and parsed.status == "completed"
    assert parsed.output_text == "Hello, world"
    [call] = [o for o in parsed.output if o.type == "function_call"]
    assert (call.call_id, call.name, json.loads(call.arguments)) == ("call_1", "get_weather", {"city": "Oslo"})
    [reasoning] = [o for o in parsed.output if o.type == "reasoning"]
    assert (reasoning.summary[0].text, reasoning.encrypted_content) == ("plan", "sig")
    assert len({o.id for o in parsed.output}) == 3
    assert (parsed.usage.total_tokens, parsed.usage.input_tokens_details.cached_tokens) == (15, 2)
    # and through the client, as a whole answer
    client = sdk(json.dumps(body).encode(), content_type="application/json")
    assert client.responses.create(model="gpt-5", input="hi").output_text == "Hello, world"


def test_a_length_stop_is_an_incomplete_response():
    body = R.response_from_canonical(C.Response("r", "x", (C.Text("Once"),), C.LENGTH), "gpt-5")
    parsed = SDKResponse.model_validate(body)
    assert (parsed.status, parsed.incomplete_details.reason) == ("incomplete", "max_output_tokens")


# -- streams ------------------------------------------------------------------------

RECORDED_STREAM = [
    {"type": "response.created", "sequence_number": 0, "response": {
        "id": "resp_abc", "object": "response", "created_at": 1741290958, "status": "in_progress",
        "model": "gpt-5-codex", "output": [], "usage": None}},
    {"type": "response.in_progress", "sequence_number": 1, "response": {
        "id": "resp_abc", "object": "response", "status": "in_progress", "model": "gpt-5-codex", "output": []}},
    {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0, "item": {
        "id": "rs_1", "type": "reasoning", "summary": []}},
    {"type": "response.reasoning_summary_part.added", "sequence_number": 3, "item_id": "rs_1", "output_index": 0,
     "summary_index": 0, "part": {"type": "summary_text", "text": ""}},
    {"type": "response.reasoning_summary_text.delta", "sequence_number": 4, "item_id": "rs_1", "output_index": 0,
     "summary_index": 0, "delta": "Look"},
    {"type": "response.reasoning_summary_part.added", "sequence_number": 5, "item_id": "rs_1", "output_index": 0,
     "summary_index": 1, "part": {"type": "summary_text", "text": ""}},
    {"type": "response.reasoning_summary_text.delta", "sequence_number": 6, "item_id": "rs_1", "output_index": 0,
     "summary_index": 1, "delta": "Then act"},
    {"type": "response.output_item.done", "sequence_number": 7, "output_index": 0, "item": {
        "id": "rs_1", "type": "reasoning", "summary": [], "encrypted_content": "gAAA"}},
    {"type": "response.output_item.added", "sequence_number": 8, "output_index": 1, "item": {
        "id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}},
    {"type": "response.content_part.added", "sequence_number": 9, "item_id": "msg_1", "output_index": 1,
     "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}},
    {"type": "response.output_text.delta", "sequence_number": 10, "item_id": "msg_1", "output_index": 1,
     "content_index": 0, "delta": "Hi", "logprobs": []},
    {"type": "response.output_text.delta", "sequence_number": 11, "item_id": "msg_1", "output_index": 1,
     "content_index": 0, "delta": " there", "logprobs": []},
    {"type": "response.output_text.done", "sequence_number": 12, "item_id": "msg_1", "output_index": 1,
     "content_index": 0, "text": "Hi there", "logprobs": []},
    {"type": "response.content_part.done", "sequence_number": 13, "item_id": "msg_1", "output_index": 1,
     "content_index": 0, "part": {"type": "output_text", "text": "Hi there", "annotations": []}},
    {"type": "response.output_item.done", "sequence_number": 14, "output_index": 1, "item": {
        "id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": "Hi there", "annotations": []}]}},
    {"type": "response.output_item.added", "sequence_number": 15, "output_index": 2, "item": {
        "id": "fc_1", "type": "function_call", "status": "in_progress", "arguments": "",
        "call_id": "call_xyz", "name": "shell"}},
    {"type": "response.function_call_arguments.delta", "sequence_number": 16, "item_id": "fc_1",
     "output_index": 2, "delta": "{\"command\":"},
    {"type": "response.function_call_arguments.delta", "sequence_number": 17, "item_id": "fc_1",
     "output_index": 2, "delta": "[\"ls\"]}"},
    {"type": "response.function_call_arguments.done", "sequence_number": 18, "item_id": "fc_1",
     "output_index": 2, "arguments": "{\"command\":[\"ls\"]}"},
    {"type": "response.output_item.done", "sequence_number": 19, "output_index": 2, "item": {
        "id": "fc_1", "type": "function_call", "status": "completed", "arguments": "{\"command\":[\"ls\"]}",
        "call_id": "call_xyz", "name": "shell"}},
    {"type": "response.completed", "sequence_number": 20, "response": {
        "id": "resp_abc", "object": "response", "status": "completed", "model": "gpt-5-codex", "output": [],
        "usage": {"input_tokens": 328, "input_tokens_details": {"cached_tokens": 128}, "output_tokens": 52,
                  "output_tokens_details": {"reasoning_tokens": 24}, "total_tokens": 380}}},
]


def test_a_recorded_stream():
    dec = R.StreamDecoder()
    assert [e for data in RECORDED_STREAM for e in dec.feed(data)] == [
        C.Start("resp_abc", "gpt-5-codex"),
        C.ThinkingDelta("Look"), C.ThinkingDelta("\n\n"), C.ThinkingDelta("Then act"),
        C.TextDelta("Hi"), C.TextDelta(" there"),
        C.ToolCallStart(0, "call_xyz", "shell"),
        C.ToolCallDelta(0, '{"command":'), C.ToolCallDelta(0, '["ls"]}'),
        C.Finish(C.TOOL_CALLS), C.UsageEvent(C.Usage(328, 52, 128, 24)),
    ]


def test_arguments_that_only_come_whole_are_passed_on_once():
    dec = R.StreamDecoder()
    item = {"id": "fc_9", "type": "function_call", "call_id": "call_9", "name": "f", "arguments": ""}
    events = dec.feed({"type": "response.output_item.added", "output_index": 3, "item": item})
    events += dec.feed({"type": "response.function_call_arguments.done", "item_id": "fc_9", "output_index": 3,
                        "arguments": '{"a":1}'})
    events += dec.feed({"type": "response.output_item.done", "output_index": 3, "item": {**item, "arguments": '{"a":1}'}})
    # a call seen only when it is done
    events += dec.feed({"type": "response.output_item.done", "output_index": 4, "item": {
        "id": "fc_10", "type": "function_call", "call_id": "call_10", "name": "g", "arguments": "{}"}})
    assert events == [C.ToolCallStart(0, "call_9", "f"), C.ToolCallDelta(0, '{"a":1}'),
                      C.ToolCallStart(1, "call_10", "g"), C.ToolCallDelta(1, "{}")]


def test_upstream_errors_become_error_events():
    dec = R.StreamDecoder()
    assert dec.feed({"type": "error", "code": "rate_limit_exceeded", "message": "slow down", "param": None,
                     "sequence_number": 3}) == [C.ErrorEvent("slow down", "rate_limit_exceeded", 429)]
    assert dec.feed({"type": "response.failed", "response": {
        "id": "resp_1", "status": "failed", "error": {"code": "server_error", "message": "boom"}}}) == [
        C.ErrorEvent("boom", "server_error", 500)]
    assert dec.feed({"error": {"message": "bad key", "type": "invalid_request_error"}}) == [
        C.ErrorEvent("bad key", "server_error")]


def test_an_incomplete_stream_ends_with_length():
    dec = R.StreamDecoder()
    assert dec.feed({"type": "response.incomplete", "response": {
        "id": "resp_1", "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}}) == [
        C.Finish(C.LENGTH)]


PARALLEL = [
    C.Start("chatcmpl-7", "up-model"),
    C.ThinkingDelta("Two cities"), C.ThinkingDelta(", two calls."),
    C.TextDelta("Checking \u2028both\u0085."),
    C.ToolCallStart(0, "call_a", "get_weather"), C.ToolCallStart(1, "call_b", "get_weather"),
    C.ToolCallDelta(0, '{"city":'), C.ToolCallDelta(1, '{"city":"Rome"}'), C.ToolCallDelta(0, '"Oslo"}'),
    C.Finish(C.TOOL_CALLS), C.UsageEvent(C.Usage(20, 9, 4, 3)),
]


def test_the_sdk_stream_helper_accepts_our_stream():
    raw = encode(PARALLEL)
    types, final = sdk_stream(raw)
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert "response.function_call_arguments.delta" in types and "error" not in types
    assert final.id == "resp_chatcmpl-7" and final.model == "gpt-5" and final.status == "completed"
    assert final.output_text == "Checking \u2028both\u0085."
    calls = [(o.call_id, o.name, json.loads(o.arguments)) for o in final.output if o.type == "function_call"]
    assert calls == [("call_a", "get_weather", {"city": "Oslo"}), ("call_b", "get_weather", {"city": "Rome"})]
    [reasoning] = [o for o in final.output if o.type == "reasoning"]
    assert reasoning.summary[0].text == "Two cities, two calls."
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.total_tokens) == (20, 9, 29)
    # the same bytes, read back by our decoder
    assert summary(decode(raw)) == summary(PARALLEL)


def test_the_order_of_events_for_a_text_then_a_call():
    types = [d["type"] for d in frames(encode([C.TextDelta("Hi"), C.ToolCallStart(0, "call_1", "f"),
                                              C.ToolCallDelta(0, "{}"), C.Finish(C.TOOL_CALLS)]))]
    assert types == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]


def test_stream_frames_are_ascii_with_increasing_sequence_numbers():
    raw = encode(PARALLEL)
    text = raw.decode("ascii")
    frames = [f for f in text.split("\n\n") if f]
    numbers = []
    for frame in frames:
        event, data = frame.splitlines()
        payload = json.loads(data.removeprefix("data: "))
        assert event == "event: " + payload["type"]
        numbers.append(payload["sequence_number"])
    assert numbers == list(range(len(frames)))


def test_a_length_stop_in_a_stream():
    _, final = sdk_stream(encode([C.TextDelta("Once upon"), C.Finish(C.LENGTH)]))
    assert (final.output_text, final.status, final.incomplete_details.reason) == (
        "Once upon", "incomplete", "max_output_tokens")
    assert final.usage is None


def test_an_error_ends_the_stream():
    enc = R.StreamEncoder("gpt-5")
    raw = enc.feed(C.TextDelta("partial")) + enc.feed(C.ErrorEvent("upstream went away"))
    assert enc.close() == b"" and enc.feed(C.TextDelta("more")) == b""
    *_, last = SSEParser().feed(raw)
    assert json.loads(last) == {"type": "error", "code": "server_error", "message": "upstream went away",
                                "param": None, "sequence_number": 5}
    with sdk(raw).responses.stream(model="gpt-5", input="hi") as stream:
        events = list(stream)
    assert (events[-1].type, events[-1].message) == ("error", "upstream went away")
    assert decode(raw)[-1] == C.ErrorEvent("upstream went away", "server_error", 500)


def test_calls_without_ids_get_distinct_ones():
    _, final = sdk_stream(encode([C.ToolCallStart(0, "", "f"), C.ToolCallStart(1, "", "g"), C.Finish(C.TOOL_CALLS)]))
    ids = [o.call_id for o in final.output]
    assert len(set(ids)) == 2 and all(ids)
    body = R.response_from_canonical(C.Response("r", "x", (C.ToolCall("", "f", "{}"), C.ToolCall("", "g", "{}"))), "m")
    ids = [o.call_id for o in SDKResponse.model_validate(body).output]
    assert len(set(ids)) == 2 and all(ids)


def test_an_empty_stream_still_completes():
    types, final = sdk_stream(encode([]))
    assert types == ["response.created", "response.in_progress", "response.completed"]
    assert final.output == [] and final.status == "completed"


# -- errors -------------------------------------------------------------------------


def test_error_bodies():
    assert json.loads(R.error_body(400, "input: required")) == {"error": {
        "message": "input: required", "type": "invalid_request_error", "code": None, "param": None}}
    assert json.loads(R.error_body(503, "down"))["error"]["type"] == "server_error"
    cooling = json.loads(R.error_body(429, "cooling down", {"code": "model_cooldown", "reset_seconds": 30}))
    assert cooling["error"] == {"message": "cooling down", "type": "rate_limit_error", "code": "model_cooldown",
                                "param": None, "reset_seconds": 30}


def test_the_sdk_raises_its_own_errors_from_our_error_bodies():
    client = sdk(R.error_body(429, "slow down"), status=429, content_type="application/json")
    with pytest.raises(openai.RateLimitError) as e:
        client.responses.create(model="gpt-5", input="hi")
    assert (e.value.code, e.value.body["message"]) == ("rate_limit_exceeded", "slow down")


# -- properties ---------------------------------------------------------------------

texts = st.text(max_size=12)
idents = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=10)
arguments = st.dictionaries(idents, st.integers() | texts, max_size=3).map(lambda d: json.dumps(d))
images = st.builds(C.Image, url=idents.map(lambda s: f"https://example.com/{s}.png")) | st.builds(
    C.Image, data=st.text(alphabet="ABCDabcd0123+/=", min_size=1, max_size=12), media_type=st.just("image/png"))
user_parts = st.one_of(st.builds(C.Text, texts), images, st.builds(C.ToolResult, idents, texts))
assistant_parts = st.one_of(st.builds(C.Text, texts), st.builds(C.ToolCall, idents, idents, arguments))
messages = st.one_of(
    st.builds(C.Message, st.just("user"), st.lists(user_parts, max_size=3).map(tuple)),
    st.builds(C.Message, st.just("assistant"), st.lists(assistant_parts, max_size=3).map(tuple)),
)
reasonings = st.none() | st.builds(
    Reasoning, level=st.sampled_from(["minimal", "low", "medium", "high", "xhigh", "max", "none", "auto"])) | st.builds(
    Reasoning, budget=st.integers(-1, 200000))
floats = st.none() | st.floats(0, 2, allow_nan=False)
requests = st.builds(
    C.Request, model=idents, messages=st.lists(messages, max_size=5).map(tuple), system=texts,
    tools=st.lists(st.builds(C.Tool, idents, texts, st.fixed_dictionaries(
        {"type": st.just("object"), "properties": st.dictionaries(idents, st.just({"type": "string"}))})),
        max_size=3).map(tuple),
    tool_choice=st.none() | st.sampled_from(["auto", "none", "required"]) | idents,
    max_tokens=st.none() | st.integers(1, 10**6), temperature=floats, top_p=floats,
    stop=st.lists(texts, max_size=2).map(tuple), stream=st.booleans(), reasoning=reasonings,
)


def flat(msgs) -> list:
    """Responses has items, not messages: what survives is each part, its role and its order."""
    return [(m.role, p) for m in msgs for p in m.parts]


@settings(max_examples=100, deadline=None)
@given(requests)
def test_requests_survive_a_trip_through_responses(req):
    back = R.request_to_canonical(R.request_from_canonical(req, "target-model"))
    assert back.model == "target-model" and back.stream == req.stream
    assert flat(back.messages) == flat(req.messages)
    assert all(m.parts for m in back.messages)
    assert back.system == req.system
    assert [(t.name, t.description, t.parameters) for t in back.tools] == [
        (t.name, t.description, t.parameters) for t in req.tools]
    assert (back.tool_choice, back.max_tokens, back.temperature, back.top_p) == (
        req.tool_choice, req.max_tokens, req.temperature, req.top_p)
    assert back.stop == ()
    effort = req.reasoning.effort() if req.reasoning is not None else None
    assert (back.reasoning.effort() if back.reasoning is not None else None) == effort


response_parts = st.one_of(st.builds(C.Text, texts), st.builds(C.ToolCall, idents, idents, arguments),
                           st.builds(C.Thinking, st.text(min_size=1, max_size=12), st.text(max_size=8)))
stops = st.sampled_from([C.STOP, C.LENGTH, C.TOOL_CALLS, C.CONTENT_FILTER])
usages = st.builds(C.Usage, *[st.integers(0, 10**6)] * 4)


@settings(max_examples=100, deadline=None)
@given(st.builds(C.Response, idents, idents, st.lists(response_parts, max_size=6).map(tuple), stops, usages))
def test_answers_survive_a_trip_through_responses(resp):
    body = R.response_from_canonical(resp, "gpt-5")
    SDKResponse.model_validate(body)
    back = R.response_to_canonical(body)
    assert back.id == "resp_" + resp.id and back.model == "gpt-5"
    assert back.parts == resp.parts
    assert back.stop_reason == expected_stop(resp.stop_reason, any(isinstance(p, C.ToolCall) for p in resp.parts))
    assert back.usage == resp.usage


@st.composite
def canonical_streams(draw) -> list:
    events: list = [C.Start(draw(idents), "up-model")] if draw(st.booleans()) else []
    calls = 0
    for step in draw(st.lists(st.sampled_from(["text", "thinking", "call", "arguments"]), max_size=14)):
        if step == "text":
            events.append(C.TextDelta(draw(texts)))
        elif step == "thinking":
            events.append(C.ThinkingDelta(draw(texts)))
        elif step == "call" or not calls:
            events.append(C.ToolCallStart(calls, f"call_{calls}", draw(idents)))
            calls += 1
        else:
            events.append(C.ToolCallDelta(draw(st.integers(0, calls - 1)), draw(st.text(min_size=1, max_size=6))))
    stop = draw(st.none() | stops)
    if stop is not None:
        events.append(C.Finish(stop))
    usage = draw(st.none() | usages)
    if usage is not None:
        events.append(C.UsageEvent(usage))
    return events


@settings(max_examples=150, deadline=None)
@given(canonical_streams())
def test_streams_survive_a_trip_through_responses(events):
    raw = encode(events)
    want, got = summary(events), summary(decode(raw))
    # every item added is done, as it ends up in the completed response (Codex reads the done items)
    sent = frames(raw)
    assert [d["sequence_number"] for d in sent] == list(range(len(sent)))
    added = [d["output_index"] for d in sent if d["type"] == "response.output_item.added"]
    done = {d["output_index"]: d["item"] for d in sent if d["type"] == "response.output_item.done"}
    assert sorted(done) == added == list(range(len(added)))
    assert [done[i] for i in added] == sent[-1]["response"]["output"]
    assert got["text"] == want["text"] and got["thinking"] == want["thinking"]
    assert got["calls"] == want["calls"] and got["usage"] == want["usage"]
    assert got["finish"] == [expected_stop(want["finish"][-1] if want["finish"] else None, bool(want["calls"]))]


@settings(max_examples=30, deadline=None)
@given(canonical_streams())
def test_the_sdk_stream_helper_accepts_any_stream_of_ours(events):
    want = summary(events)
    _, final = sdk_stream(encode(events))
    assert final.output_text == want["text"]
    assert [(o.call_id, o.name, o.arguments) for o in final.output if o.type == "function_call"] == want["calls"]
