"""The Claude Messages endpoint, served by OpenAI-compatible upstreams."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from cliproxyd.formats import canonical as C
from cliproxyd.formats import claude, openai_chat
from tests.conftest import Harness, config_data

TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def messages(h, body, headers=None):
    code, hdrs, raw = h.request("POST", "/v1/messages", body, headers)
    return code, hdrs, raw


def claude_events(raw: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in raw.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "event" in lines:
            out.append((lines["event"], json.loads(lines["data"])))
    return out


def spy_upstream_bodies(h):
    bodies = []
    original = h.up.request

    def spy(method, url, **kw):
        bodies.append(json.loads(kw["data"]))
        return original(method, url, **kw)

    h.up.request = spy
    return bodies


def test_a_text_answer_in_claude_shape():
    h = Harness()
    code, _, raw = messages(h, {"model": "gpt-4o-mini", "max_tokens": 64,
                                "messages": [{"role": "user", "content": "hi"}]})
    assert code == 200
    body = json.loads(raw)
    assert body["type"] == "message" and body["role"] == "assistant" and body["model"] == "gpt-4o-mini"
    assert body["content"][0]["type"] == "text"
    assert body["content"][0]["text"].startswith("Hello from the simulated upstream")
    assert body["stop_reason"] == "end_turn"
    assert body["usage"]["input_tokens"] == 5
    assert body["id"].startswith("msg_")


def test_the_request_is_translated_for_the_openai_upstream():
    h = Harness()
    bodies = spy_upstream_bodies(h)
    messages(h, {
        "model": "gpt-4o-mini", "max_tokens": 100, "system": [{"type": "text", "text": "Be brief."}],
        "temperature": 0.2, "stop_sequences": ["END"], "tools": TOOLS, "tool_choice": {"type": "any"},
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "weather?"},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                      "data": "iVBO"}}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather",
                                               "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "rain"}]},
        ],
    })
    up = bodies[-1]
    assert up["model"] == "sim-small"
    assert up["messages"][0] == {"role": "system", "content": "Be brief."}
    assert up["messages"][1]["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}
    assert up["messages"][2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Oslo"}'}
    assert up["messages"][3] == {"role": "tool", "tool_call_id": "t1", "content": "rain"}
    assert up["tools"][0]["function"]["parameters"]["properties"]["city"] == {"type": "string"}
    assert up["tool_choice"] == "required"
    assert (up["max_tokens"], up["temperature"], up["stop"]) == (100, 0.2, ["END"])
    assert up["reasoning_effort"] == "medium"


def test_a_tool_call_round_trip_non_stream():
    h = Harness()
    code, _, raw = messages(h, {"model": "gpt-4o-mini", "max_tokens": 64, "tools": TOOLS,
                                "messages": [{"role": "user", "content": "weather in Paris?"}]})
    body = json.loads(raw)
    assert body["stop_reason"] == "tool_use"
    [call] = body["content"]
    assert call["type"] == "tool_use" and call["name"] == "get_weather" and call["input"] == {"city": "Paris"}
    code, _, raw = messages(h, {"model": "gpt-4o-mini", "max_tokens": 64, "tools": TOOLS, "messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "sunny"}]}]})
    assert json.loads(raw)["content"][0]["text"] == "The tool said: sunny"


def test_a_stream_in_claude_events():
    h = Harness()
    code, headers, raw = messages(h, {"model": "gpt-4o-mini", "max_tokens": 64, "stream": True,
                                      "messages": [{"role": "user", "content": "hi"}]})
    assert code == 200 and headers.getRawHeaders(b"content-type")[0].startswith(b"text/event-stream")
    events = claude_events(raw)
    names = [e for e, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    text = "".join(d["delta"]["text"] for e, d in events if e == "content_block_delta")
    assert text.startswith("Hello from the simulated upstream")
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert events[-2][1]["usage"]["output_tokens"] > 0


def test_a_streamed_tool_call_in_claude_events():
    h = Harness()
    _, _, raw = messages(h, {"model": "gpt-4o-mini", "max_tokens": 64, "stream": True, "tools": TOOLS,
                             "messages": [{"role": "user", "content": "weather?"}]})
    events = claude_events(raw)
    [start] = [d for e, d in events if e == "content_block_start"]
    assert start["content_block"]["type"] == "tool_use" and start["content_block"]["name"] == "get_weather"
    args = "".join(d["delta"]["partial_json"] for e, d in events if e == "content_block_delta")
    assert json.loads(args) == {"city": "Paris"}
    assert [d for e, d in events if e == "message_delta"][0]["delta"]["stop_reason"] == "tool_use"


def test_errors_come_in_claude_shape():
    h = Harness(config_data(**{"api-keys": ["ck"]}))
    code, _, raw = messages(h, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    assert code == 401 and json.loads(raw) == {"type": "error", "error": {
        "type": "authentication_error", "message": "Missing API key", "code": "invalid_api_key"}}
    key = {"x-api-key": "ck"}
    code, _, raw = messages(h, b"{nope", key)
    assert code == 400 and json.loads(raw)["error"]["type"] == "invalid_request_error"
    code, _, raw = messages(h, {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, key)
    assert code == 404 and json.loads(raw)["error"]["type"] == "not_found_error"
    m = "gpt-4o-mini"  # served by an OpenAI-compatible upstream: translated, so checked whole
    for bad in ({"model": m}, {"model": m, "messages": [{"role": "system", "content": "x"}]},
                {"model": m, "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}):
        assert messages(h, bad, key)[0] == 400
    assert len(h.upstream.seen) == 0
    h.upstream.script("sk-up-1", "status:429:30")
    h.upstream.script("sk-up-2", "status:429:30")
    messages(h, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}, key)
    code, headers, raw = messages(h, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}, key)
    err = json.loads(raw)["error"]
    assert code == 429 and err["type"] == "rate_limit_error" and err["code"] == "model_cooldown"
    assert headers.getRawHeaders(b"retry-after") == [b"30"]


def test_an_upstream_break_mid_stream_ends_with_a_claude_error_event():
    h = Harness()
    h.upstream.script("sk-up-1", "cut:3")
    _, _, raw = messages(h, {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    events = claude_events(raw)
    assert events[0][0] == "message_start" and events[-1][0] == "error"
    assert "broke off" in events[-1][1]["error"]["message"]


# -- properties -------------------------------------------------------------------

texts = st.text(min_size=1, max_size=20)
event_lists = st.lists(st.one_of(
    texts.map(C.TextDelta),
    texts.map(C.ThinkingDelta),
    st.tuples(st.integers(0, 2), texts).map(lambda t: C.ToolCallDelta(*t)),
    st.integers(0, 2).map(lambda i: C.ToolCallStart(i, f"call_{i}", f"tool_{i}")),
    st.sampled_from([C.STOP, C.LENGTH, C.TOOL_CALLS]).map(C.Finish),
), max_size=25)


@settings(max_examples=200, deadline=None)
@given(event_lists)
def test_the_claude_stream_encoder_always_emits_a_well_formed_sequence(events):
    encoder = claude.StreamEncoder("m")
    raw = b"".join(encoder.feed(e) for e in [C.Start("x", "m"), *events]) + encoder.close()
    out = claude_events(raw)
    assert out[0][0] == "message_start" and out[-1][0] == "message_stop" and out[-2][0] == "message_delta"
    open_blocks, seen = set(), set()
    for name, data in out[1:-2]:
        if name == "content_block_start":
            assert data["index"] not in seen
            seen.add(data["index"])
            open_blocks.add(data["index"])
        elif name == "content_block_delta":
            assert data["index"] in seen
        elif name == "content_block_stop":
            assert data["index"] in open_blocks
            open_blocks.discard(data["index"])
    assert not open_blocks
    text = "".join(d["delta"]["text"] for n, d in out if n == "content_block_delta" and d["delta"]["type"] == "text_delta")
    assert text == "".join(e.text for e in events if isinstance(e, C.TextDelta))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(texts.map(lambda t: ("text", t)),
                          st.tuples(st.just("tool"), st.dictionaries(st.text(max_size=5), st.integers()))),
                min_size=1, max_size=5))
def test_openai_answers_keep_text_and_tool_arguments_through_the_canonical_model(parts):
    text = "".join(t for kind, t in parts if kind == "text")
    calls = [{"id": f"c{i}", "type": "function", "function": {"name": f"f{i}", "arguments": json.dumps(args)}}
             for i, (kind, args) in enumerate(parts) if kind == "tool"]
    message = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    answer = {"id": "x", "model": "m", "choices": [{"message": message, "finish_reason": "tool_calls" if calls else "stop"}]}
    out = claude.response_from_canonical(openai_chat.response_to_canonical(answer), "m")
    assert "".join(b["text"] for b in out["content"] if b["type"] == "text") == text
    assert [b["input"] for b in out["content"] if b["type"] == "tool_use"] == [
        json.loads(c["function"]["arguments"]) for c in calls]
    assert out["stop_reason"] == ("tool_use" if calls else "end_turn")
