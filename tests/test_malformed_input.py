"""
Malformed client input, case by case, on every client route, on both paths:
passed through (the upstream speaks the client's format) and translated (it
speaks another). Each case is a 400 (or a 413, or a 404) in the client's own
error shape, naming what is wrong; no upstream is asked; nothing is logged
at error level or with a traceback.

What a body is refused for depends on the path, by design: every body is
read strictly and its top-level fields checked (the cases marked C{BOTH});
what is inside messages, contents and items is checked when the body is
translated (C{TRANSLATED}), and passed through to a same-format upstream,
which judges it (see the tests at the end).
"""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from attrs import frozen
from twisted.logger import LogLevel, capturedLogs

from cliproxyd import jsontext
from cliproxyd.formats import claude
from cliproxyd.formats.request import ClientRequest
from cliproxyd.jsontext import MAX_DEPTH, dumps
from tests.conftest import deep_schema, nest
from tests.test_formats_frontend import matrix

JSON = {"content-type": "application/json"}

#: route -> (client format, path; {model} is the model)
ROUTES = {
    "chat": ("openai", "/v1/chat/completions"),
    "responses": ("responses", "/v1/responses"),
    "messages": ("claude", "/v1/messages"),
    "count_tokens": ("claude", "/v1/messages/count_tokens"),
    "generateContent": ("gemini", "/v1beta/models/{model}:generateContent"),
    "streamGenerateContent": ("gemini", "/v1beta/models/{model}:streamGenerateContent?alt=sse"),
    "countTokens": ("gemini", "/v1beta/models/{model}:countTokens"),
}

#: client format -> the model each path asks for (the matrix's aliases)
PASSTHROUGH = {"openai": "via-openai", "responses": "via-codex", "claude": "via-claude", "gemini": "via-gemini"}
TRANSLATED = {"openai": "via-claude", "responses": "via-gemini", "claude": "via-gemini", "gemini": "via-claude"}

#: The limit the harness runs with (max-body-mb: 0.25).
MAX_BODY = 1 << 18

#: The field that holds the conversation, by format.
TURNS = {"openai": "messages", "claude": "messages", "gemini": "contents", "responses": "input"}


def good(fmt: str, model: str) -> dict[str, Any]:
    """A body each format's upstream would answer."""
    return {
        "openai": {"model": model, "messages": [{"role": "user", "content": "hi"}]},
        "responses": {"model": model, "input": [{"role": "user", "content": "hi"}]},
        "claude": {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]},
        "gemini": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    }[fmt]


@frozen
class Probe:
    """One request: its body, the words its error must have, its headers."""

    body: bytes
    names: str
    headers: dict[str, str] = JSON


Make = Callable[[str, str], "Probe | None"]


def raw(body: bytes, names: str, headers: dict[str, str] = JSON) -> Make:
    """The same bytes for every format."""
    return lambda fmt, model: Probe(body, names, headers)


def changed(names: str | dict[str, str], **by_format: Callable[[dict[str, Any]], Any]) -> Make:
    """
    The good body, changed for a format by C{by_format[fmt](body)} (which
    changes it in place, or returns the body to send); formats not given
    are not asked. C{names} may differ by format.
    """

    def make(fmt: str, model: str) -> Probe | None:
        change = by_format.get(fmt)
        if change is None:
            return None
        body = good(fmt, model)
        body = change(body) or body
        text = names[fmt] if isinstance(names, dict) else names
        return Probe(body if isinstance(body, bytes) else dumps(body), text)

    return make


def user(fmt: str, content: Any) -> Callable[[dict[str, Any]], None]:
    """A change: the first user turn's content (Gemini: its parts) set to C{content}."""
    key = "parts" if fmt == "gemini" else "content"
    return lambda body: body[TURNS[fmt]][0].__setitem__(key, content)


def turn(fmt: str, item: Any) -> Callable[[dict[str, Any]], None]:
    """A change: C{item} is the conversation's last turn (or item)."""
    return lambda body: body[TURNS[fmt]].append(item)


def each(names: str | dict[str, str], change: Callable[[str], Callable[[dict[str, Any]], Any]]) -> Make:
    """L{changed} with one change made for every format."""
    return changed(names, **{fmt: change(fmt) for fmt in TURNS})


def top(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda body: body.update(fields)


def gemini_config(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda body: body.update(generationConfig=fields)


def dropped(key: str) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        del body[key]

    return change


def text(model_body: str) -> Callable[[dict[str, Any]], bytes]:
    """A change: the body as this JSON text (C{%s} is the good body's conversation)."""
    return lambda body: (model_body % json.dumps(body.get("messages") or body.get("input"))).encode()


BOTH, TRANSLATED_ONLY = ("passthrough", "translated"), ("translated",)

CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def chat_call(**function: Any) -> dict[str, Any]:
    return {"role": "assistant", "tool_calls": [{**CALL, "function": {**CALL["function"], **function}}]}


def tool_schemas(schema: Any) -> dict[str, Callable[[dict[str, Any]], None]]:
    """The changes, a format each, that give a body one tool whose parameters are C{schema}."""
    return {"openai": top(tools=[{"type": "function", "function": {"name": "f", "parameters": schema}}]),
            "claude": top(tools=[{"name": "f", "input_schema": schema}]),
            "gemini": top(tools=[{"functionDeclarations": [{"name": "f", "parameters": schema}]}]),
            "responses": top(tools=[{"type": "function", "name": "f", "parameters": schema}])}


def claude_blocks(*blocks: Any) -> Callable[[dict[str, Any]], None]:
    return lambda body: body["messages"].append({"role": "assistant", "content": list(blocks)})


@frozen
class Case:
    id: str
    make: Make
    paths: tuple[str, ...] = BOTH
    status: int = 400


DEEP = b"[" * 10_000 + b"]" * 10_000

CASES = [
    # -- not JSON, or not an object ----------------------------------------------------------
    Case("empty body", raw(b"", "not valid JSON")),
    Case("not JSON", raw(b"hello", "not valid JSON")),
    Case("truncated", raw(b'{"model": ', "not valid JSON")),
    Case("single quotes", raw(b"{'model': 'x'}", "not valid JSON")),
    Case("a comment", raw(b'// hi\n{"model": "x"}', "not valid JSON")),
    Case("trailing garbage", each("not valid JSON", lambda fmt: lambda body: json.dumps(body).encode() + b" x")),
    Case("two objects", each("not valid JSON", lambda fmt: lambda body: json.dumps(body).encode() * 2)),
    Case("an array", raw(b"[]", "must be a JSON object")),
    Case("a string", raw(b'"hi"', "must be a JSON object")),
    Case("a number", raw(b"42", "must be a JSON object")),
    Case("null", raw(b"null", "must be a JSON object")),
    Case("arrays 10,000 deep", raw(DEEP, "depth limit exceeded")),
    Case("a field 2,000 deep", each("depth limit exceeded", lambda fmt: lambda body: (
        json.dumps(body)[:-1] + ', "x_deep": ' + "[" * 2000 + "]" * 2000 + "}").encode())),
    # -- numbers JSON does not have ----------------------------------------------------------------
    Case("NaN", each("not valid JSON", lambda fmt: lambda body: json.dumps(body).replace('"hi"', "NaN").encode())),
    Case("Infinity", each("not valid JSON", lambda fmt: lambda body: json.dumps(
        {**body, "x_n": 1}).replace(": 1}", ": Infinity}").encode())),
    Case("-Infinity", each("not valid JSON", lambda fmt: lambda body: json.dumps(
        {**body, "x_n": 1}).replace(": 1}", ": -Infinity}").encode())),
    Case("a number beyond a double", each("not valid JSON", lambda fmt: lambda body: json.dumps(
        {**body, "x_n": 1}).replace(": 1}", ": 1e400}").encode())),
    # -- text that is not Unicode ------------------------------------------------------------------
    Case("a lone high surrogate", each("not valid JSON", lambda fmt: lambda body: json.dumps(body).replace(
        '"hi"', '"\\ud800"').encode())),
    Case("a lone low surrogate", each("not valid JSON", lambda fmt: lambda body: json.dumps(body).replace(
        '"hi"', '"a\\udc00b"').encode())),
    Case("surrogates in the wrong order", each("not valid JSON", lambda fmt: lambda body: json.dumps(
        body).replace('"hi"', '"\\ude00\\ud83d"').encode())),
    Case("a surrogate in a key", each("not valid JSON", lambda fmt: lambda body: json.dumps(
        {**body, "x": 1}).replace('"x"', '"\\ud800"').encode())),
    Case("a UTF-8 byte order mark", each("byte order mark", lambda fmt: lambda body: b"\xef\xbb\xbf" + json.dumps(
        body).encode())),
    Case("invalid UTF-8", each("not valid JSON", lambda fmt: lambda body: json.dumps(body).encode().replace(
        b'"hi"', b'"\xff\xfe"'))),
    Case("a surrogate encoded in UTF-8", each("not valid JSON", lambda fmt: lambda body: json.dumps(
        body).encode().replace(b'"hi"', b'"\xed\xa0\x80"'))),
    Case("overlong UTF-8", each("not valid JSON", lambda fmt: lambda body: json.dumps(body).encode().replace(
        b'"hi"', b'"\xc0\xaf"'))),
    Case("UTF-16", each("not valid JSON", lambda fmt: lambda body: json.dumps(body).encode("utf-16"))),
    Case("a raw control character in a string", each("not valid JSON", lambda fmt: lambda body: json.dumps(
        body).encode().replace(b'"hi"', b'"h\x01i"'))),
    # -- content types and sizes -----------------------------------------------------------------
    Case("a form", raw(b"model=x&messages=hi", "not valid JSON", {"content-type": "application/x-www-form-urlencoded"})),
    Case("multipart", raw(b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nx\r\n--b--\r\n',
                          "not valid JSON", {"content-type": "multipart/form-data; boundary=b"})),
    Case("plain text", raw(b"hello there", "not valid JSON", {"content-type": "text/plain"})),
    Case("over max-body-mb", each("larger than", lambda fmt: top(x_pad="x" * MAX_BODY)), status=413),
    # -- the model -----------------------------------------------------------------------------
    Case("no model", changed("model", openai=dropped("model"), claude=dropped("model"),
                             responses=dropped("model"))),
    Case("a model that is a number", changed("model", openai=top(model=5), claude=top(model=5),
                                             responses=top(model=5))),
    Case("an empty model", changed("model", openai=top(model=""), claude=top(model="  "),
                                   responses=top(model=""))),
    Case("duplicate model keys, the last empty", changed("model", **{
        fmt: lambda body: (json.dumps(body)[:-1] + ', "model": ""}').encode() for fmt in ("openai", "claude", "responses")
    })),
    # -- the conversation ---------------------------------------------------------------------------
    Case("no conversation", each(TURNS, lambda fmt: dropped(TURNS[fmt]))),
    Case("a conversation that is a number", each(TURNS, lambda fmt: top(**{TURNS[fmt]: 5}))),
    Case("an empty conversation", changed(TURNS, openai=top(messages=[]), claude=top(messages=[]),
                                          gemini=top(contents=[]))),
    Case("a turn that is not an object", each(TURNS, lambda fmt: top(**{TURNS[fmt]: ["hi"]}))),
    Case("duplicate conversation keys, the last wrong", each(TURNS, lambda fmt: lambda body: (
        json.dumps(body)[:-1] + f', "{TURNS[fmt]}": 7}}').encode())),
    # -- top-level fields of the wrong type ------------------------------------------------------
    Case("stream is a string", changed("stream", openai=top(stream="yes"), claude=top(stream="yes"),
                                       responses=top(stream=1))),
    Case("max tokens is a string", changed(
        {"openai": "max_tokens", "claude": "max_tokens", "responses": "max_output_tokens",
         "gemini": "maxOutputTokens"},
        openai=top(max_tokens="10"), claude=top(max_tokens="10"), responses=top(max_output_tokens="10"),
        gemini=gemini_config(maxOutputTokens="10"))),
    Case("max tokens is zero", changed(
        {"openai": "max_completion_tokens", "claude": "max_tokens", "responses": "max_output_tokens",
         "gemini": "maxOutputTokens"},
        openai=top(max_completion_tokens=0), claude=top(max_tokens=0), responses=top(max_output_tokens=0),
        gemini=gemini_config(maxOutputTokens=0)), paths=TRANSLATED_ONLY),
    Case("max tokens is negative", changed(
        {"openai": "max_tokens", "claude": "max_tokens", "responses": "max_output_tokens"},
        openai=top(max_tokens=-1), claude=top(max_tokens=-1), responses=top(max_output_tokens=-1))),
    Case("max tokens beyond 64 bits", changed(
        {"openai": "max_tokens", "claude": "max_tokens", "responses": "max_output_tokens",
         "gemini": "maxOutputTokens"},
        openai=top(max_tokens=10**20), claude=top(max_tokens=10**20), responses=top(max_output_tokens=10**20),
        gemini=gemini_config(maxOutputTokens=10**20))),
    Case("max tokens is a float", changed(
        {"openai": "max_tokens", "claude": "max_tokens", "responses": "max_output_tokens",
         "gemini": "maxOutputTokens"},
        openai=top(max_tokens=1e300), claude=top(max_tokens=2.5), responses=top(max_output_tokens=1.5),
        gemini=gemini_config(maxOutputTokens=1.5))),
    Case("temperature is a string", changed("temperature", openai=top(temperature="hot"),
                                            claude=top(temperature="hot"), responses=top(temperature="hot"),
                                            gemini=gemini_config(temperature="hot"))),
    Case("top_p is a boolean", changed({"openai": "top_p", "claude": "top_p", "responses": "top_p",
                                        "gemini": "topP"},
                                       openai=top(top_p=True), claude=top(top_p=True), responses=top(top_p=False),
                                       gemini=gemini_config(topP=True))),
    Case("tools is an object", changed("tools", openai=top(tools={}), claude=top(tools={}),
                                       responses=top(tools={}), gemini=top(tools={}))),
    Case("tool_choice is a number", changed({"openai": "tool_choice", "claude": "tool_choice",
                                             "responses": "tool_choice", "gemini": "toolConfig"},
                                            openai=top(tool_choice=1), claude=top(tool_choice="auto"),
                                            responses=top(tool_choice=1), gemini=top(toolConfig=1))),
    Case("system is a number", changed({"claude": "system", "responses": "instructions",
                                        "gemini": "systemInstruction"},
                                       claude=top(system=5), responses=top(instructions=5),
                                       gemini=top(systemInstruction=5))),
    Case("generation config is a list", changed("generationConfig", gemini=top(generationConfig=[]))),
    Case("reasoning is a string", changed("reasoning", responses=top(reasoning="high"))),
    # -- inside the conversation: checked when the body is translated ------------------------------------
    Case("an unknown role", changed({"openai": "role", "claude": "role", "gemini": "role", "responses": "role"},
                                    openai=top(messages=[{"role": "wizard", "content": "hi"}]),
                                    claude=top(messages=[{"role": "system", "content": "hi"}]),
                                    gemini=top(contents=[{"role": "wizard", "parts": [{"text": "hi"}]}]),
                                    responses=top(input=[{"role": "wizard", "content": "hi"}])),
         paths=TRANSLATED_ONLY),
    Case("an empty role", changed({"openai": "role", "claude": "role", "responses": "role"},
                                  openai=top(messages=[{"role": "", "content": "hi"}]),
                                  claude=top(messages=[{"role": "", "content": "hi"}]),
                                  responses=top(input=[{"role": "", "content": "hi"}])), paths=TRANSLATED_ONLY),
    Case("missing content", changed({"openai": "content", "claude": "content", "gemini": "parts",
                                     "responses": "content"},
                                    openai=top(messages=[{"role": "user"}]), claude=top(messages=[{"role": "user"}]),
                                    gemini=top(contents=[{"role": "user"}]),
                                    responses=top(input=[{"role": "user"}])), paths=TRANSLATED_ONLY),
    Case("content that is a number", changed({"openai": "content", "claude": "content", "gemini": "parts",
                                              "responses": "content"},
                                             openai=user("openai", 5), claude=user("claude", 5),
                                             gemini=user("gemini", 5), responses=user("responses", 5)),
         paths=TRANSLATED_ONLY),
    Case("a part that is not an object", changed("[0]", openai=user("openai", ["hi"]), claude=user("claude", ["hi"]),
                                                 gemini=user("gemini", ["hi"]), responses=user("responses", ["hi"])),
         paths=TRANSLATED_ONLY),
    Case("a text part whose text is a number", changed(
        ".text", openai=user("openai", [{"type": "text", "text": 5}]), claude=user("claude", [{"type": "text", "text": 5}]),
        gemini=user("gemini", [{"text": 5}]), responses=user("responses", [{"type": "input_text", "text": 5}])),
        paths=TRANSLATED_ONLY),
    Case("a text part with no text", changed(
        ".text", openai=user("openai", [{"type": "text"}]), claude=user("claude", [{"type": "text"}]),
        responses=user("responses", [{"type": "input_text"}])), paths=TRANSLATED_ONLY),
    Case("an image whose source is a string", changed(
        {"openai": "image_url.url", "claude": "source", "gemini": "inlineData", "responses": "image_url"},
        openai=user("openai", [{"type": "image_url", "image_url": "x"}]),
        claude=user("claude", [{"type": "image", "source": "x"}]),
        gemini=user("gemini", [{"inlineData": "x"}]),
        responses=user("responses", [{"type": "input_image", "image_url": 5}])), paths=TRANSLATED_ONLY),
    Case("an image of no known kind", changed(
        {"openai": "image_url.url", "claude": "source", "gemini": "fileUri", "responses": "image_url"},
        openai=user("openai", [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]),
        claude=user("claude", [{"type": "image", "source": {"type": "file", "file_id": "f"}}]),
        gemini=user("gemini", [{"fileData": {"fileUri": 5}}]),
        responses=user("responses", [{"type": "input_image", "image_url": "javascript:alert(1)"}])),
        paths=TRANSLATED_ONLY),
    Case("an image data: URL that is not base64", changed(
        {"openai": "image_url.url", "claude": "source.url", "responses": "image_url"},
        openai=user("openai", [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}]),
        claude=user("claude", [{"type": "image", "source": {"type": "url", "url": "data:image/png,raw"}}]),
        responses=user("responses", [{"type": "input_image", "image_url": "data:image/png,raw"}])),
        paths=TRANSLATED_ONLY),
    Case("an image with no data", changed(
        {"claude": "source.data", "gemini": "inlineData.data"},
        claude=user("claude", [{"type": "image", "source": {"type": "base64", "media_type": "image/png"}}]),
        gemini=user("gemini", [{"inlineData": {"mimeType": "image/png"}}])), paths=TRANSLATED_ONLY),
    Case("an image whose media type is a number", changed(
        {"claude": "source.media_type", "gemini": "inlineData.mimeType"},
        claude=user("claude", [{"type": "image", "source": {"type": "base64", "media_type": 5, "data": "AAAA"}}]),
        gemini=user("gemini", [{"inlineData": {"mimeType": 5, "data": "AAAA"}}])), paths=TRANSLATED_ONLY),
    Case("tool call arguments that are not a string", changed(
        {"openai": "function.arguments", "claude": "input", "gemini": "functionCall.args", "responses": "input[1]"},
        openai=turn("openai", chat_call(arguments={"city": "Oslo"})),
        claude=claude_blocks({"type": "tool_use", "id": "c1", "name": "f", "input": "city=Oslo"}),
        gemini=turn("gemini", {"role": "model", "parts": [{"functionCall": {"name": "f", "args": "city=Oslo"}}]}),
        responses=turn("responses", {"type": "function_call", "call_id": "c1", "name": "f", "arguments": {}})),
        paths=TRANSLATED_ONLY),
    Case("tool call arguments nested too deep", changed(
        {"openai": "function.arguments: nested more than", "claude": "nested more than",
         "gemini": "nested more than", "responses": "arguments: nested more than"},
        openai=turn("openai", chat_call(arguments=json.dumps({"a": nest(MAX_DEPTH)}))),
        claude=claude_blocks({"type": "tool_use", "id": "c1", "name": "f", "input": {"a": nest(MAX_DEPTH)}}),
        gemini=turn("gemini", {"role": "model", "parts": [{"functionCall": {"name": "f",
                                                                            "args": {"a": nest(MAX_DEPTH)}}}]}),
        responses=turn("responses", {"type": "function_call", "call_id": "c1", "name": "f",
                                     "arguments": json.dumps({"a": nest(MAX_DEPTH)})})),
        paths=TRANSLATED_ONLY),
    Case("a tool call with no name", changed(
        {"openai": "function.name", "claude": "name", "gemini": "functionCall.name", "responses": "input[1]"},
        openai=turn("openai", chat_call(name=None)),
        claude=claude_blocks({"type": "tool_use", "id": "c1", "input": {}}),
        gemini=turn("gemini", {"role": "model", "parts": [{"functionCall": {"args": {}}}]}),
        responses=turn("responses", {"type": "function_call", "call_id": "c1", "arguments": "{}"})),
        paths=TRANSLATED_ONLY),
    Case("a tool call with an empty name", changed(
        {"openai": "function.name", "claude": "name", "responses": "input[1]"},
        openai=turn("openai", chat_call(name="")),
        claude=claude_blocks({"type": "tool_use", "id": "c1", "name": "", "input": {}}),
        responses=turn("responses", {"type": "function_call", "call_id": "c1", "name": "", "arguments": "{}"})),
        paths=TRANSLATED_ONLY),
    Case("a tool call with a numeric id", changed(
        {"openai": "tool_calls[0].id", "claude": "id", "responses": "input[1]"},
        openai=turn("openai", {"role": "assistant", "tool_calls": [{**CALL, "id": 1}]}),
        claude=claude_blocks({"type": "tool_use", "id": 1, "name": "f", "input": {}}),
        responses=turn("responses", {"type": "function_call", "call_id": 1, "name": "f", "arguments": "{}"})),
        paths=TRANSLATED_ONLY),
    Case("a tool result for no call", changed(
        {"openai": "tool_call_id", "claude": "tool_use_id", "gemini": "functionResponse.name", "responses": "call_id"},
        openai=turn("openai", {"role": "tool", "content": "ok"}),
        claude=claude_blocks({"type": "tool_result", "content": "ok"}),
        gemini=turn("gemini", {"role": "user", "parts": [{"functionResponse": {"response": {}}}]}),
        responses=turn("responses", {"type": "function_call_output", "output": "ok"})), paths=TRANSLATED_ONLY),
    Case("a tool result whose content is a number", changed(
        {"openai": "content", "claude": "content", "gemini": "response", "responses": "output"},
        openai=turn("openai", {"role": "tool", "tool_call_id": "c1", "content": 5}),
        claude=claude_blocks({"type": "tool_result", "tool_use_id": "c1", "content": 5}),
        gemini=turn("gemini", {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": 5}}]}),
        responses=turn("responses", {"type": "function_call_output", "call_id": "c1", "output": 5})),
        paths=TRANSLATED_ONLY),
    Case("a tool result whose error flag is a string", changed(
        "is_error", claude=claude_blocks({"type": "tool_result", "tool_use_id": "c1", "is_error": "yes"})),
        paths=TRANSLATED_ONLY),
    Case("thinking that is a number", changed(
        {"claude": "thinking", "gemini": "text", "responses": "summary"},
        claude=claude_blocks({"type": "thinking", "thinking": 5, "signature": "s"}),
        gemini=turn("gemini", {"role": "model", "parts": [{"text": 5, "thought": True}]}),
        responses=turn("responses", {"type": "reasoning", "summary": True})), paths=TRANSLATED_ONLY),
    Case("a thought signature that is a number", changed(
        {"gemini": "thoughtSignature", "responses": "encrypted_content"},
        gemini=turn("gemini", {"role": "model", "parts": [{"text": "x", "thoughtSignature": 5}]}),
        responses=turn("responses", {"type": "reasoning", "summary": [], "encrypted_content": 5})),
        paths=TRANSLATED_ONLY),
    Case("system text that is a number", changed(
        {"openai": "content[0].text", "claude": "system[0].text", "responses": "content[0].text"},
        openai=lambda body: body["messages"].insert(0, {"role": "system", "content": [{"type": "text", "text": 5}]}),
        claude=top(system=[{"type": "text", "text": 5}]),
        responses=lambda body: body["input"].insert(0, {"role": "developer",
                                                        "content": [{"type": "input_text", "text": 5}]})),
        paths=TRANSLATED_ONLY),
    # -- tools ------------------------------------------------------------------------------------------
    Case("a tool with no name", changed(
        {"openai": "tools[0].function.name", "claude": "tools[0]", "gemini": "functionDeclarations[0].name",
         "responses": "tools[0].name"},
        openai=top(tools=[{"type": "function", "function": {"parameters": {}}}]),
        claude=top(tools=[{"input_schema": {}}]),
        gemini=top(tools=[{"functionDeclarations": [{"parameters": {}}]}]),
        responses=top(tools=[{"type": "function", "parameters": {}}])), paths=TRANSLATED_ONLY),
    Case("a tool with an empty name", changed(
        {"openai": "tools[0].function.name", "claude": "tools[0]", "gemini": "functionDeclarations[0].name",
         "responses": "tools[0].name"},
        openai=top(tools=[{"type": "function", "function": {"name": ""}}]),
        claude=top(tools=[{"name": ""}]),
        gemini=top(tools=[{"functionDeclarations": [{"name": ""}]}]),
        responses=top(tools=[{"type": "function", "name": ""}])), paths=TRANSLATED_ONLY),
    Case("a tool that is null", changed(
        {"openai": "tools[0]", "claude": "tools[0]", "responses": "tools[0]", "gemini": "functionDeclarations[0]"},
        openai=top(tools=[None]), claude=top(tools=[None]), responses=top(tools=[None]),
        gemini=top(tools=[{"functionDeclarations": [None]}])), paths=TRANSLATED_ONLY),
    Case("a tool schema that is a string", changed(
        {"openai": "parameters", "claude": "input_schema", "gemini": "parameters", "responses": "parameters"},
        **tool_schemas("x")), paths=TRANSLATED_ONLY),
    Case("a tool description that is a number", changed(
        {"openai": "description", "claude": "description", "responses": "description"},
        openai=top(tools=[{"type": "function", "function": {"name": "f", "description": 5}}]),
        claude=top(tools=[{"name": "f", "description": 5}]),
        responses=top(tools=[{"type": "function", "name": "f", "description": 5}])), paths=TRANSLATED_ONLY),
    Case("a tool schema 480 deep", changed("nested more than 64 levels deep", **tool_schemas(deep_schema(480))),
         paths=TRANSLATED_ONLY),
    Case("a tool schema just too deep", changed("tools[0]", **tool_schemas(deep_schema(MAX_DEPTH // 2))),
         paths=TRANSLATED_ONLY),
    Case("a body 65 levels deep in a field no format knows", each(
        "x_extension", lambda fmt: top(x_extension=nest(MAX_DEPTH))), paths=TRANSLATED_ONLY),
    Case("a tool_choice of no known kind", changed(
        "tool_choice", openai=top(tool_choice="always"), claude=top(tool_choice={"type": "sometimes"}),
        responses=top(tool_choice="sometimes")), paths=TRANSLATED_ONLY),
    Case("a tool_choice whose type is an array", changed(
        "tool_choice", claude=top(tool_choice={"type": ["tool"]}),
        openai=top(tool_choice={"type": "function", "function": {"name": 5}})), paths=TRANSLATED_ONLY),
    Case("a tool config that is not an object", changed(
        "functionCallingConfig", gemini=top(toolConfig={"functionCallingConfig": "ANY"})), paths=TRANSLATED_ONLY),
    Case("stop sequences that are not strings", changed(
        {"openai": "stop", "claude": "stop_sequences", "gemini": "stopSequences"},
        openai=top(stop=[1]), claude=top(stop_sequences="END"), gemini=gemini_config(stopSequences=[1])),
        paths=TRANSLATED_ONLY),
    Case("a reasoning level no format has", changed(
        {"openai": "reasoning_effort", "responses": "reasoning.effort", "gemini": "thinkingBudget"},
        openai=top(reasoning_effort="extreme"), responses=top(reasoning={"effort": 3}),
        gemini=gemini_config(thinkingConfig={"thinkingBudget": "lots"})), paths=TRANSLATED_ONLY),
]

NOT_FOUND = [
    Case("an unknown model", each("does not exist", lambda fmt: lambda body: body), status=404),
]


def items() -> list[Any]:
    out = []
    for case in CASES:
        for route, (fmt, _) in ROUTES.items():
            for path in case.paths:
                model = PASSTHROUGH[fmt] if path == "passthrough" else TRANSLATED[fmt]
                if case.make(fmt, model) is not None:
                    out.append(pytest.param(case, route, model, id=f"{case.id}-{route}-{path}"))
    return out


@pytest.fixture(scope="module")
def harness():
    return matrix(**{"max-body-mb": MAX_BODY / (1 << 20)})


def send(h: Any, route: str, model: str, probe: Probe) -> tuple[int, dict, bytes, list[dict]]:
    path = ROUTES[route][1].format(model=model)
    seen = len(h.upstream.seen)
    with capturedLogs() as events:
        code, headers, body = h.request("POST", path, probe.body, probe.headers)
    assert len(h.upstream.seen) == seen, "an upstream was asked"
    return code, headers, body, list(events)


def assert_client_error(fmt: str, status: int, body: bytes, names: str) -> None:
    """C{body} is format C{fmt}'s error for C{status}, its message having C{names}."""
    data = json.loads(body)
    err = data["error"]
    if fmt == "claude":
        assert data["type"] == "error" and set(data) == {"type", "error"}
        assert err["type"] == claude.error_type(status)
    elif fmt == "gemini":
        assert set(data) == {"error"}
        assert err["code"] == status
        assert err["status"] == ("NOT_FOUND" if status == 404 else "INVALID_ARGUMENT")
    else:
        assert set(data) == {"error"}
        assert err["type"] == "invalid_request_error" and "code" in err
        if fmt == "responses":
            assert "param" in err
    assert names in err["message"], err["message"]


def assert_quiet(events: list[dict]) -> None:
    """Nothing at error level or above, no traceback, and at most one line."""
    loud = [e for e in events if e["log_level"] >= LogLevel.error or "log_failure" in e]
    assert not loud, loud
    assert len([e for e in events if e["log_level"] >= LogLevel.info]) <= 1, events


@pytest.mark.parametrize("case, route, model", items())
def test_malformed_input_is_the_clients_own_error_and_goes_nowhere(harness, case, route, model):
    fmt = ROUTES[route][0]
    probe = case.make(fmt, model)
    code, headers, body, events = send(harness, route, model, probe)
    assert code == case.status, body
    assert headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert_client_error(fmt, code, body, probe.names)
    assert_quiet(events)


def test_the_table_is_large():
    """At least 60 kinds of malformed input, on every route, on both paths."""
    assert len(CASES) >= 60
    params = items()
    assert {p.values[1] for p in params} == set(ROUTES)
    assert {p.id.rsplit("-", 1)[1] for p in params} == {"passthrough", "translated"}


@pytest.mark.parametrize("route", [r for r in ROUTES if ROUTES[r][0] == "gemini"])
def test_an_empty_gemini_model_and_an_unknown_method_are_geminis_errors(harness, route):
    path = ROUTES[route][1]
    body = json.dumps(good("gemini", "")).encode()
    seen = len(harness.upstream.seen)
    code, _, raw_body = harness.request("POST", path.format(model=""), body, JSON)
    assert code == 400
    assert_client_error("gemini", 400, raw_body, "model")
    code, _, raw_body = harness.request("POST", "/v1beta/models/via-gemini:fooBar", body, JSON)
    assert code == 404
    assert_client_error("gemini", 404, raw_body, "fooBar")
    assert len(harness.upstream.seen) == seen


@pytest.mark.parametrize("route", list(ROUTES))
def test_an_unknown_model_is_a_404_in_the_clients_shape(harness, route):
    fmt = ROUTES[route][0]
    probe = NOT_FOUND[0].make(fmt, "no-such-model")
    code, _, body, events = send(harness, route, "no-such-model", probe)
    assert code == 404
    assert_client_error(fmt, 404, body, "does not exist")
    assert_quiet(events)


# -- what passthrough leaves to the upstream ---------------------------------------------------------


@pytest.mark.parametrize("fmt", list(PASSTHROUGH))
def test_passthrough_sends_deep_content_as_it_is(fmt, monkeypatch):
    """
    The passthrough path reads the body (orjson, no recursion of ours) and
    checks its top level, nothing deeper: a field nested far beyond what
    translation accepts reaches a same-format upstream as it was sent
    (re-encoded, without recursion, where an alias renames the model).
    """
    h = matrix()
    received: list[bytes] = []
    read = jsontext.loads

    def recording(raw_body: bytes) -> Any:
        received.append(raw_body)
        return read(raw_body)

    monkeypatch.setattr(jsontext, "loads", recording)  # what the simulated upstream reads with
    body = {**good(fmt, PASSTHROUGH[fmt]), "x_extension": nest(900)}
    path = ROUTES["generateContent" if fmt == "gemini" else
                  {"openai": "chat", "claude": "messages", "responses": "responses"}[fmt]][1]
    code, _, answer = h.request("POST", path.format(model=PASSTHROUGH[fmt]), dumps(body), JSON)
    sent = received[0]  # then the daemon reads the error it got back
    assert dumps(read(sent)["x_extension"]) == dumps(body["x_extension"])
    # The simulated upstream (which reads requests as a translation would)
    # refuses it; its error comes back as it was.
    assert code == 400, answer
    assert json.loads(answer)["error"]["message"].startswith("invalid request: x_extension[0]")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_the_content_type_is_not_checked(content_type):
    """A JSON body is read as JSON whatever its Content-Type says (curl -d sends a form's)."""
    h = matrix()
    headers = {"content-type": content_type} if content_type else {}
    code, _, answer = h.request("POST", "/v1/chat/completions",
                                json.dumps(good("openai", "via-openai")).encode(), headers)
    assert code == 200, answer


# -- what the daemon did not foresee ---------------------------------------------------------------


@pytest.mark.parametrize("route", list(ROUTES))
def test_an_unexpected_error_is_a_500_in_the_clients_shape_and_logged_with_its_traceback(route, monkeypatch):
    """The catch-all answers as the route's clients expect, and is the one place a traceback is logged."""
    h = matrix()
    fmt, path = ROUTES[route]

    def broken(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ClientRequest, "decode", broken)
    with capturedLogs() as events:
        code, _, body = h.request("POST", path.format(model=PASSTHROUGH[fmt]),
                                  json.dumps(good(fmt, PASSTHROUGH[fmt])).encode(), JSON)
    assert code == 500
    data = json.loads(body)
    assert data["error"]["message"] == "internal error"
    if fmt == "claude":
        assert data == {"type": "error", "error": {"type": "api_error", "message": "internal error",
                                                   "code": "internal_server_error"}}
    elif fmt == "gemini":
        assert data["error"]["code"] == 500 and data["error"]["status"] == "INTERNAL"
    else:
        assert data["error"]["type"] == "server_error"
    [failure] = [e for e in events if "log_failure" in e]
    assert failure["log_failure"].check(RuntimeError)


def test_geminis_routes_under_v1_fail_in_geminis_shape(monkeypatch):
    h = matrix()
    monkeypatch.setattr(ClientRequest, "decode", lambda *a, **kw: 1 / 0)
    code, _, body = h.request("POST", "/v1/models/via-gemini:generateContent",
                              json.dumps(good("gemini", "")).encode(), JSON)
    assert code == 500 and json.loads(body)["error"]["status"] == "INTERNAL"
