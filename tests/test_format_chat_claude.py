"""The OpenAI chat and Claude format modules: both directions, whole and streamed."""

import json
import re

import anthropic.types
import attrs
import openai.types.chat
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cliproxyd.formats import canonical as C
from cliproxyd.formats import claude, openai_chat
from cliproxyd.formats.translate import SSEParser
from cliproxyd.modelnames import Reasoning

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
JPEG = "/9j/4AAQSkZJRgABAQ=="


def payloads(raw: bytes) -> list:
    """The data of every SSE event in C{raw}: JSON decoded, C{[DONE]} as it is."""
    return [p.decode() if p == b"[DONE]" else json.loads(p) for p in SSEParser().feed(raw)]


def tool_parameters(req: C.Request) -> list:
    return [t.parameters for t in req.tools]  # Tool equality leaves parameters out


# -- requests: literal fixtures --------------------------------------------------------

CHAT_REQUEST = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You are a travel assistant."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in metric units."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "What is the weather here, and in Paris?"},
            {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG}", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/oslo.jpg"}}]},
        {"role": "assistant", "content": None, "reasoning_content": "Two cities: two calls.", "tool_calls": [
            {"id": "call_oslo", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "call_paris", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_oslo", "content": "4°C, rain"},
        {"role": "tool", "tool_call_id": "call_paris", "content": [{"type": "text", "text": "18°C, sunny"}]},
        {"role": "user", "content": "Which one is warmer?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Paris"}, {"type": "text", "text": "."}]},
        {"role": "user", "content": "Thanks!"},
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                                "parameters": WEATHER}}],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "max_completion_tokens": 1024,
    "temperature": 0.3,
    "top_p": 0.9,
    "stop": "###",
    "reasoning_effort": "low",
    "stream": True,
}

CHAT_CANONICAL = C.Request(
    model="gpt-4o",
    system="You are a travel assistant.\n\nAnswer in metric units.",
    messages=(
        C.Message("user", (C.Text("What is the weather here, and in Paris?"),
                           C.Image(data=JPEG, media_type="image/jpeg"), C.Image(url="https://example.com/oslo.jpg"))),
        C.Message("assistant", (C.Thinking("Two cities: two calls."),
                                C.ToolCall("call_oslo", "get_weather", '{"city":"Oslo"}'),
                                C.ToolCall("call_paris", "get_weather", '{"city":"Paris"}'))),
        C.Message("user", (C.ToolResult("call_oslo", "4°C, rain"), C.ToolResult("call_paris", "18°C, sunny"),
                           C.Text("Which one is warmer?"))),
        C.Message("assistant", (C.Text("Paris."),)),
        C.Message("user", (C.Text("Thanks!"),)),
    ),
    tools=(C.Tool("get_weather", "Weather for a city", WEATHER),),
    tool_choice="get_weather",
    max_tokens=1024,
    temperature=0.3,
    top_p=0.9,
    stop=("###",),
    stream=True,
    reasoning=Reasoning(level="low"),
)

CLAUDE_REQUEST = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 16000,
    "system": [{"type": "text", "text": "You are a travel assistant."},
               {"type": "text", "text": " Answer in metric units.", "cache_control": {"type": "ephemeral"}}],
    "thinking": {"type": "enabled", "budget_tokens": 4096},
    "tools": [{"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER}],
    "tool_choice": {"type": "auto"},
    "stop_sequences": ["###"],
    "stream": True,
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "What is the weather here, and in Paris?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": JPEG}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/oslo.jpg"}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Two cities: two calls.", "signature": "EqQBCkYIBxgC"},
            {"type": "text", "text": "Let me check both."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "4°C, rain"},
            {"type": "tool_result", "tool_use_id": "toolu_01B", "is_error": True,
             "content": [{"type": "text", "text": "station offline"}]},
            {"type": "text", "text": "Which one is warmer?"}]},
    ],
}

CLAUDE_CANONICAL = C.Request(
    model="claude-sonnet-4-5",
    system="You are a travel assistant. Answer in metric units.",
    messages=(
        C.Message("user", (C.Text("What is the weather here, and in Paris?"),
                           C.Image(data=JPEG, media_type="image/jpeg"), C.Image(url="https://example.com/oslo.jpg"))),
        C.Message("assistant", (C.Thinking("Two cities: two calls.", "EqQBCkYIBxgC"), C.Text("Let me check both."),
                                C.ToolCall("toolu_01A", "get_weather", '{"city":"Oslo"}'),
                                C.ToolCall("toolu_01B", "get_weather", '{"city":"Paris"}'))),
        C.Message("user", (C.ToolResult("toolu_01A", "4°C, rain"), C.ToolResult("toolu_01B", "station offline", True),
                           C.Text("Which one is warmer?"))),
    ),
    tools=(C.Tool("get_weather", "Weather for a city", WEATHER),),
    tool_choice="auto",
    max_tokens=16000,
    stop=("###",),
    stream=True,
    reasoning=Reasoning(budget=4096),
)


def test_a_chat_request_decodes_to_the_canonical_model():
    req = openai_chat.request_to_canonical(CHAT_REQUEST)
    assert req == CHAT_CANONICAL
    assert tool_parameters(req) == [WEATHER]
    assert openai_chat.validate(CHAT_REQUEST) == ("gpt-4o", True)


def test_a_claude_request_decodes_to_the_canonical_model():
    req = claude.request_to_canonical(CLAUDE_REQUEST)
    assert req == CLAUDE_CANONICAL
    assert tool_parameters(req) == [WEATHER]
    assert claude.request_to_canonical(json.loads(json.dumps(CLAUDE_REQUEST))) == req
    assert claude.validate(CLAUDE_REQUEST) == ("claude-sonnet-4-5", True)


def test_a_canonical_request_as_a_chat_body():
    body = openai_chat.request_from_canonical(CLAUDE_CANONICAL, "gpt-4o")
    assert body == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a travel assistant. Answer in metric units."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is the weather here, and in Paris?"},
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/oslo.jpg"}}]},
            {"role": "assistant", "content": "Let me check both.", "tool_calls": [  # no place for thinking
                {"id": "toolu_01A", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
                {"id": "toolu_01B", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
            {"role": "tool", "tool_call_id": "toolu_01A", "content": "4°C, rain"},
            {"role": "tool", "tool_call_id": "toolu_01B", "content": "station offline"},
            {"role": "user", "content": "Which one is warmer?"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                                    "parameters": WEATHER}}],
        "tool_choice": "auto",
        "max_tokens": 16000,
        "stop": ["###"],
        "reasoning_effort": "medium",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_a_canonical_request_as_a_claude_body():
    body = claude.request_from_canonical(CHAT_CANONICAL, "claude-sonnet-4-5")
    assert body == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024 + claude.ANSWER_HEADROOM,  # above the thinking budget, as Claude requires
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "system": "You are a travel assistant.\n\nAnswer in metric units.",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is the weather here, and in Paris?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": JPEG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/oslo.jpg"}}]},
            {"role": "assistant", "content": [  # the unsigned thinking is dropped
                {"type": "tool_use", "id": "call_oslo", "name": "get_weather", "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "call_paris", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_oslo", "content": "4°C, rain"},
                {"type": "tool_result", "tool_use_id": "call_paris", "content": "18°C, sunny"},
                {"type": "text", "text": "Which one is warmer?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Paris."}]},
            {"role": "user", "content": [{"type": "text", "text": "Thanks!"}]},
        ],
        "tools": [{"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER}],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "temperature": 0.3,
        "top_p": 0.9,
        "stop_sequences": ["###"],
        "stream": True,
    }


def test_claude_turns_alternate_with_tool_results_first_in_user_turns():
    req = C.Request("m", (
        C.Message("user", (C.Text("a"),)),
        C.Message("user", (C.Text(""), C.Text("b"))),
        C.Message("assistant", (C.Thinking("unsigned"), C.ToolCall("t1", "f", "not json"))),
        C.Message("assistant", (C.Image(url="https://x.test/i.png"),)),  # nothing Claude can carry
        C.Message("user", (C.Text("here you go"), C.ToolResult("t1", "done"))),
    ))
    body = claude.request_from_canonical(req, "m")
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "done"},
                                     {"type": "text", "text": "here you go"}]},
    ]
    assert body["max_tokens"] == claude.DEFAULT_MAX_TOKENS and "stream" not in body and "thinking" not in body


def test_tool_choice_none_keeps_the_tools_for_claude():
    req = C.Request("m", (C.Message("user", (C.Text("hi"),)),), tools=(C.Tool("f"),), tool_choice="none")
    body = claude.request_from_canonical(req, "m")
    assert body["tool_choice"] == {"type": "none"}
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]
    assert "tool_choice" not in claude.request_from_canonical(attrs.evolve(req, tools=()), "m")


# -- passthrough: set_model and apply_reasoning -----------------------------------------


def test_set_model_copies_the_body():
    for fmt, body in ((openai_chat, CHAT_REQUEST), (claude, CLAUDE_REQUEST)):
        renamed = fmt.set_model(body, "other")
        assert renamed["model"] == "other" and body["model"] != "other"
        assert renamed["messages"] is body["messages"]


@pytest.mark.parametrize("reasoning, effort", [
    (Reasoning(level="high"), "high"), (Reasoning(level="max"), "xhigh"), (Reasoning(budget=2000), "medium"),
    (Reasoning(level="none"), "none"), (Reasoning(budget=0), "none"), (Reasoning(level="auto"), None),
])
def test_chat_reasoning_effort(reasoning, effort):
    body = openai_chat.set_model({"model": "m", "reasoning_effort": "low"}, "m")
    openai_chat.apply_reasoning(body, reasoning)
    assert body.get("reasoning_effort") == effort


@pytest.mark.parametrize("reasoning, max_tokens, thinking, expect_max", [
    (Reasoning(level="none"), 500, {"type": "disabled"}, 500),
    (Reasoning(level="minimal"), 8000, {"type": "enabled", "budget_tokens": 1024}, 8000),
    (Reasoning(level="auto"), 8000, {"type": "enabled", "budget_tokens": 8192}, 8192 + 4096),
    (Reasoning(budget=30000), 64000, {"type": "enabled", "budget_tokens": 30000}, 64000),
    (Reasoning(budget=30000), 30000, {"type": "enabled", "budget_tokens": 30000}, 34096),
    (Reasoning(level="high"), None, {"type": "enabled", "budget_tokens": 24576}, 24576 + 4096),
])
def test_claude_thinking(reasoning, max_tokens, thinking, expect_max):
    body = {"model": "m", "thinking": {"type": "enabled", "budget_tokens": 2048}}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    claude.apply_reasoning(body, reasoning)
    assert body["thinking"] == thinking and body["max_tokens"] == expect_max


def test_claude_thinking_is_left_alone_when_nothing_is_asked():
    body = {"model": "m", "max_tokens": 10, "thinking": {"type": "disabled"}}
    claude.apply_reasoning(body, Reasoning())
    assert body == {"model": "m", "max_tokens": 10, "thinking": {"type": "disabled"}}


# -- bad requests name the path -------------------------------------------------------


def chat(*messages, **top):
    return {"model": "m", "messages": list(messages) or [{"role": "user", "content": "hi"}], **top}


HI = {"role": "user", "content": "hi"}


@pytest.mark.parametrize("body, message", [
    ([], "the body must be a JSON object"),
    ({"model": "m", "messages": []}, "'messages' is required and must be a non-empty array"),
    (chat(stream="yes"), "'stream' must be true or false"),
    (chat(HI, {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": 7, "arguments": "{}"}}]}),
     "messages[1].tool_calls[0].function.name must be a string"),
    (chat(HI, {"role": "assistant", "tool_calls": [{"id": "c"}]}), "messages[1].tool_calls[0].function must be an object"),
    (chat(HI, {"role": "assistant", "tool_calls": "x"}), "messages[1].tool_calls must be an array"),
    (chat({"role": "user", "content": [{"type": "text", "text": "x"},
                                       {"type": "image_url", "image_url": {"url": "data:image/png,raw"}}]}),
     "messages[0].content[1].image_url.url must be an http(s) URL or a base64 data: URL"),
    (chat({"role": "user", "content": [{"type": "image_url", "image_url": "https://x"}]}),
     "messages[0].content[0].image_url.url must be a string"),
    (chat({"role": "user", "content": None}), "messages[0].content must be an array"),
    (chat(HI, {"role": "tool", "content": "x"}), "messages[1].tool_call_id must be a string"),
    (chat({"role": "system", "content": [{"type": "text", "text": 1}]}), "messages[0].content[0].text must be a string"),
    (chat({"role": "function", "content": "x"}), "messages[0].role must be system, developer, user, assistant or tool"),
    (chat(tools=[{"type": "function"}]), "tools[0].function must be an object"),
    (chat(tools=[{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
     "tools[0].function.parameters must be an object"),
    (chat(tool_choice={"type": "function", "function": {}}), "tool_choice.function.name must be a string"),
    (chat(tool_choice="always"), "tool_choice must be auto, none, required or {type: function, function: {name}}"),
    (chat(max_completion_tokens=0), "max_completion_tokens must be a positive integer"),
    (chat(max_tokens="10"), "max_tokens must be a positive integer"),
    (chat(temperature="hot"), "temperature must be a number"),
    (chat(stop=["a", 1]), "stop must be a string or an array of strings"),
    (chat(reasoning_effort="extreme"), "reasoning_effort must be none, minimal, low, medium, high or xhigh"),
])
def test_bad_chat_requests_name_the_field(body, message):
    with pytest.raises(C.BadRequest, match=f"^{re.escape(message)}$"):
        openai_chat.request_to_canonical(body)


@pytest.mark.parametrize("body, message", [
    ("x", "the body must be a JSON object"),
    ({"messages": [HI]}, "model: a non-empty string is required"),
    ({"model": "m", "messages": [HI], "stream": "yes"}, "stream must be true or false"),
    ({"model": "m", "messages": [HI, {"role": "system", "content": "x"}]},
     "messages[1]: an object with role user or assistant is required"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
     "messages[0].content[0].text must be a string"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]},
     "messages[0].content[0].source must be base64 or url"),
    ({"model": "m", "messages": [HI], "tools": [{"description": "no name"}]},
     "tools[0]: an object with a name is required"),
    ({"model": "m", "messages": [HI], "max_tokens": 0}, "max_tokens must be a positive integer"),
    ({"model": "m", "messages": [HI], "top_p": "high"}, "top_p must be a number"),
])
def test_bad_claude_requests_name_the_field(body, message):
    with pytest.raises(C.BadRequest, match=f"^{re.escape(message)}$"):
        claude.request_to_canonical(body)


# -- answers: literal fixtures ----------------------------------------------------------

CHAT_ANSWER = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion", "created": 1741570283,
    "model": "deepseek-reasoner", "system_fingerprint": "fp_1",
    "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "reasoning_content": "Both cities.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}}],
    "usage": {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160,
              "prompt_tokens_details": {"cached_tokens": 64}, "completion_tokens_details": {"reasoning_tokens": 12}},
}

CLAUDE_ANSWER = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [
        {"type": "thinking", "thinking": "Both cities.", "signature": "EqQBCkYIBxgC"},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
        {"type": "text", "text": "Checking both."},
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Oslo", "units": "°C"}},
        {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Paris"}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 472, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2048,
              "output_tokens": 89},
}


def test_a_chat_answer_decodes_to_the_canonical_model():
    assert openai_chat.response_to_canonical(CHAT_ANSWER) == C.Response(
        "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "deepseek-reasoner",
        (C.Thinking("Both cities."), C.ToolCall("call_1", "get_weather", '{"city":"Oslo"}'),
         C.ToolCall("call_2", "get_weather", '{"city":"Paris"}')),
        C.TOOL_CALLS, C.Usage(120, 40, 64, 12))


def test_a_claude_answer_decodes_to_the_canonical_model():
    assert claude.response_to_canonical(CLAUDE_ANSWER) == C.Response(
        "msg_01XFDUDYJgAACzvnptvVoYEL", "claude-sonnet-4-5",
        (C.Thinking("Both cities.", "EqQBCkYIBxgC"), C.Text("Checking both."),
         C.ToolCall("toolu_01A", "get_weather", '{"city":"Oslo","units":"°C"}'),
         C.ToolCall("toolu_01B", "get_weather", '{"city":"Paris"}')),
        C.TOOL_CALLS,
        C.Usage(input_tokens=472 + 100 + 2048, output_tokens=89, cached_tokens=2048))  # every prompt token


@pytest.mark.parametrize("stop_reason, canonical", [
    ("end_turn", C.STOP), ("stop_sequence", C.STOP), ("max_tokens", C.LENGTH), ("tool_use", C.TOOL_CALLS),
    ("refusal", C.CONTENT_FILTER),
])
def test_claude_stop_reasons(stop_reason, canonical):
    assert claude.response_to_canonical({**CLAUDE_ANSWER, "stop_reason": stop_reason}).stop_reason == canonical


ANSWER = C.Response("abc123", "upstream-model", (
    C.Thinking("Both cities.", "EqQBCkYIBxgC"), C.Text("Checking both."),
    C.ToolCall("call_1", "get_weather", '{"city":"Oslo"}'), C.ToolCall("call_2", "get_weather", "{oops")),
    C.TOOL_CALLS, C.Usage(2620, 89, 2048, 30))


def test_an_answer_for_a_chat_client_is_a_valid_chat_completion():
    body = openai_chat.response_from_canonical(ANSWER, "gpt-4o")
    parsed = openai.types.chat.ChatCompletion.model_validate(body)
    assert parsed.id == "chatcmpl-abc123" and parsed.model == "gpt-4o" and parsed.object == "chat.completion"
    choice = parsed.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Checking both."
    assert [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls] == [
        ("call_1", "get_weather", '{"city":"Oslo"}'), ("call_2", "get_weather", "{oops")]
    assert body["choices"][0]["message"]["reasoning_content"] == "Both cities."
    assert parsed.usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 2620, "completion_tokens": 89, "total_tokens": 2709,
        "prompt_tokens_details": {"cached_tokens": 2048}, "completion_tokens_details": {"reasoning_tokens": 30}}
    only_calls = openai_chat.response_from_canonical(attrs.evolve(ANSWER, parts=ANSWER.parts[2:]), "m")
    assert only_calls["choices"][0]["message"]["content"] is None


def test_an_answer_for_a_claude_client_is_a_valid_message():
    body = claude.response_from_canonical(ANSWER, "claude-sonnet-4-5")
    parsed = anthropic.types.Message.model_validate(body)
    assert parsed.id == "msg_abc123" and parsed.model == "claude-sonnet-4-5" and parsed.stop_reason == "tool_use"
    assert [b.type for b in parsed.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert parsed.content[0].signature == "EqQBCkYIBxgC"
    assert [b.input for b in parsed.content[2:]] == [{"city": "Oslo"}, {}]  # invalid JSON arguments -> {}
    assert (parsed.usage.input_tokens, parsed.usage.cache_read_input_tokens, parsed.usage.output_tokens) == (
        572, 2048, 89)
    assert claude.response_from_canonical(ANSWER, "claude-sonnet-4-5") == body


# -- streams: literal fixtures ---------------------------------------------------------

CLAUDE_STREAM = b"""\
event: message_start
data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":2048,"output_tokens":2}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Two cities, "}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"two calls."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCkYIBxgC"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: ping
data: {"type": "ping"}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Checking "}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"both \\u2028cities."}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_01A","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\\"city\\": \\"Os"}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"lo\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: content_block_start
data: {"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_01B","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{\\"city\\": \\"Paris\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":3}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"""


def decode(decoder, raw: bytes) -> list[C.Event]:
    return [e for p in payloads(raw) if p != "[DONE]" for e in decoder.feed(p)]


def test_a_claude_stream_decodes_to_canonical_events():
    assert decode(claude.StreamDecoder(), CLAUDE_STREAM) == [
        C.Start("msg_01", "claude-sonnet-4-5"),
        C.ThinkingDelta("Two cities, "), C.ThinkingDelta("two calls."),
        C.TextDelta("Checking "), C.TextDelta("both \u2028cities."),
        C.ToolCallStart(0, "toolu_01A", "get_weather"),
        C.ToolCallDelta(0, '{"city": "Os'), C.ToolCallDelta(0, 'lo"}'),
        C.ToolCallStart(1, "toolu_01B", "get_weather"), C.ToolCallDelta(1, '{"city": "Paris"}'),
        C.Finish(C.TOOL_CALLS),
        C.UsageEvent(C.Usage(input_tokens=472 + 2048, output_tokens=89, cached_tokens=2048)),
    ]


def test_a_claude_error_event_decodes_to_an_error_event():
    raw = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    assert decode(claude.StreamDecoder(), raw) == [C.ErrorEvent("Overloaded", "overloaded_error", 529)]


def test_the_chat_stream_encoder_speaks_chat_completion_chunks():
    encoder = openai_chat.StreamEncoder("gpt-4o")
    raw = b"".join(encoder.feed(e) for e in decode(claude.StreamDecoder(), CLAUDE_STREAM)) + encoder.close()
    assert raw.isascii() and raw.decode().splitlines() == raw.decode().split("\n")[:-1]  # U+2028 is escaped
    *chunks, done = payloads(raw)
    assert done == "[DONE]"
    parsed = [openai.types.chat.ChatCompletionChunk.model_validate(c) for c in chunks]
    assert {c.id for c in parsed} == {"chatcmpl-msg_01"} and {c.model for c in parsed} == {"gpt-4o"}
    assert parsed[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta for c in parsed if c.choices]
    assert "".join(d.content or "" for d in deltas) == "Checking both \u2028cities."
    assert "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks if c["choices"]) == (
        "Two cities, two calls.")
    calls = [t for d in deltas for t in d.tool_calls or ()]
    assert [(t.index, t.id, t.function.name) for t in calls if t.id] == [
        (0, "toolu_01A", "get_weather"), (1, "toolu_01B", "get_weather")]
    assert [c.choices[0].finish_reason for c in parsed if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert parsed[-1].choices == [] and parsed[-1].usage.prompt_tokens == 2520


def test_a_chat_stream_error_ends_the_stream_without_done():
    encoder = openai_chat.StreamEncoder("m")
    raw = encoder.feed(C.TextDelta("par")) + encoder.feed(C.ErrorEvent("upstream broke off", "server_error"))
    assert encoder.close() == b""
    *_, error = payloads(raw)
    assert error == {"error": {"message": "upstream broke off", "type": "server_error", "code": None}}
    assert openai_chat.StreamDecoder().feed(error) == [C.ErrorEvent("upstream broke off", "server_error", 500)]


def test_the_claude_stream_encoder_speaks_claude_events():
    encoder = claude.StreamEncoder("claude-sonnet-4-5")
    events = [C.Start("x", "m"), C.ThinkingDelta("Hm."), C.TextDelta("Hi"), C.ToolCallStart(0, "t1", "f"),
              C.ToolCallStart(1, "t2", "g"),
              C.ToolCallDelta(1, '{"b":'), C.ToolCallDelta(0, '{"a":1}'), C.ToolCallDelta(1, "2}"),
              C.Finish(C.TOOL_CALLS), C.UsageEvent(C.Usage(100, 7, 60))]
    raw = b"".join(encoder.feed(e) for e in events) + encoder.close()
    adapter = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
    parsed = [adapter.validate_python(p) for p in payloads(raw)]
    assert [p.content_block.type for p in parsed if p.type == "content_block_start"] == [
        "thinking", "text", "tool_use", "tool_use"]
    assert [p.type for p in parsed] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",  # t1 streams live
        "content_block_start", "content_block_delta", "content_block_stop",  # t2 was held while t1 was open
        "message_delta", "message_stop"]
    assert [p.delta.partial_json for p in parsed if p.type == "content_block_delta" and p.delta.type == "input_json_delta"
            ] == ['{"a":1}', '{"b":2}']
    assert parsed[-2].usage.input_tokens == 40 and parsed[-2].usage.cache_read_input_tokens == 60


# -- errors, counts, listings -----------------------------------------------------------


@pytest.mark.parametrize("status, kind, code", [
    (400, "invalid_request_error", None), (401, "invalid_request_error", "invalid_api_key"),
    (403, "permission_error", "insufficient_quota"), (404, "invalid_request_error", "model_not_found"),
    (413, "invalid_request_error", "request_too_large"), (429, "rate_limit_error", "rate_limit_exceeded"),
    (500, "server_error", "internal_server_error"), (503, "server_error", "internal_server_error"),
])
def test_chat_problem_bodies(status, kind, code):
    assert json.loads(openai_chat.error_body(status, "nope")) == {
        "error": {"message": "nope", "type": kind, "code": code}}


def test_chat_problem_extra_joins_and_overrides():
    body = json.loads(openai_chat.error_body(429, "cooling", {"code": "model_cooldown", "reset_seconds": 30}))
    assert body == {"error": {"message": "cooling", "type": "rate_limit_error", "code": "model_cooldown",
                              "reset_seconds": 30}}


def test_claude_counts_and_models():
    assert claude.count_request(claude.request_from_canonical(CHAT_CANONICAL, "c"), "c") == {
        key: value for key, value in claude.request_from_canonical(CHAT_CANONICAL, "c").items()
        if key not in ("max_tokens", "temperature", "top_p", "stop_sequences", "stream")}
    assert claude.count_body(42) == {"input_tokens": 42}
    assert claude.count_from_body({"input_tokens": "42"}) == 42
    with pytest.raises(KeyError):
        claude.count_from_body({})
    assert json.loads(claude.models_body([("claude-a", "anthropic"), ("gpt-b", "openai")], 1700000000)) == {
        "data": [{"type": "model", "id": "claude-a", "display_name": "claude-a", "created_at": "2023-11-14T22:13:20Z"},
                 {"type": "model", "id": "gpt-b", "display_name": "gpt-b", "created_at": "2023-11-14T22:13:20Z"}],
        "has_more": False, "first_id": "claude-a", "last_id": "gpt-b"}
    assert json.loads(claude.models_body([], 0))["first_id"] is None


# -- properties: requests ---------------------------------------------------------------

texts = st.text(min_size=1, max_size=12)
names = st.sampled_from(["get_weather", "search", "call_1", "toolu_01A", "f", "x-y"])  # ids and tool names
images = st.one_of(
    st.sampled_from(["https://example.com/a.png", "http://img.test/b.jpg"]).map(lambda u: C.Image(url=u)),
    st.builds(lambda d, t: C.Image(data=d, media_type=t),
              st.text("ABCXYZabcxyz0189+/", min_size=4, max_size=16), st.sampled_from(["image/png", "image/jpeg"])),
)
json_objects = st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5), st.booleans()),
                               max_size=3).map(lambda d: json.dumps(d, ensure_ascii=False, separators=(",", ":")))
tools = st.lists(st.builds(C.Tool, names, st.text(max_size=10),
                           st.dictionaries(names, st.just({"type": "string"}), max_size=2).map(
                               lambda p: {"type": "object", "properties": p})),
                 max_size=2, unique_by=lambda t: t.name)
usages = st.builds(C.Usage, *[st.integers(0, 10**6)] * 4)


@st.composite
def conversations(draw, user_parts, assistant_parts):
    """Alternating user and assistant messages, starting with the user."""
    return tuple(C.Message(role, draw(user_parts if role == "user" else assistant_parts))
                 for role in ["user", "assistant"] * draw(st.integers(0, 2)) + ["user"])


# What chat can carry: a user turn is tool results, then one text or parts with an
# image; an assistant turn is text and tool calls; tool results carry no error flag.
chat_user_parts = st.tuples(
    st.lists(st.builds(C.ToolResult, names, st.text(max_size=10)), max_size=2),
    st.one_of(st.just([]), texts.map(lambda t: [C.Text(t)]),
              st.tuples(st.lists(st.one_of(texts.map(C.Text), images), max_size=2), images).map(lambda t: [*t[0], t[1]])),
).map(lambda t: (*t[0], *t[1]) or (C.Text("hi"),))
chat_assistant_parts = st.tuples(
    st.lists(texts.map(C.Text), max_size=1), st.lists(st.builds(C.ToolCall, names, names, texts), max_size=2),
).map(lambda t: (*t[0], *t[1]) or (C.Text("ok"),))


@st.composite
def requests(draw, user_parts, assistant_parts, reasoning, **fields):
    req_tools = draw(tools)
    return C.Request(
        model="client-model",
        messages=draw(conversations(user_parts, assistant_parts)),
        system=draw(st.text(max_size=10)),
        tools=tuple(req_tools),
        tool_choice=draw(st.one_of(st.none(), st.sampled_from(["auto", "none", "required", *[t.name for t in req_tools]])))
        if req_tools else None,
        temperature=draw(st.none() | st.floats(0, 2)),
        top_p=draw(st.none() | st.floats(0, 1)),
        stop=tuple(draw(st.lists(texts, max_size=2))),
        stream=draw(st.booleans()),
        reasoning=draw(reasoning),
        **{k: draw(v) for k, v in fields.items()},
    )


@settings(max_examples=100, deadline=None)
@given(requests(chat_user_parts, chat_assistant_parts, max_tokens=st.none() | st.integers(1, 10**6),
                reasoning=st.none() | st.sampled_from(["none", "minimal", "low", "medium", "high", "xhigh"]).map(
                    lambda level: Reasoning(level=level))))
def test_what_chat_can_carry_survives_a_round_trip(req):
    back = openai_chat.request_to_canonical(openai_chat.request_from_canonical(req, "up"))
    assert back == attrs.evolve(req, model="up")
    assert tool_parameters(back) == tool_parameters(req)


# What Claude can carry: a user turn is tool results first, then text and images;
# an assistant turn is signed thinking, text and tool calls with object arguments.
claude_user_parts = st.tuples(
    st.lists(st.builds(C.ToolResult, names, st.text(max_size=10), st.booleans()), max_size=2),
    st.lists(st.one_of(texts.map(C.Text), images), max_size=3),
).map(lambda t: (*t[0], *t[1]) or (C.Text("hi"),))
claude_assistant_parts = st.lists(st.one_of(
    texts.map(C.Text), st.builds(C.Thinking, st.text(max_size=10), names), st.builds(C.ToolCall, names, names, json_objects),
), min_size=1, max_size=4).map(tuple)


@settings(max_examples=100, deadline=None)
@given(requests(claude_user_parts, claude_assistant_parts, max_tokens=st.integers(1, 200000),
                reasoning=st.none() | st.just(Reasoning(level="none")) | st.integers(1024, 100000).map(
                    lambda b: Reasoning(budget=b))))
def test_what_claude_can_carry_survives_a_round_trip(req):
    back = claude.request_to_canonical(claude.request_from_canonical(req, "up"))
    budget = req.reasoning.budget if req.reasoning is not None and req.reasoning.budget else 0
    if req.max_tokens > budget:
        assert back.max_tokens == req.max_tokens
    else:
        assert back.max_tokens > budget
    assert attrs.evolve(back, max_tokens=req.max_tokens) == attrs.evolve(req, model="up")
    assert tool_parameters(back) == tool_parameters(req)


any_parts = st.lists(st.one_of(
    texts.map(C.Text), st.text(max_size=3).map(C.Text), images, st.builds(C.Thinking, texts, st.sampled_from(["", "sig"])),
    st.builds(C.ToolCall, names, names, st.one_of(json_objects, texts)),
    st.builds(C.ToolResult, names, st.text(max_size=5), st.booleans()),
), max_size=4).map(tuple)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.builds(C.Message, st.sampled_from(["user", "assistant"]), any_parts), min_size=1, max_size=6))
def test_claude_turns_always_alternate_and_keep_tool_results_in_user_turns(messages):
    turns = claude.request_from_canonical(C.Request("m", tuple(messages)), "m")["messages"]
    assert all(a["role"] != b["role"] for a, b in zip(turns, turns[1:]))
    for turn in turns:
        kinds = [b["type"] for b in turn["content"]]
        assert kinds and "" not in [b.get("text") for b in turn["content"]]
        if turn["role"] == "user":
            assert kinds == sorted(kinds, key=lambda k: k != "tool_result")
            assert not {"tool_use", "thinking"} & set(kinds)
        else:
            assert not {"tool_result", "image"} & set(kinds)
            assert all(b["signature"] for b in turn["content"] if b["type"] == "thinking")


# -- properties: answers ----------------------------------------------------------------

stop_reasons = st.sampled_from([C.STOP, C.LENGTH, C.TOOL_CALLS, C.CONTENT_FILTER])


@settings(max_examples=100, deadline=None)
@given(st.builds(
    C.Response, names.map(lambda s: "chatcmpl-" + s), names,
    st.tuples(st.lists(texts.map(C.Thinking), max_size=1), st.lists(texts.map(C.Text), max_size=1),
              st.lists(st.builds(C.ToolCall, names, names, texts), max_size=3)).map(lambda t: (*t[0], *t[1], *t[2])),
    stop_reasons, usages))
def test_a_chat_answer_round_trip(resp):
    body = openai_chat.response_from_canonical(resp, resp.model)
    openai.types.chat.ChatCompletion.model_validate(body)
    assert openai_chat.response_to_canonical(body) == resp


@st.composite
def claude_usages(draw):
    cached = draw(st.integers(0, 10**6))
    return C.Usage(cached + draw(st.integers(0, 10**6)), draw(st.integers(0, 10**6)), cached)


@settings(max_examples=100, deadline=None)
@given(st.builds(
    C.Response, names.map(lambda s: "msg_" + s), names,
    st.lists(st.one_of(texts.map(C.Text), st.builds(C.Thinking, st.text(max_size=10), st.text(max_size=6)),
                       st.builds(C.ToolCall, names, names, json_objects)), max_size=4).map(tuple),
    stop_reasons, claude_usages()))
def test_a_claude_answer_round_trip(resp):
    body = claude.response_from_canonical(resp, resp.model)
    anthropic.types.Message.model_validate(body)
    assert claude.response_to_canonical(body) == resp


# -- properties: streams ----------------------------------------------------------------

stream_events = st.lists(st.one_of(
    texts.map(C.TextDelta),
    texts.map(C.ThinkingDelta),
    st.builds(C.ToolCallStart, st.integers(0, 2), names, names),
    st.builds(C.ToolCallDelta, st.integers(0, 2), texts),
    stop_reasons.map(C.Finish),
    claude_usages().map(C.UsageEvent),
), max_size=25)


def summary(events: list[C.Event]) -> dict:
    """What a client makes of a stream: text, thinking, tool calls, finishes and usage."""
    calls: list[list[str]] = []
    by_index: dict[int, list[str]] = {}
    for e in events:
        if isinstance(e, C.ToolCallStart):
            calls.append(by_index.setdefault(e.index, []))
            by_index[e.index] = calls[-1] = [e.id, e.name, ""]
        elif isinstance(e, C.ToolCallDelta) and e.index in by_index:
            by_index[e.index][2] += e.arguments
    return {
        "text": "".join(e.text for e in events if isinstance(e, C.TextDelta)),
        "thinking": "".join(e.text for e in events if isinstance(e, C.ThinkingDelta)),
        "calls": calls,
        "finish": [e.stop_reason for e in events if isinstance(e, C.Finish)],
        "usage": [e.usage for e in events if isinstance(e, C.UsageEvent)],
    }


@settings(max_examples=150, deadline=None)
@given(stream_events)
def test_a_chat_stream_round_trip(events):
    encoder = openai_chat.StreamEncoder("m")
    raw = b"".join(encoder.feed(e) for e in [C.Start("abc", "m"), *events]) + encoder.close()
    assert raw.isascii() and raw.endswith(b"data: [DONE]\n\n")
    for chunk in payloads(raw)[:-1]:
        openai.types.chat.ChatCompletionChunk.model_validate(chunk)
    decoded = decode(openai_chat.StreamDecoder(), raw)
    assert decoded[0] == C.Start("chatcmpl-abc", "m")
    assert summary(decoded) == summary(events)


@settings(max_examples=150, deadline=None)
@given(stream_events)
def test_a_claude_stream_round_trip(events):
    encoder = claude.StreamEncoder("m")
    raw = b"".join(encoder.feed(e) for e in [C.Start("msg_abc", "m"), *events]) + encoder.close()
    assert raw.isascii()
    open_block = None
    for p in payloads(raw):  # one block at a time, and every delta lands in the open one
        if p["type"] == "content_block_start":
            assert open_block is None
            open_block = p["index"]
        elif p["type"] in ("content_block_delta", "content_block_stop"):
            assert p["index"] == open_block
            open_block = None if p["type"] == "content_block_stop" else open_block
    decoded = decode(claude.StreamDecoder(), raw)
    assert decoded[0] == C.Start("msg_abc", "m")
    expected = summary(events)
    finishes, usages = expected["finish"], expected["usage"]
    expected["finish"] = finishes[-1:] or [C.STOP]  # Claude says how a message ended once, at its end
    expected["usage"] = usages[-1:] or [C.Usage()]
    assert summary(decoded) == expected
