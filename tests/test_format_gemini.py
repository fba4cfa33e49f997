"""The Gemini generateContent format: requests, answers, streams, errors, checked against the google-genai SDK."""

import base64
import json

import httpx2 as httpx
import pytest
from google import genai
from google.genai import types
from hypothesis import given, settings
from hypothesis import strategies as st

from cliproxyd.formats import canonical as C
from cliproxyd.formats import gemini
from cliproxyd.formats.translate import SSEParser
from cliproxyd.modelnames import Reasoning

# -- helpers ---------------------------------------------------------------------


def sdk_client(handler) -> genai.Client:
    """A google-genai client whose HTTP goes to C{handler} (an httpx request -> response function)."""
    transport = httpx.MockTransport(handler)
    return genai.Client(api_key="test-key", http_options=types.HttpOptions(httpx_client=httpx.Client(transport=transport)))


def sdk_request_body(contents, config) -> dict:
    """The JSON body the SDK sends for a generate_content call."""
    bodies = []

    def handler(request):
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]}}]})

    sdk_client(handler).models.generate_content(model="gemini-2.5-flash", contents=contents, config=config)
    return bodies[0]


def encode(events, sse=True) -> bytes:
    enc = gemini.StreamEncoder("gemini-2.5-flash", sse=sse)
    return b"".join(enc.feed(e) for e in events) + enc.close()


def payloads(raw: bytes, sse=True) -> list[dict]:
    if sse:
        return [json.loads(p) for p in SSEParser().feed(raw)]
    data = json.loads(raw)
    assert isinstance(data, list)
    return data


def decode(chunks) -> list[C.Event]:
    dec = gemini.StreamDecoder()
    return [e for chunk in chunks for e in dec.feed(chunk)]


def args_of(call: C.ToolCall):
    return json.loads(call.arguments)


# -- requests in -----------------------------------------------------------------

WEATHER_SCHEMA = {"type": "OBJECT", "properties": {"city": {"type": "STRING", "description": "City name"},
                                                   "days": {"type": "INTEGER"}}, "required": ["city"]}

REQUEST = {
    "systemInstruction": {"parts": [{"text": "You are terse. "}, {"text": "Answer in English."}]},
    "contents": [
        {"role": "user", "parts": [{"text": "What is in this picture, and the weather in Oslo?"},
                                   {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQSkZJRg=="}},
                                   {"fileData": {"fileUri": "https://example.com/cat.png", "mimeType": "image/png"}}]},
        {"role": "model", "parts": [{"text": "A cat.", "thought": True, "thoughtSignature": "c2lnLTE="},
                                    {"functionCall": {"name": "get_weather", "args": {"city": "Oslo", "days": 2}},
                                     "thoughtSignature": "c2lnLTI="}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                                                         "response": {"output": "rain, 7C"}}}]},
        {"role": "model", "parts": [{"text": "It is a cat; Oslo has rain."}]},
        {"role": "user", "parts": [{"text": "Thanks"}]},
    ],
    "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather for a city",
                                         "parameters": WEATHER_SCHEMA}]},
              {"googleSearch": {}}],
    "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
    "generationConfig": {"maxOutputTokens": 512, "temperature": 0.4, "topP": 0.9, "stopSequences": ["END"],
                         "thinkingConfig": {"thinkingLevel": "HIGH", "includeThoughts": True}},
}


def test_a_realistic_request_reads_exactly():
    req = gemini.request_to_canonical(REQUEST)
    assert req == C.Request(
        model="",
        messages=(
            C.Message("user", (C.Text("What is in this picture, and the weather in Oslo?"),
                               C.Image(data="/9j/4AAQSkZJRg==", media_type="image/jpeg"),
                               C.Image(url="https://example.com/cat.png"))),
            C.Message("assistant", (C.Thinking("A cat.", "c2lnLTE="), C.Thinking("", "c2lnLTI="),
                                    C.ToolCall("call_get_weather_0", "get_weather", '{"city":"Oslo","days":2}'))),
            C.Message("user", (C.ToolResult("call_get_weather_0", "rain, 7C"),)),
            C.Message("assistant", (C.Text("It is a cat; Oslo has rain."),)),
            C.Message("user", (C.Text("Thanks"),)),
        ),
        system="You are terse. Answer in English.",
        tools=(C.Tool("get_weather", "Weather for a city"),),
        tool_choice="get_weather",
        max_tokens=512,
        temperature=0.4,
        top_p=0.9,
        stop=("END",),
        reasoning=Reasoning(level="high"),
    )
    # Gemini's OpenAPI-style schema, as JSON Schema for the other formats
    assert req.tools[0].parameters == {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name"}, "days": {"type": "integer"}}, "required": ["city"]}
    assert gemini.validate(REQUEST) == ("", False)


def test_a_request_built_by_the_sdk_reads_exactly():
    # The SDK spells some keys in snake_case (mime_type, thinking_budget, parameters_json_schema, max_items).
    body = sdk_request_body(
        contents=[
            types.Content(role="user", parts=[types.Part(text="hi"),
                                              types.Part.from_bytes(data=b"\x89PNG", mime_type="image/png")]),
            types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(
                id="fc-1", name="lookup", args={"q": "x"}))]),
            types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
                id="fc-1", name="lookup", response={"error": "not found"}))]),
        ],
        config=types.GenerateContentConfig(
            system_instruction="Be brief", max_output_tokens=100, temperature=0.5, top_p=0.8, stop_sequences=["X"],
            thinking_config=types.ThinkingConfig(thinking_budget=1024, include_thoughts=True),
            tools=[types.Tool(function_declarations=[
                types.FunctionDeclaration(name="lookup", description="Look up",
                                          parameters_json_schema={"type": "object", "additionalProperties": False}),
                types.FunctionDeclaration(name="tags", parameters=types.Schema(
                    type="OBJECT", properties={"tag_list": types.Schema(type="ARRAY", max_items=3,
                                                                        items=types.Schema(type="STRING"))}))])],
            tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="NONE")),
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        ),
    )
    req = gemini.request_to_canonical(body)
    assert req.messages == (
        C.Message("user", (C.Text("hi"), C.Image(data="iVBORw==", media_type="image/png"))),
        C.Message("assistant", (C.ToolCall("fc-1", "lookup", '{"q":"x"}'),)),
        C.Message("user", (C.ToolResult("fc-1", "not found", is_error=True),)),
    )
    assert req.system == "Be brief"
    assert (req.max_tokens, req.temperature, req.top_p, req.stop) == (100, 0.5, 0.8, ("X",))
    assert req.reasoning == Reasoning(budget=1024)
    assert req.tool_choice == "none"
    assert [(t.name, t.description) for t in req.tools] == [("lookup", "Look up"), ("tags", "")]
    assert req.tools[0].parameters == {"type": "object", "additionalProperties": False}
    assert req.tools[1].parameters == {"type": "object", "properties": {
        "tag_list": {"type": "array", "maxItems": 3, "items": {"type": "string"}}}}


def test_calls_without_ids_pair_with_their_responses_by_name_and_order():
    req = gemini.request_to_canonical({"contents": [
        {"role": "model", "parts": [{"functionCall": {"name": "a", "args": {"n": 1}}},
                                    {"functionCall": {"name": "a", "args": {"n": 2}}},
                                    {"functionCall": {"name": "b"}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "b", "response": {"x": 1}}},
                                   {"functionResponse": {"name": "a", "response": {"content": "one"}}},
                                   {"functionResponse": {"name": "a", "response": {"output": ["two"]}}}]},
    ]})
    calls, results = req.messages[0].parts, req.messages[1].parts
    assert [c.id for c in calls] == ["call_a_0", "call_a_1", "call_b_2"]
    assert calls[2].arguments == "{}"
    assert results == (C.ToolResult("call_b_2", '{"x":1}'), C.ToolResult("call_a_0", "one"),
                       C.ToolResult("call_a_1", '{"output":["two"]}'))


@pytest.mark.parametrize("body, message", [
    ([], "the body must be a JSON object"),
    ({}, "contents: a non-empty array is required"),
    ({"contents": []}, "contents: a non-empty array is required"),
    ({"contents": ["hi"]}, "contents[0] must be an object"),
    ({"contents": [{"parts": []}, {"parts": {"text": "x"}}]}, "contents[1].parts must be an array"),
    ({"contents": [{"role": "system", "parts": []}]}, "contents[0].role must be user or model"),
    ({"contents": [{"parts": ["hi"]}]}, "contents[0].parts[0] must be an object"),
    ({"contents": [{"parts": [{"text": 5}]}]}, "contents[0].parts[0].text must be a string"),
    ({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png"}}]}]},
     "contents[0].parts[0].inlineData.data must be a string"),
    ({"contents": [{"parts": [{"fileData": {}}]}]}, "contents[0].parts[0].fileData.fileUri must be a string"),
    ({"contents": [{"parts": [{"text": "x"}, {"functionCall": {"name": "f", "args": [1]}}]}]},
     "contents[0].parts[1].functionCall.args must be an object"),
    ({"contents": [{"parts": [{"functionCall": {"args": {}}}]}]}, "contents[0].parts[0].functionCall.name must be"),
    ({"contents": [{"parts": [{"functionResponse": {"name": "f", "response": "ok"}}]}]},
     "contents[0].parts[0].functionResponse.response must be an object"),
    ({"contents": [{"parts": []}], "systemInstruction": 5}, "systemInstruction must be an object"),
    ({"contents": [{"parts": []}], "tools": {}}, "tools must be an array"),
    ({"contents": [{"parts": []}], "tools": [{"functionDeclarations": [{"description": "x"}]}]},
     "tools[0].functionDeclarations[0].name must be a string"),
    ({"contents": [{"parts": []}], "generationConfig": []}, "generationConfig must be an object"),
    ({"contents": [{"parts": []}], "generationConfig": {"maxOutputTokens": "10"}},
     "generationConfig.maxOutputTokens must be an integer"),
    ({"contents": [{"parts": []}], "generationConfig": {"maxOutputTokens": 0}},
     "generationConfig.maxOutputTokens must be a positive integer"),
    ({"contents": [{"parts": []}], "generationConfig": {"temperature": "hot"}},
     "generationConfig.temperature must be a number"),
    ({"contents": [{"parts": []}], "generationConfig": {"stop_sequences": "END"}},
     "generationConfig.stopSequences must be an array"),
    ({"contents": [{"parts": []}], "generationConfig": {"thinkingConfig": {"thinkingBudget": "lots"}}},
     "generationConfig.thinkingConfig.thinkingBudget must be an integer"),
])
def test_bad_requests_name_the_field(body, message):
    with pytest.raises(C.BadRequest) as e:
        gemini.request_to_canonical(body)
    assert message in str(e.value)


def test_validate_checks_the_body_cheaply():
    assert gemini.validate({"contents": [{"parts": [{"text": 5}]}]}) == ("", False)  # parts are decoded later
    with pytest.raises(C.BadRequest, match=r"contents\[0\] must be an object"):
        gemini.validate({"contents": [[]]})


# -- requests out ----------------------------------------------------------------


def test_a_canonical_request_as_gemini_json_the_sdk_accepts():
    req = C.Request(
        model="gpt-4o",
        system="Be brief.",
        messages=(
            C.Message("user", (C.Text("weather?"), C.Image(url="data:image/png;base64,iVBO"),
                               C.Image(url="https://example.com/a/photo.JPG?x=1"), C.Image(url="https://e.com/blob"),
                               C.Image(url="data:text/plain,hi%20there"))),
            C.Message("assistant", (C.Text("checking"), C.ToolCall("t1", "get_weather", '{"city": "Oslo"}'),
                                    C.ToolCall("t2", "get_time", "not json"))),
            C.Message("user", (C.ToolResult("t1", "rain"), C.ToolResult("t2", "boom", is_error=True),
                               C.ToolResult("t9", "orphan"))),
        ),
        tools=(C.Tool("get_weather", "Weather", {"type": "object", "$schema": "x", "additionalProperties": False}),
               C.Tool("get_time")),
        tool_choice="required", max_tokens=100, temperature=0.2, top_p=0.5, stop=("END",),
        reasoning=Reasoning(budget=2000), stream=True,
    )
    body = gemini.request_from_canonical(req, "gemini-2.5-pro")
    assert "model" not in body and "stream" not in body
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    user, model, results = body["contents"]
    assert user["role"] == "user" and model["role"] == "model" and results["role"] == "user"
    assert user["parts"][1:] == [
        {"inlineData": {"mimeType": "image/png", "data": "iVBO"}},
        {"fileData": {"fileUri": "https://example.com/a/photo.JPG?x=1", "mimeType": "image/jpeg"}},
        {"fileData": {"fileUri": "https://e.com/blob", "mimeType": "application/octet-stream"}},
        {"inlineData": {"mimeType": "text/plain", "data": "aGkgdGhlcmU="}},
    ]
    assert model["parts"] == [{"text": "checking"},
                              {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}, "id": "t1"}},
                              {"functionCall": {"name": "get_time", "args": {}, "id": "t2"}}]
    assert results["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"output": "rain"}, "id": "t1"}},
        {"functionResponse": {"name": "get_time", "response": {"error": "boom"}, "id": "t2"}},
        {"functionResponse": {"name": "t9", "response": {"output": "orphan"}, "id": "t9"}},
    ]
    assert body["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather",
         "parametersJsonSchema": {"type": "object", "$schema": "x", "additionalProperties": False}},
        {"name": "get_time"}]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert body["generationConfig"] == {"maxOutputTokens": 100, "temperature": 0.2, "topP": 0.5,
                                        "stopSequences": ["END"],
                                        "thinkingConfig": {"thinkingBudget": 2000, "includeThoughts": True}}
    # every piece uses the field names of the API (the SDK's models forbid unknown fields)
    for content in body["contents"]:
        types.Content.model_validate(content)
    types.Content.model_validate(body["systemInstruction"])
    types.Tool.model_validate(body["tools"][0])
    types.ToolConfig.model_validate(body["toolConfig"])
    types.GenerationConfig.model_validate(body["generationConfig"])


@pytest.mark.parametrize("choice, config", [
    ("auto", {"mode": "AUTO"}), ("none", {"mode": "NONE"}), ("required", {"mode": "ANY"}),
    ("get_weather", {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
])
def test_tool_choice(choice, config):
    req = C.Request("m", (C.Message("user", (C.Text("hi"),)),), tools=(C.Tool("get_weather"),), tool_choice=choice)
    body = gemini.request_from_canonical(req, "gemini-2.5-flash")
    assert body["toolConfig"] == {"functionCallingConfig": config}
    assert gemini.request_to_canonical(body).tool_choice == choice


@pytest.mark.parametrize("reasoning, model, thinking", [
    (Reasoning(level="none"), "gemini-3-pro-preview", {"thinkingBudget": 0}),
    (Reasoning(budget=0), "gemini-2.5-flash", {"thinkingBudget": 0}),
    (Reasoning(level="high"), "gemini-3-pro-preview", {"thinkingLevel": "HIGH", "includeThoughts": True}),
    (Reasoning(level="max"), "gemini-3-flash", {"thinkingLevel": "HIGH", "includeThoughts": True}),
    (Reasoning(level="low"), "gemini-2.5-flash", {"thinkingBudget": 1024, "includeThoughts": True}),
    (Reasoning(level="auto"), "gemini-3-pro-preview", {"thinkingBudget": -1, "includeThoughts": True}),
    (Reasoning(budget=-1), "gemini-2.5-pro", {"thinkingBudget": -1, "includeThoughts": True}),
    (Reasoning(budget=5000), "gemini-3-pro-preview", {"thinkingBudget": 5000, "includeThoughts": True}),
    (Reasoning(level="bogus"), "gemini-3-pro-preview", None),
])
def test_reasoning_as_thinking_config(reasoning, model, thinking):
    req = C.Request("m", (C.Message("user", (C.Text("hi"),)),), reasoning=reasoning)
    body = gemini.request_from_canonical(req, model)
    assert body.get("generationConfig", {}).get("thinkingConfig") == thinking


def test_thought_signatures_go_back_on_their_parts():
    thought = C.Message("assistant", (C.Thinking("plan", "c2ln"), C.Thinking("", "Y2FsbA=="),
                                      C.ToolCall("c1", "f", "{}"), C.ToolCall("c2", "f", "{}")))
    bare = C.Message("assistant", (C.ToolCall("c3", "g", "{}"), C.ToolCall("c4", "g", "{}")))
    lone = C.Message("assistant", (C.Text("done"), C.Thinking("", "ZW5k")))
    req = C.Request("m", (C.Message("user", (C.Text("go"),)), thought, bare, lone))
    parts = [c["parts"] for c in gemini.request_from_canonical(req, "gemini-3-pro-preview")["contents"]]
    assert parts[1][0] == {"text": "plan", "thought": True, "thoughtSignature": "c2ln"}
    assert parts[1][1]["thoughtSignature"] == "Y2FsbA==" and "thoughtSignature" not in parts[1][2]
    # Gemini 3 refuses a replayed call without a signature: the first call of the turn gets the placeholder
    assert parts[2][0]["thoughtSignature"] == gemini.SKIP_SIGNATURE and "thoughtSignature" not in parts[2][1]
    assert parts[3] == [{"text": "done"}, {"text": "", "thought": True, "thoughtSignature": "ZW5k"}]
    # ... which Gemini 2.x does not check, and which never comes back as a canonical signature
    legacy = gemini.request_from_canonical(req, "gemini-2.5-flash")["contents"][2]["parts"]
    assert all("thoughtSignature" not in p for p in legacy)
    back = gemini.request_to_canonical(gemini.request_from_canonical(req, "gemini-3-pro-preview"))
    assert back.messages[1:] == (thought, bare, lone)


def test_set_model_and_apply_reasoning_leave_the_original_alone():
    config = {"temperature": 0.3, "thinkingConfig": {"thinkingBudget": 100, "includeThoughts": False}}
    original = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": config}
    data = dict(gemini.set_model(original, "gemini-3-pro-preview"))
    assert data == original
    gemini.apply_reasoning(data, Reasoning(level="high"))
    assert data["generationConfig"] == {"temperature": 0.3,
                                        "thinkingConfig": {"thinkingLevel": "HIGH", "includeThoughts": False}}
    assert original["generationConfig"] is config
    assert config == {"temperature": 0.3, "thinkingConfig": {"thinkingBudget": 100, "includeThoughts": False}}
    snake = {"contents": [], "generation_config": {"top_p": 0.1, "thinking_config": {"thinking_level": "LOW"}}}
    gemini.apply_reasoning(snake, Reasoning(budget=0))
    assert snake == {"contents": [], "generationConfig": {"top_p": 0.1, "thinkingConfig": {"thinkingBudget": 0}}}


# -- answers ---------------------------------------------------------------------

ANSWER = {
    "candidates": [{
        "content": {"role": "model", "parts": [
            {"text": "**Checking the weather**", "thought": True},
            {"text": "Let me look that up."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": "CiQB0e2Kb3=="},
        ]},
        "finishReason": "STOP",
        "index": 0,
    }],
    "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 30, "totalTokenCount": 190,
                      "cachedContentTokenCount": 64, "thoughtsTokenCount": 40,
                      "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 120}]},
    "modelVersion": "gemini-2.5-flash",
    "responseId": "pYJ2aOaTGNyS1MkP1MW_qAs",
}


def test_a_realistic_answer_reads_exactly():
    resp = gemini.response_to_canonical(ANSWER)
    (call,) = [p for p in resp.parts if isinstance(p, C.ToolCall)]
    assert call.id.startswith("call_") and len(call.id) > 10
    assert resp == C.Response(
        id="pYJ2aOaTGNyS1MkP1MW_qAs",
        model="gemini-2.5-flash",
        parts=(C.Thinking("**Checking the weather**"), C.Text("Let me look that up."), C.Thinking("", "CiQB0e2Kb3=="),
               C.ToolCall(call.id, "get_weather", '{"city":"Oslo"}')),
        stop_reason=C.TOOL_CALLS,
        usage=C.Usage(input_tokens=120, output_tokens=70, cached_tokens=64, reasoning_tokens=40),
    )


@pytest.mark.parametrize("finish, stop", [
    ("STOP", C.STOP), ("MAX_TOKENS", C.LENGTH), ("SAFETY", C.CONTENT_FILTER), ("RECITATION", C.CONTENT_FILTER),
    ("BLOCKLIST", C.CONTENT_FILTER), ("PROHIBITED_CONTENT", C.CONTENT_FILTER), ("SPII", C.CONTENT_FILTER),
    ("MALFORMED_FUNCTION_CALL", C.STOP), ("OTHER", C.STOP),
])
def test_finish_reasons(finish, stop):
    data = {"candidates": [{"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": finish}]}
    assert gemini.response_to_canonical(data).stop_reason == stop


def test_a_blocked_prompt_is_a_content_filter_stop():
    data = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 8}}
    resp = gemini.response_to_canonical(data)
    assert (resp.parts, resp.stop_reason, resp.usage.input_tokens) == ((), C.CONTENT_FILTER, 8)
    assert decode([data])[1:] == [C.Finish(C.CONTENT_FILTER), C.UsageEvent(C.Usage(input_tokens=8))]


def test_a_malformed_upstream_answer_is_a_value_error_not_a_bad_request():
    with pytest.raises(ValueError, match="malformed") as e:
        gemini.response_to_canonical({"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]})
    assert not isinstance(e.value, C.BadRequest)


def sdk_answer(body: dict) -> types.GenerateContentResponse:
    return sdk_client(lambda request: httpx.Response(200, json=body)).models.generate_content(
        model="gemini-2.5-flash", contents="hi",
        config=types.GenerateContentConfig(automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True)))


def test_a_canonical_answer_as_the_sdk_reads_it():
    resp = C.Response("resp-1", "ignored", (C.Thinking("hmm", "c2ln"), C.Text("Hello "), C.Text("world"),
                                            C.ToolCall("c1", "get_weather", '{"city":"Oslo"}'),
                                            C.ToolCall("c2", "f", "{oops")),
                      C.TOOL_CALLS, C.Usage(10, 25, 4, 5))
    body = gemini.response_from_canonical(resp, "gemini-2.5-pro")
    types.GenerateContentResponse.model_validate(body)
    answer = sdk_answer(body)
    assert answer.text == "Hello world"
    assert [(c.id, c.name, c.args) for c in answer.function_calls] == [("c1", "get_weather", {"city": "Oslo"}),
                                                                        ("c2", "f", {})]
    assert answer.candidates[0].content.parts[0].thought is True
    assert answer.candidates[0].finish_reason == types.FinishReason.STOP
    assert answer.response_id == "resp-1" and answer.model_version == "gemini-2.5-pro"
    usage = answer.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.thoughts_token_count,
            usage.cached_content_token_count, usage.total_token_count) == (10, 20, 5, 4, 35)


# -- streams ---------------------------------------------------------------------

STREAM = [
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Planning a lookup", "thought": True}]},
                     "index": 0}],
     "usageMetadata": {"promptTokenCount": 50, "totalTokenCount": 50, "thoughtsTokenCount": 12},
     "modelVersion": "gemini-2.5-flash", "responseId": "r-77"},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Looking up\u2028Oslo"}]}, "index": 0}],
     "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 3, "totalTokenCount": 65,
                       "thoughtsTokenCount": 12},
     "modelVersion": "gemini-2.5-flash", "responseId": "r-77"},
    {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": "c2ln"},
        {"functionCall": {"id": "given-id", "name": "get_time", "args": {}}}]}, "index": 0}],
     "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 20, "totalTokenCount": 82,
                       "thoughtsTokenCount": 12},
     "modelVersion": "gemini-2.5-flash", "responseId": "r-77"},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP", "index": 0}],
     "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 22, "totalTokenCount": 84,
                       "cachedContentTokenCount": 32, "thoughtsTokenCount": 12},
     "modelVersion": "gemini-2.5-flash", "responseId": "r-77"},
]


def test_a_realistic_stream_decodes_exactly():
    events = decode(STREAM)
    generated = events[3].id
    assert generated.startswith("call_")
    assert events == [
        C.Start("r-77", "gemini-2.5-flash"),
        C.ThinkingDelta("Planning a lookup"),
        C.TextDelta("Looking up\u2028Oslo"),
        C.ToolCallStart(0, generated, "get_weather"),
        C.ToolCallDelta(0, '{"city":"Oslo"}'),
        C.ToolCallStart(1, "given-id", "get_time"),
        C.ToolCallDelta(1, "{}"),
        C.Finish(C.TOOL_CALLS),
        C.UsageEvent(C.Usage(input_tokens=50, output_tokens=34, cached_tokens=32, reasoning_tokens=12)),
    ]


def test_usage_after_the_finish_still_comes_out_once():
    finish = {"candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "MAX_TOKENS"}]}
    usage = {"usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2}}
    events = decode([finish, usage, usage])
    assert events[1:] == [C.TextDelta("hi"), C.Finish(C.LENGTH), C.UsageEvent(C.Usage(3, 2))]


def test_an_error_payload_is_an_error_event():
    error = {"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}}
    assert gemini.StreamDecoder().feed(error) == [
        C.ErrorEvent("Resource has been exhausted", "RESOURCE_EXHAUSTED", 429)]


EVENTS = [
    C.Start("r-1", "gpt-4o"),
    C.ThinkingDelta("thinking\u2028more"),
    C.TextDelta("Hello\u0085 "),
    C.TextDelta("world"),
    C.ToolCallStart(0, "c1", "get_weather"),
    C.ToolCallDelta(0, '{"city":'),
    C.ToolCallDelta(0, '"Oslo"}'),
    C.Finish(C.TOOL_CALLS),
    C.UsageEvent(C.Usage(11, 7, 0, 2)),
]


def test_an_encoded_stream_as_the_sdk_reads_it():
    raw = encode(EVENTS)
    assert raw.isascii()  # U+2028 and U+0085 are escaped: no client can split a data line at them
    assert all(frame.startswith(b"data: {") for frame in raw.split(b"\r\n\r\n")[:-1])
    chunks = [types.GenerateContentResponse.model_validate(p) for p in payloads(raw)]
    assert chunks[-1].usage_metadata.total_token_count == 18
    urls = []

    def handler(request):
        urls.append(str(request.url))
        return httpx.Response(200, content=raw, headers={"content-type": "text/event-stream"})

    stream = list(sdk_client(handler).models.generate_content_stream(
        model="gemini-2.5-flash", contents="hi",
        config=types.GenerateContentConfig(automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))))
    assert urls[0].endswith(":streamGenerateContent?alt=sse")
    assert "".join(c.text or "" for c in stream) == "Hello\u0085 world"
    calls = [call for c in stream for call in c.function_calls or ()]
    assert [(c.id, c.name, c.args) for c in calls] == [("c1", "get_weather", {"city": "Oslo"})]
    assert stream[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert stream[-1].usage_metadata.prompt_token_count == 11
    assert stream[-1].usage_metadata.candidates_token_count == 5
    assert stream[-1].usage_metadata.thoughts_token_count == 2
    assert stream[0].response_id == "r-1" and stream[0].model_version == "gemini-2.5-flash"


def test_the_json_array_stream():
    raw = encode(EVENTS, sse=False)
    assert raw.startswith(b"[{") and raw.endswith(b"}]") and b",\r\n{" in raw
    chunks = payloads(raw, sse=False)
    for chunk in chunks:
        types.GenerateContentResponse.model_validate(chunk)
    assert "usageMetadata" in chunks[-1] and chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert encode([], sse=False).startswith(b"[{")  # a clean end always says how it finished


@pytest.mark.parametrize("sse", [True, False])
def test_an_error_ends_the_stream(sse):
    enc = gemini.StreamEncoder("m", sse=sse)
    out = enc.feed(C.TextDelta("partial")) + enc.feed(C.ErrorEvent("quota", "RESOURCE_EXHAUSTED"))
    assert enc.close() == b"" and enc.feed(C.TextDelta("late")) == b""
    chunks = payloads(out, sse)
    assert chunks[-1] == {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}
    assert decode(chunks)[-1] == C.ErrorEvent("quota", "RESOURCE_EXHAUSTED", 429)
    other = gemini.StreamEncoder("m", sse=sse).feed(C.ErrorEvent("upstream went away"))
    assert payloads(other, sse)[0]["error"] == {"code": 500, "message": "upstream went away", "status": "INTERNAL"}


# -- errors, counts, models ------------------------------------------------------


@pytest.mark.parametrize("status, name", [
    (400, "INVALID_ARGUMENT"), (401, "UNAUTHENTICATED"), (403, "PERMISSION_DENIED"), (404, "NOT_FOUND"),
    (413, "INVALID_ARGUMENT"), (429, "RESOURCE_EXHAUSTED"), (500, "INTERNAL"), (501, "UNIMPLEMENTED"),
    (502, "UNAVAILABLE"), (503, "UNAVAILABLE"), (504, "DEADLINE_EXCEEDED"), (418, "INVALID_ARGUMENT"),
    (599, "INTERNAL"),
])
def test_error_bodies(status, name):
    assert json.loads(gemini.error_body(status, "nope")) == {"error": {"code": status, "message": "nope",
                                                                      "status": name}}


def test_error_body_extra_and_the_sdk_error():
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
    body = gemini.error_body(429, "slow down", {"details": details})
    assert json.loads(body)["error"] == {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED",
                                         "details": details}
    client = sdk_client(lambda request: httpx.Response(429, content=body,
                                                       headers={"content-type": "application/json"}))
    with pytest.raises(genai.errors.ClientError) as e:
        client.models.generate_content(model="gemini-2.5-flash", contents="hi",
                                       config=types.GenerateContentConfig(
                                           http_options=types.HttpOptions(retry_options=types.HttpRetryOptions(
                                               attempts=1))))
    assert (e.value.code, e.value.status, e.value.message) == (429, "RESOURCE_EXHAUSTED", "slow down")


def test_counts():
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "systemInstruction": {"parts": [{"text": "s"}]}}
    assert gemini.count_request(body, "gemini-2.5-flash") == {
        "generateContentRequest": {"model": "models/gemini-2.5-flash", **body}}
    assert gemini.count_body(42) == {"totalTokens": 42}
    assert gemini.count_from_body({"totalTokens": 42, "cachedContentTokenCount": 3}) == 42
    with pytest.raises(ValueError):
        gemini.count_from_body({"error": {}})
    count = sdk_client(lambda request: httpx.Response(200, json=gemini.count_body(42))).models.count_tokens(
        model="gemini-2.5-flash", contents="hi")
    assert count.total_tokens == 42


def test_models_as_the_sdk_lists_them():
    def handler(request):
        if request.url.path.endswith("/models"):
            return httpx.Response(200, content=gemini.models_body([("gemini-2.5-flash", "google"),
                                                                   ("gpt-4o", "openai")]))
        return httpx.Response(200, content=gemini.model_body(request.url.path.rsplit("/", 1)[1]))

    client = sdk_client(handler)
    listed = list(client.models.list())
    assert [(m.name, m.display_name) for m in listed] == [("models/gemini-2.5-flash", "gemini-2.5-flash"),
                                                          ("models/gpt-4o", "gpt-4o")]
    assert listed[0].supported_actions == ["generateContent", "streamGenerateContent", "countTokens"]
    assert client.models.get(model="gpt-4o").name == "models/gpt-4o"


# -- properties ------------------------------------------------------------------

text = st.text(min_size=1, max_size=10)
name = st.text("abcdefgh_0123", max_size=6).map(lambda s: "fn_" + s)  # never "auto", "none" or "required"
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(text, inner, max_size=2), max_leaves=4)
json_object = st.dictionaries(text, json_value, max_size=3)
call_id = st.text("abcdefXYZ0123", min_size=1, max_size=8).map(lambda s: "call_" + s)
signature = st.sampled_from(["", "c2ln", "Q2lRQjBlMktiMw=="])
image = (st.builds(lambda d, t: C.Image(data=base64.b64encode(d).decode(), media_type=t), st.binary(min_size=1, max_size=9),
                   st.sampled_from(["image/png", "image/jpeg", "application/pdf"]))
         | st.builds(lambda p: C.Image(url=f"https://example.com/{p}.png"), name))
reasoning = st.none() | st.builds(Reasoning, level=st.sampled_from(
    ["none", "auto", "minimal", "low", "medium", "high", "xhigh", "max"])) | st.builds(
    Reasoning, budget=st.integers(-1, 60000))


def tool_call(draw_id, name_, args):
    return C.ToolCall(draw_id, name_, json.dumps(args))


@st.composite
def requests(draw):
    messages = []
    for _ in range(draw(st.integers(1, 3))):
        calls = draw(st.lists(st.builds(tool_call, call_id, name, json_object), max_size=2, unique_by=lambda c: c.id))
        said = draw(st.lists(st.builds(C.Text, text) | st.builds(C.Thinking, text, signature), max_size=2))
        asked = draw(st.lists(st.builds(C.Text, text) | image, min_size=1, max_size=3))
        messages.append(C.Message("user", tuple(asked)))
        if said or calls:
            messages.append(C.Message("assistant", tuple(said + calls)))
        if calls:
            messages.append(C.Message("user", tuple(
                C.ToolResult(c.id, draw(st.text(max_size=12)), draw(st.booleans())) for c in calls)))
    tools = draw(st.lists(st.builds(C.Tool, name, st.text(max_size=10), json_object), max_size=2,
                          unique_by=lambda t: t.name))
    return C.Request(
        model="", messages=tuple(messages), system=draw(st.text(max_size=12)), tools=tuple(tools),
        tool_choice=draw(st.sampled_from([None, "auto", "none", "required"] + [t.name for t in tools])),
        max_tokens=draw(st.none() | st.integers(1, 100000)),
        temperature=draw(st.none() | st.floats(0, 2)), top_p=draw(st.none() | st.floats(0, 1)),
        stop=tuple(draw(st.lists(text, max_size=2))), reasoning=draw(reasoning),
    )


def gemini_reasoning(r: Reasoning | None, levels: bool) -> Reasoning | None:
    """What of C{r} Gemini can express: off as budget 0; a level for Gemini 3 (its top is HIGH), else a budget."""
    if r is None:
        return None
    if r.off:
        return Reasoning(budget=0)
    if levels and r.level is not None and not r.auto:
        return Reasoning(level={"xhigh": "high", "max": "high"}.get(r.level, r.level))
    return Reasoning(budget=r.tokens())


def comparable(parts):
    return [(type(p).__name__, json.loads(p.arguments)) if isinstance(p, C.ToolCall) else p for p in parts]


@settings(max_examples=100, deadline=None)
@given(requests(), st.sampled_from(["gemini-2.5-flash", "gemini-3-pro-preview"]))
def test_a_request_survives_the_round_trip(req, model):
    body = gemini.request_from_canonical(req, model)
    back = gemini.request_to_canonical(json.loads(json.dumps(body)))
    assert [m.role for m in back.messages] == [m.role for m in req.messages]
    for got, want in zip(back.messages, req.messages):
        assert comparable(got.parts) == comparable(want.parts)
        assert [(p.id, p.name) for p in got.parts if isinstance(p, C.ToolCall)] == \
               [(p.id, p.name) for p in want.parts if isinstance(p, C.ToolCall)]
    assert back.system == req.system
    assert [(t.name, t.description, t.parameters) for t in back.tools] == \
           [(t.name, t.description, t.parameters) for t in req.tools]
    assert back.tool_choice == req.tool_choice
    assert (back.max_tokens, back.temperature, back.top_p, back.stop) == \
           (req.max_tokens, req.temperature, req.top_p, req.stop)
    assert back.reasoning == gemini_reasoning(req.reasoning, levels=model.startswith("gemini-3"))


usages = st.builds(lambda i, o, c, r: C.Usage(i, o + r, c, r), *[st.integers(0, 10**6)] * 4)
answer_parts = st.lists(st.builds(C.Text, text) | st.builds(C.Thinking, text, signature)
                        | st.builds(tool_call, call_id, name, json_object), max_size=5)
stops = st.sampled_from([C.STOP, C.LENGTH, C.TOOL_CALLS, C.CONTENT_FILTER])


def expected_stop(stop: str, calls: bool) -> str:
    """Gemini says STOP for a turn that calls tools; calls are what make it TOOL_CALLS again."""
    if stop in (C.STOP, C.TOOL_CALLS):
        return C.TOOL_CALLS if calls else C.STOP
    return stop


@settings(max_examples=100, deadline=None)
@given(st.builds(C.Response, call_id, st.just("upstream"), answer_parts.map(tuple), stops, usages))
def test_an_answer_survives_the_round_trip(resp):
    body = gemini.response_from_canonical(resp, "gemini-2.5-flash")
    types.GenerateContentResponse.model_validate(body)
    back = gemini.response_to_canonical(json.loads(json.dumps(body)))
    assert (back.id, back.model, back.usage) == (resp.id, "gemini-2.5-flash", resp.usage)
    assert comparable(back.parts) == comparable(resp.parts)
    assert back.stop_reason == expected_stop(resp.stop_reason, any(isinstance(p, C.ToolCall) for p in resp.parts))


@st.composite
def streams(draw):
    events: list[C.Event] = [C.Start(draw(call_id), "upstream")] if draw(st.booleans()) else []
    calls = 0
    for kind in draw(st.lists(st.sampled_from(["text", "thinking", "call", "finish", "usage"]), max_size=10)):
        if kind == "text":
            events.append(C.TextDelta(draw(st.text(max_size=8))))
        elif kind == "thinking":
            events.append(C.ThinkingDelta(draw(st.text(max_size=8))))
        elif kind == "call":
            arguments = json.dumps(draw(json_object))
            cuts = sorted(draw(st.lists(st.integers(0, len(arguments)), max_size=3)))
            events.append(C.ToolCallStart(calls, draw(call_id), draw(name)))
            events.extend(C.ToolCallDelta(calls, arguments[a:b]) for a, b in zip([0] + cuts, cuts + [len(arguments)]))
            calls += 1
        elif kind == "finish":
            events.append(C.Finish(draw(stops)))
        else:
            events.append(C.UsageEvent(draw(usages)))
    return events


def joined(events, kind):
    return "".join(e.text for e in events if isinstance(e, kind))


def calls_of(events):
    starts = {e.index: (e.id, e.name) for e in events if isinstance(e, C.ToolCallStart)}
    args = {i: "".join(e.arguments for e in events if isinstance(e, C.ToolCallDelta) and e.index == i) for i in starts}
    return [(*starts[i], json.loads(args[i])) for i in sorted(starts)]


@settings(max_examples=100, deadline=None)
@given(streams(), st.booleans())
def test_a_stream_survives_the_round_trip(events, sse):
    raw = encode(events, sse)
    if sse:
        assert raw.isascii() and raw.endswith(b"\r\n\r\n")
    back = decode(payloads(raw, sse))
    assert joined(back, C.TextDelta) == joined(events, C.TextDelta)
    assert joined(back, C.ThinkingDelta) == joined(events, C.ThinkingDelta)
    assert calls_of(back) == calls_of(events)
    finishes = [e.stop_reason for e in events if isinstance(e, C.Finish)]
    assert [e for e in back if isinstance(e, C.Finish)] == [
        C.Finish(expected_stop(finishes[-1] if finishes else C.STOP, bool(calls_of(events))))]
    assert [e for e in back if isinstance(e, C.UsageEvent)] == [e for e in events if isinstance(e, C.UsageEvent)][-1:]
    starts = [e.id for e in events if isinstance(e, C.Start)]
    assert back[0] == C.Start(starts[0] if starts else "", "gemini-2.5-flash")
