"""
Whatever JSON a client sends, decoding it for translation either refuses it
(L{C.BadRequest}, naming the field) or gives bodies for every upstream
format that can be written: never another exception. Each rich body below
is tried with every value in it, in turn, replaced by each of L{OTHERS}, or
removed; and bodies nested beyond L{MAX_DEPTH} are refused, not recursed into.
"""

from __future__ import annotations

import copy
from typing import Any, Iterator

import pytest

from cliproxyd.formats import FORMATS
from cliproxyd.formats import canonical as C
from cliproxyd.formats.request import ClientRequest, dumps
from cliproxyd.jsontext import MAX_DEPTH
from tests.conftest import deep_schema, nest

#: A body of each format with every kind of part and field the canonical model carries.
SEEDS: dict[str, dict[str, Any]] = {
    "openai": {
        "model": "m", "stream": False, "max_tokens": 5, "temperature": 0.5, "top_p": 1, "stop": ["x"],
        "reasoning_effort": "low",
        "tools": [{"type": "function", "function": {
            "name": "f", "description": "d",
            "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "developer", "content": [{"type": "text", "text": "d"}]},
            {"role": "user", "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]},
            {"role": "assistant", "content": "c", "reasoning_content": "r", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": "b"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "out"},
            {"role": "user", "content": "more"},
        ],
    },
    "claude": {
        "model": "m", "max_tokens": 5, "stream": False, "temperature": 0.5, "top_p": 1, "stop_sequences": ["x"],
        "system": [{"type": "text", "text": "s"}],
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "tools": [{"name": "f", "description": "d",
                   "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}}}],
        "tool_choice": {"type": "tool", "name": "f"},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "hi"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "image", "source": {"type": "url", "url": "http://x"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "t", "signature": "s"},
                {"type": "text", "text": "c"},
                {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": "b"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": [{"type": "text", "text": "out"}],
                 "is_error": False}]},
        ],
    },
    "gemini": {
        "contents": [
            {"role": "user", "parts": [
                {"text": "hi"},
                {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                {"fileData": {"fileUri": "http://x", "mimeType": "image/png"}}]},
            {"role": "model", "parts": [
                {"text": "t", "thought": True, "thoughtSignature": "sig"},
                {"functionCall": {"name": "f", "args": {"a": "b"}}, "thoughtSignature": "s2"}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"output": "out"}}}]},
        ],
        "systemInstruction": {"parts": [{"text": "s"}]},
        "tools": [{"functionDeclarations": [{"name": "f", "description": "d", "parameters": {
            "type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "anyOf": [{"type": "STRING"}],
            "items": {"type": "STRING"}}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
        "generationConfig": {"maxOutputTokens": 5, "temperature": 0.5, "topP": 1, "stopSequences": ["x"],
                             "thinkingConfig": {"thinkingBudget": 100, "thinkingLevel": "low"}},
    },
    "responses": {
        "model": "m", "stream": False, "max_output_tokens": 5, "temperature": 0.5, "top_p": 1, "instructions": "s",
        "reasoning": {"effort": "low"},
        "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "f"},
        "input": [
            {"role": "user", "content": [
                {"type": "input_text", "text": "hi"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
            {"type": "message", "role": "developer", "content": "dev"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "t"}], "encrypted_content": "e"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a":1}'},
            {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "out"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "x"}]},
        ],
    },
}


#: What each value is replaced by: every JSON type, odd strings, JSON text, and more depth than allowed.
OTHERS = [None, True, 0, -1, 1.5, 10**30, "x", "", "data:", "data:x;base64", [], {}, ["x"], {"x": 1}, [{}], [None],
          {"type": "x"}, nest(MAX_DEPTH + 1), '{"a": [[[[', "[1]", "null", "\u202e", nest(40)]


def paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from paths(child, at + (key,))


def changed(body: dict[str, Any], at: tuple[Any, ...], value: Any, remove: bool = False) -> Any:
    if not at:
        return value
    body = copy.deepcopy(body)
    parent = body
    for key in at[:-1]:
        parent = parent[key]
    if remove:
        del parent[at[-1]]
    else:
        parent[at[-1]] = value
    return body


def variants(seed: dict[str, Any]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    for at in paths(seed):
        for value in OTHERS:
            yield at, changed(seed, at, value)
        if at:
            yield at, changed(seed, at, None, remove=True)


def translate(name: str, body: Any) -> None:
    """Decode C{body} as a client of format C{name} would send it, and encode it for every format."""
    fmt = FORMATS[name]
    model, stream = ("m", False) if name == "gemini" else (None, None)
    req = ClientRequest.decode(fmt, dumps(body), model, stream)
    assert isinstance(req.canonical, C.Request)  # the full decode, which a same-format target skips
    for target in FORMATS.values():
        req.body_for("up", target)
        if hasattr(target, "count_request"):
            req.count_body_for("up", target)


@pytest.mark.parametrize("name", list(SEEDS))
def test_every_seed_translates(name):
    translate(name, SEEDS[name])


@pytest.mark.parametrize("name", list(SEEDS))
def test_a_value_of_any_type_anywhere_is_refused_or_translated_never_a_crash(name):
    crashes = []
    for at, body in variants(SEEDS[name]):
        try:
            translate(name, body)
        except C.BadRequest:
            pass
        except Exception as e:  # noqa: BLE001 - what the test is looking for
            crashes.append((at, repr(e)[:200]))
    assert crashes == []


@pytest.mark.parametrize("name", list(SEEDS))
def test_a_body_nested_too_deeply_is_refused_where_it_goes_too_deep(name):
    body = {**SEEDS[name], "x_extension": {"a": nest(MAX_DEPTH - 2)}}
    translate(name, body)  # MAX_DEPTH levels: the body, x_extension, a and its arrays
    body["x_extension"]["a"] = nest(MAX_DEPTH - 1)
    with pytest.raises(C.BadRequest, match=r"^x_extension\.a(\[0\]){%d}: nested more than %d levels deep$"
                       % (MAX_DEPTH - 2, MAX_DEPTH)):
        FORMATS[name].request_to_canonical(body)


def test_a_gemini_tool_schema_480_deep_is_refused_not_recursed_into():
    body = {"contents": [{"parts": [{"text": "x"}]}],
            "tools": [{"functionDeclarations": [{"name": "f", "parameters": deep_schema(480)}]}]}
    with pytest.raises(C.BadRequest, match=r"^tools\[0\]\.functionDeclarations\[0\]\.parameters\.properties\.a"):
        FORMATS["gemini"].request_to_canonical(body)


@pytest.mark.parametrize("name, change, field", [
    ("openai", {"messages": ["hi"]}, "messages[0]"), ("openai", {"max_tokens": "5"}, "max_tokens"),
    ("openai", {"max_completion_tokens": 0}, "max_completion_tokens"), ("openai", {"temperature": "hot"}, "temperature"),
    ("openai", {"tools": {}}, "tools"), ("openai", {"tool_choice": 1}, "tool_choice"),
    ("claude", {"messages": [5]}, "messages[0]"), ("claude", {"max_tokens": 1.5}, "max_tokens"),
    ("claude", {"top_p": True}, "top_p"), ("claude", {"system": 5}, "system"), ("claude", {"tools": "f"}, "tools"),
    ("claude", {"tool_choice": "auto"}, "tool_choice"),
    ("gemini", {"contents": [[]]}, "contents[0]"), ("gemini", {"generationConfig": {"maxOutputTokens": "5"}},
                                                   "generationConfig.maxOutputTokens"),
    ("gemini", {"generationConfig": {"temperature": "hot"}}, "generationConfig.temperature"),
    ("gemini", {"tools": {}}, "tools"), ("gemini", {"toolConfig": []}, "toolConfig"),
    ("gemini", {"systemInstruction": 5}, "systemInstruction"),
    ("responses", {"input": [5]}, "input[0]"), ("responses", {"max_output_tokens": -1}, "max_output_tokens"),
    ("responses", {"instructions": 5}, "instructions"), ("responses", {"tools": {}}, "tools"),
    ("responses", {"tool_choice": 1}, "tool_choice"), ("responses", {"reasoning": "high"}, "reasoning"),
])
def test_validate_checks_the_types_of_the_top_level_fields(name, change, field):
    """What the passthrough path checks: the top level, each turn an object; no walk of the body."""
    with pytest.raises(C.BadRequest) as e:
        FORMATS[name].validate({**SEEDS[name], **change})
    assert str(e.value).startswith(field) or f"'{field}'" in str(e.value)


@pytest.mark.parametrize("name", list(SEEDS))
def test_validate_leaves_what_is_inside_the_turns_to_the_upstream(name):
    turns = {"openai": "messages", "claude": "messages", "gemini": "contents", "responses": "input"}[name]
    body = {**SEEDS[name], turns: [{"role": "wizard", "content": 5, "parts": 5}], "x_extension": nest(500)}
    FORMATS[name].validate(body)
    with pytest.raises(C.BadRequest):
        FORMATS[name].request_to_canonical(body)
