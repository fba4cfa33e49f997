"""
Google Gemini generateContent: requests, answers, streams and errors.

Gemini carries the model and the stream flag in the URL
(C{models/<model>:streamGenerateContent?alt=sse}), so no body here names
them. Keys are read in camelCase, as the REST API documents them, or in
snake_case, as the google-genai SDK sends some of them (C{mime_type},
C{thinking_budget}, C{parameters_json_schema}); they are written in camelCase.

Where Gemini and the canonical model differ, these are the choices:

  - A tool result goes as C{functionResponse.response = {"output": text}}
    (C{{"error": text}} when the call failed): the shape Google documents.
    The result is text in every other format, so it is wrapped whole rather
    than guessed at, and comes back exactly: a string C{output}, C{content}
    or C{error} is unwrapped, any other C{response} is read as its JSON text.
  - Tool parameters go as C{parametersJsonSchema}, which takes any JSON
    Schema; C{parameters} is an OpenAPI subset that rejects keywords such as
    C{$schema} or C{$ref}. A schema read from C{parameters} becomes JSON
    Schema (type names lowercased, snake_case keywords camelCased).
  - A thought signature on a non-thought part (Gemini 3 signs function
    calls) becomes a canonical Thinking with no text just before that part,
    and goes back onto the part after it. Gemini 3 refuses a replayed
    function call without a signature, so a model turn that has none gets
    the placeholder Google documents; Gemini 1.x and 2.x do not check.
  - Gemini 1.x and 2.x take a thinking budget and refuse a thinking level,
    so a level goes to them as its budget; later models get the level.
"""

from __future__ import annotations

import base64
import functools
import json
import mimetypes
import re
from typing import Any, Mapping
from urllib.parse import unquote_to_bytes, urlsplit

from twisted.logger import Logger

from cliproxyd.formats import canonical as C
from cliproxyd.formats import common
from cliproxyd.formats.common import DEFAULT_ORIGIN, Origin
from cliproxyd.modelnames import Reasoning

log = Logger(namespace="cliproxyd.formats.gemini")

NAME = "gemini"

#: What Gemini 3 accepts in place of a thought signature it did not issue.
SKIP_SIGNATURE = "skip_thought_signature_validator"
_LEGACY = re.compile(r"gemini-[12][.-]")  # budgets only, no signature check

_FINISH_TO_CANON = {"STOP": C.STOP, "MAX_TOKENS": C.LENGTH} | dict.fromkeys(
    ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT"),
    C.CONTENT_FILTER)
_FINISH_FROM_CANON = {C.STOP: "STOP", C.LENGTH: "MAX_TOKENS", C.TOOL_CALLS: "STOP", C.CONTENT_FILTER: "SAFETY"}
_MODE_TO_CHOICE = {"AUTO": "auto", "VALIDATED": "auto", "ANY": "required", "NONE": "none"}
_CHOICE_TO_MODE = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
_LEVELS = {"minimal": "MINIMAL", "low": "LOW", "medium": "MEDIUM", "high": "HIGH", "xhigh": "HIGH", "max": "HIGH"}
_CODES = {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
          "RESOURCE_EXHAUSTED": 429, "INTERNAL": 500, "UNIMPLEMENTED": 501, "UNAVAILABLE": 503,
          "DEADLINE_EXCEEDED": 504}
_STATUS = {code: name for name, code in _CODES.items()} | {413: "INVALID_ARGUMENT", 502: "UNAVAILABLE"}


@functools.cache
def _snake(key: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", key).lower()


def _get(obj: dict[str, Any], key: str) -> Any:
    """C{obj[key]}, or under its snake_case spelling."""
    return obj[key] if key in obj else obj.get(_snake(key))


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is not None and not isinstance(value, dict):
        raise C.BadRequest(f"{where} must be an object")
    return value or {}


def _array(value: Any, where: str) -> list[Any]:
    if value is not None and not isinstance(value, list):
        raise C.BadRequest(f"{where} must be an array")
    return value or []


def _string(obj: dict[str, Any], key: str, where: str) -> str:
    if not isinstance(value := _get(obj, key), str):
        raise C.BadRequest(f"{where}.{key} must be a string")
    return value


# -- requests in -----------------------------------------------------------------


def _unique_id(origin: Origin) -> str:
    return f"call_{origin.new_id()[:24]}"


class _CallIds:
    """
    Ids for calls that come without (Gemini pairs responses with calls by
    name and order): stable ones in a request (no C{origin}), unique ones
    from C{origin} in an answer.
    """

    def __init__(self, origin: Origin | None) -> None:
        self._origin = origin
        self._count = 0
        self._pending: dict[str, list[str]] = {}

    def call(self, name: str, given: str) -> str:
        call_id = given or (f"call_{name}_{self._count}" if self._origin is None else _unique_id(self._origin))
        self._count += 1
        self._pending.setdefault(name, []).append(call_id)
        return call_id

    def result(self, name: str, given: str) -> str:
        pending = self._pending.get(name, [])
        if given:
            if given in pending:
                pending.remove(given)
            return given
        return pending.pop(0) if pending else f"call_{name}"


def _result_in(response: dict[str, Any]) -> tuple[str, bool]:
    for key, is_error in (("output", False), ("content", False), ("error", True)):
        if isinstance(response.get(key), str):
            return response[key], is_error
    return common.compact_json(response), False


def _part_in(p: dict[str, Any], where: str, ids: _CallIds) -> C.Part | None:
    if (text := p.get("text")) is not None:
        if not isinstance(text, str):
            raise C.BadRequest(f"{where}.text must be a string")
        return C.Text(text) if text else None
    if (inline := _get(p, "inlineData")) is not None:
        where += ".inlineData"
        inline = _object(inline, where)
        media_type = _get(inline, "mimeType")
        if media_type is not None and not isinstance(media_type, str):
            raise C.BadRequest(f"{where}.mimeType must be a string")
        return C.Image(data=_string(inline, "data", where), media_type=media_type or "")
    if (file := _get(p, "fileData")) is not None:
        where += ".fileData"
        return C.Image(url=_string(_object(file, where), "fileUri", where))
    if (call := _get(p, "functionCall")) is not None:
        where += ".functionCall"
        call = _object(call, where)
        name, args = _string(call, "name", where), _object(call.get("args"), f"{where}.args")
        return C.ToolCall(ids.call(name, str(call.get("id") or "")), name, common.compact_json(args))
    if (resp := _get(p, "functionResponse")) is not None:
        where += ".functionResponse"
        resp = _object(resp, where)
        name = _string(resp, "name", where)
        content, is_error = _result_in(_object(resp.get("response"), f"{where}.response"))
        return C.ToolResult(ids.result(name, str(resp.get("id") or "")), content, is_error)
    log.debug("dropping a Gemini part the canonical model cannot carry: {keys}", keys=sorted(p))
    return None


def _parts_in(raw: Any, where: str, ids: _CallIds) -> list[C.Part]:
    out: list[C.Part] = []
    for j, p in enumerate(_array(raw, where)):
        if not isinstance(p, dict):
            raise C.BadRequest(f"{where}[{j}] must be an object")
        signature = _get(p, "thoughtSignature") or ""
        if not isinstance(signature, str):
            raise C.BadRequest(f"{where}[{j}].thoughtSignature must be a string")
        if p.get("thought"):
            text = p.get("text") or ""
            if not isinstance(text, str):
                raise C.BadRequest(f"{where}[{j}].text must be a string")
            out.append(C.Thinking(text, signature))
            continue
        if signature and signature != SKIP_SIGNATURE:
            out.append(C.Thinking("", signature))
        if (part := _part_in(p, f"{where}[{j}]", ids)) is not None:
            out.append(part)
    return out


def _contents(data: Any) -> list[dict[str, Any]]:
    contents = common.non_empty_array(common.body_object(data), "contents")
    for i, c in enumerate(contents):
        if not isinstance(c, dict):
            raise C.BadRequest(f"contents[{i}] must be an object")
    return contents


def validate(data: Any) -> tuple[str, bool]:
    """
    Gemini names the model and streaming in the URL: C{("", False)}, or
    BadRequest for a body whose top-level fields have the wrong types (each
    content an object; what is in the contents is for the full decode, or a
    Gemini upstream, to judge).
    """
    data = _unwrap(data)
    _contents(data)
    config = _object(_get(data, "generationConfig"), "generationConfig")
    _number(config, "maxOutputTokens", "generationConfig", integer=True)
    _number(config, "temperature", "generationConfig")
    _number(config, "topP", "generationConfig")
    _array(data.get("tools"), "tools")
    _object(_get(data, "toolConfig"), "toolConfig")
    system = _get(data, "systemInstruction")
    if not isinstance(system, str):
        _object(system, "systemInstruction")
    return "", False


@functools.cache
def _camel(key: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), key)


def _json_schema(schema: Any) -> Any:
    """Gemini's OpenAPI-style schema as JSON Schema; property names are kept as they are."""
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        key = _camel(key)
        if key == "type" and isinstance(value, str):
            value = value.lower()
        elif key == "properties" and isinstance(value, dict):
            value = {name: _json_schema(s) for name, s in value.items()}
        elif key == "items":
            value = _json_schema(value)
        elif key == "anyOf" and isinstance(value, list):
            value = [_json_schema(s) for s in value]
        out[key] = value
    return out


def _tools_in(raw: Any) -> tuple[C.Tool, ...]:
    tools = []
    for i, t in enumerate(_array(raw, "tools")):
        t = _object(t, f"tools[{i}]")
        declarations = _get(t, "functionDeclarations")
        if declarations is None:
            log.debug("dropping a Gemini tool that is not functions: {keys}", keys=sorted(t))
        for j, d in enumerate(_array(declarations, f"tools[{i}].functionDeclarations")):
            where = f"tools[{i}].functionDeclarations[{j}]"
            name = _string(_object(d, where), "name", where)
            if not name:
                raise C.BadRequest(f"{where}.name must not be empty")
            schema = _get(d, "parametersJsonSchema")
            if schema is None:
                schema = _json_schema(d.get("parameters"))
            tools.append(C.Tool(name, str(d.get("description") or ""), _object(schema, f"{where}.parameters")))
    return tuple(tools)


def _tool_choice_in(data: dict[str, Any]) -> str | None:
    tool_config = _object(_get(data, "toolConfig"), "toolConfig")
    config = _object(_get(tool_config, "functionCallingConfig"), "toolConfig.functionCallingConfig")
    mode = str(config.get("mode") or "").upper()
    names = _get(config, "allowedFunctionNames")
    if mode == "ANY" and isinstance(names, list) and len(names) == 1:
        return str(names[0])
    return _MODE_TO_CHOICE.get(mode)


def _number(config: dict[str, Any], key: str, where: str, integer: bool = False) -> Any:
    value = _get(config, key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int if integer else (int, float))):
        raise C.BadRequest(f"{where}.{key} must be {'an integer' if integer else 'a number'}")
    return value


def _reasoning_in(config: dict[str, Any]) -> Reasoning | None:
    thinking = _object(_get(config, "thinkingConfig"), "generationConfig.thinkingConfig")
    level = _get(thinking, "thinkingLevel")
    if isinstance(level, str) and level.upper() != "THINKING_LEVEL_UNSPECIFIED":
        return Reasoning(level=level.lower())
    budget = _number(thinking, "thinkingBudget", "generationConfig.thinkingConfig", integer=True)
    return Reasoning(budget=budget) if budget is not None else None


def request_to_canonical(data: dict[str, Any]) -> C.Request:
    validate(data)
    data = common.shallow(_unwrap(data))
    ids = _CallIds(None)
    messages = []
    for i, c in enumerate(_contents(data)):
        role = c.get("role") or "user"
        if role not in ("user", "model", "function"):
            raise C.BadRequest(f"contents[{i}].role must be user or model")
        if "parts" not in c:
            raise C.BadRequest(f"contents[{i}].parts: an array is required")
        parts = _parts_in(c.get("parts"), f"contents[{i}].parts", ids)
        if parts:
            messages.append(C.Message("assistant" if role == "model" else "user", tuple(parts)))
        else:
            log.debug("dropping contents[{i}]: nothing in it the canonical model can carry", i=i)
    system = _get(data, "systemInstruction")
    if not isinstance(system, str):
        parts = _array(_object(system, "systemInstruction").get("parts"), "systemInstruction.parts")
        system = "".join(t for p in parts if isinstance(p, dict) and isinstance(t := p.get("text"), str))
    config = _object(_get(data, "generationConfig"), "generationConfig")
    max_tokens = _number(config, "maxOutputTokens", "generationConfig", integer=True)
    if max_tokens is not None and max_tokens < 1:
        raise C.BadRequest("generationConfig.maxOutputTokens must be a positive integer")
    stop = _array(_get(config, "stopSequences"), "generationConfig.stopSequences")
    if not all(isinstance(s, str) for s in stop):
        raise C.BadRequest("generationConfig.stopSequences must be an array of strings")
    return C.Request(
        model="",
        messages=tuple(messages),
        system=system,
        tools=_tools_in(data.get("tools")),
        tool_choice=_tool_choice_in(data),
        max_tokens=max_tokens,
        temperature=_number(config, "temperature", "generationConfig"),
        top_p=_number(config, "topP", "generationConfig"),
        stop=tuple(stop),
        reasoning=_reasoning_in(config),
    )


# -- requests out ----------------------------------------------------------------


def _image_out(p: C.Image) -> dict[str, Any]:
    if p.data:
        return {"inlineData": {"mimeType": p.media_type or "application/octet-stream", "data": p.data}}
    if p.url.startswith("data:"):
        header, _, payload = p.url[5:].partition(",")
        media_type, *params = header.split(";")
        if "base64" not in params:
            payload = base64.b64encode(unquote_to_bytes(payload)).decode("ascii")
        return {"inlineData": {"mimeType": media_type or "text/plain", "data": payload}}
    media_type = mimetypes.guess_type(urlsplit(p.url).path)[0] or "application/octet-stream"
    return {"fileData": {"fileUri": p.url, "mimeType": media_type}}


def _part_out(p: C.Part, names: dict[str, str]) -> dict[str, Any]:
    if isinstance(p, C.Thinking):
        return {"text": p.text, "thought": True} | ({"thoughtSignature": p.signature} if p.signature else {})
    if isinstance(p, C.Text):
        return {"text": p.text}
    if isinstance(p, C.Image):
        return _image_out(p)
    if isinstance(p, C.ToolCall):
        call = {"name": p.name, "args": common.arguments_object(p.arguments)}
        return {"functionCall": call | ({"id": p.id} if p.id else {})}
    response = {"error" if p.is_error else "output": p.content}
    result = {"name": names.get(p.call_id, p.call_id), "response": response}
    return {"functionResponse": result | ({"id": p.call_id} if p.call_id else {})}


def _parts_out(parts: tuple[C.Part, ...], names: dict[str, str]) -> list[dict[str, Any]]:
    out, signature = [], ""
    for p in parts:
        if isinstance(p, C.Thinking) and not p.text and p.signature:
            signature = p.signature  # it belongs to the part that follows
            continue
        part = _part_out(p, names)
        if signature:
            part.setdefault("thoughtSignature", signature)
            signature = ""
        out.append(part)
    if signature:
        out.append({"text": "", "thought": True, "thoughtSignature": signature})
    return out


def _thinking_out(reasoning: Reasoning, levels: bool = True) -> dict[str, Any] | None:
    if reasoning.off:
        return {"thinkingBudget": 0}
    if levels and not reasoning.auto and reasoning.level in _LEVELS:
        return {"thinkingLevel": _LEVELS[reasoning.level], "includeThoughts": True}
    tokens = reasoning.tokens()
    return None if tokens is None else {"thinkingBudget": tokens, "includeThoughts": True}


def request_from_canonical(req: C.Request, model: str) -> dict[str, Any]:
    """A generateContent body for C{req}; the model and streaming go in the URL."""
    legacy = _LEGACY.search(model) is not None
    names = {p.id: p.name for m in req.messages for p in m.parts if isinstance(p, C.ToolCall)}
    contents = []
    for m in req.messages:
        parts = _parts_out(m.parts, names)
        calls = [p for p in parts if "functionCall" in p]
        if calls and not legacy and not any("thoughtSignature" in p for p in calls):
            calls[0]["thoughtSignature"] = SKIP_SIGNATURE
        if parts:
            contents.append({"role": "model" if m.role == "assistant" else "user", "parts": parts})
    body: dict[str, Any] = {"contents": contents}
    if req.system:
        body["systemInstruction"] = {"parts": [{"text": req.system}]}
    if req.tools:
        body["tools"] = [{"functionDeclarations": [
            {"name": t.name} | ({"description": t.description} if t.description else {})
            | ({"parametersJsonSchema": t.parameters} if t.parameters else {})
            for t in req.tools]}]
    if req.tool_choice in _CHOICE_TO_MODE:
        body["toolConfig"] = {"functionCallingConfig": {"mode": _CHOICE_TO_MODE[req.tool_choice]}}
    elif req.tool_choice:
        body["toolConfig"] = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [req.tool_choice]}}
    config: dict[str, Any] = {}
    common.set_present(config, maxOutputTokens=req.max_tokens, temperature=req.temperature, topP=req.top_p)
    if req.stop:
        config["stopSequences"] = list(req.stop)
    if req.reasoning is not None and (thinking := _thinking_out(req.reasoning, levels=not legacy)):
        config["thinkingConfig"] = thinking
    if config:
        body["generationConfig"] = config
    return body


def set_model(data: dict[str, Any], model: str) -> dict[str, Any]:
    return data


def name_answer_model(data: dict[str, Any], model: str) -> bool:
    """An answer and each chunk of its stream name the model in C{modelVersion}."""
    return common.name_model_at(data, model, "modelVersion")


def apply_reasoning(data: dict[str, Any], reasoning: Reasoning, model: str = "") -> None:
    """Set the thinking config (keeping the client's includeThoughts); a level for 1.x/2.x models goes as its budget."""
    thinking = _thinking_out(reasoning, levels=_LEGACY.search(model) is None)
    if thinking is None:
        return
    config = data.pop("generation_config", None) or data.get("generationConfig")
    config = dict(config) if isinstance(config, dict) else {}
    old = config.pop("thinking_config", None) or config.get("thinkingConfig")
    if isinstance(old, dict) and _get(old, "includeThoughts") is not None and "includeThoughts" in thinking:
        thinking["includeThoughts"] = _get(old, "includeThoughts")
    config["thinkingConfig"] = thinking
    data["generationConfig"] = config


# -- answers ---------------------------------------------------------------------


def _usage_in(raw: Any) -> C.Usage:
    raw = raw if isinstance(raw, dict) else {}
    prompt, candidates, cached, thoughts = (int(_get(raw, key) or 0) for key in (
        "promptTokenCount", "candidatesTokenCount", "cachedContentTokenCount", "thoughtsTokenCount"))
    return C.Usage(prompt, candidates + thoughts, cached, thoughts)


def _usage_out(usage: C.Usage) -> dict[str, int]:
    return common.google_usage(usage, "promptTokenCount", "candidatesTokenCount", "totalTokenCount",
                               "thoughtsTokenCount", "cachedContentTokenCount")


def _stop_in(data: dict[str, Any], candidate: dict[str, Any], calls: bool) -> str | None:
    """The canonical stop reason of a chunk, or None if it does not end the answer."""
    finish = _get(candidate, "finishReason")
    if not finish:
        feedback = _get(data, "promptFeedback")
        blocked = not data.get("candidates") and isinstance(feedback, dict) and _get(feedback, "blockReason")
        return C.CONTENT_FILTER if blocked else None
    stop = _FINISH_TO_CANON.get(finish, C.STOP)
    return C.TOOL_CALLS if calls and stop == C.STOP else stop


def _candidate(data: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """The first candidate of an answer, and its parts."""
    candidates = data.get("candidates")
    candidate = candidates[0] if isinstance(candidates, list) and candidates else None
    if not isinstance(candidate, dict):
        return {}, []
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return candidate, parts if isinstance(parts, list) else []


def response_to_canonical(data: dict[str, Any], *, origin: Origin = DEFAULT_ORIGIN) -> C.Response:
    """
    A whole Gemini answer; ValueError if its parts are malformed (the
    upstream's fault, not the client's). A function call without an id gets
    one from C{origin}.
    """
    candidate, raw_parts = _candidate(data)
    try:
        parts = _parts_in(raw_parts, "candidates[0].content.parts", _CallIds(origin))
    except C.BadRequest as e:
        raise ValueError(f"a malformed Gemini answer: {e}") from None
    calls = any(isinstance(p, C.ToolCall) for p in parts)
    return C.Response(
        id=str(_get(data, "responseId") or ""),
        model=str(_get(data, "modelVersion") or ""),
        parts=tuple(parts),
        stop_reason=_stop_in(data, candidate, calls) or (C.TOOL_CALLS if calls else C.STOP),
        usage=_usage_in(_get(data, "usageMetadata")),
    )


def _chunk(model: str, response_id: str, parts: list[dict[str, Any]], finish: str | None = None,
           usage: C.Usage | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts or [{"text": ""}]}, "index": 0}
    if finish:
        candidate["finishReason"] = _FINISH_FROM_CANON.get(finish, "STOP")
    body: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        body["usageMetadata"] = _usage_out(usage)
    body["modelVersion"] = model
    if response_id:
        body["responseId"] = response_id
    return body


def response_from_canonical(resp: C.Response, model: str, *, origin: Origin = DEFAULT_ORIGIN) -> dict[str, Any]:
    """A whole answer as one GenerateContentResponse; its C{responseId} from C{origin} if the upstream gave none."""
    return _chunk(model, resp.id or origin.new_id(), _parts_out(resp.parts, {}), resp.stop_reason, resp.usage)


# -- streams ---------------------------------------------------------------------


def is_stream_end(data: bytes) -> bool:
    """A chunk with a finish reason, compact or with one space after the colon (see the contract)."""
    return b'"finishReason": "' in data or b'"finishReason":"' in data


class StreamDecoder:
    """
    GenerateContentResponse chunks -> canonical stream events; one
    UsageEvent, at or after the finish. A function call without an id gets
    one from C{origin}.
    """

    def __init__(self, *, origin: Origin = DEFAULT_ORIGIN) -> None:
        self._origin = origin
        self._started = False
        self._calls = 0
        self._usage: C.Usage | None = None
        self._finished = False
        self._usage_sent = False

    def feed(self, data: dict[str, Any]) -> list[C.Event]:
        if isinstance(data.get("error"), dict):
            err = data["error"]
            return [C.ErrorEvent(str(err.get("message") or "upstream error"), str(err.get("status") or "INTERNAL"),
                                 common.error_status(err.get("code"), err.get("status")))]
        events: list[C.Event] = []
        if not self._started:
            self._started = True
            events.append(C.Start(str(_get(data, "responseId") or ""), str(_get(data, "modelVersion") or "")))
        candidate, parts = _candidate(data)
        for p in parts:
            if not isinstance(p, dict):
                continue
            text, call = p.get("text"), _get(p, "functionCall")
            if isinstance(text, str) and text:
                events.append(C.ThinkingDelta(text) if p.get("thought") else C.TextDelta(text))
            elif isinstance(call, dict):
                name = str(call.get("name") or "")
                events.append(C.ToolCallStart(self._calls, str(call.get("id") or _unique_id(self._origin)), name))
                events.append(C.ToolCallDelta(self._calls, common.compact_json(call.get("args") or {})))
                self._calls += 1
        if _get(data, "usageMetadata"):
            self._usage = _usage_in(_get(data, "usageMetadata"))
        stop = None if self._finished else _stop_in(data, candidate, self._calls > 0)
        if stop is not None:
            self._finished = True
            events.append(C.Finish(stop))
        if self._finished and self._usage is not None and not self._usage_sent:
            self._usage_sent = True
            events.append(C.UsageEvent(self._usage))
        return events


class StreamEncoder:
    """
    Canonical stream events -> GenerateContentResponse chunks, as SSE
    (C{alt=sse}) or as the JSON array Gemini streams without it. A function
    call goes out whole, once its arguments are complete. The finish reason
    and the usage go out together in the last chunk, written by L{close}:
    Gemini ends with them, and usage may come after the finish.

    C{origin} is taken for the contract's sake: Gemini's chunks carry no
    time, and no id but the upstream's.
    """

    def __init__(self, model: str, sse: bool = True, *, origin: Origin = DEFAULT_ORIGIN) -> None:
        self._model = model
        self._sse = sse
        self._id = ""
        self._sent = False  # any array element written
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments so far]
        self._finish = C.STOP
        self._usage: C.Usage | None = None
        self._closed = False

    def _frame(self, body: dict[str, Any]) -> bytes:
        data = common.sse_json(body)
        if self._sse:
            return b"data: " + data + b"\r\n\r\n"
        lead = b",\r\n" if self._sent else b"["
        self._sent = True
        return lead + data

    def _call_parts(self) -> list[dict[str, Any]]:
        parts = [{"functionCall": {"name": name, "args": common.arguments_object(arguments)}
                  | ({"id": call_id} if call_id else {})}
                 for call_id, name, arguments in self._calls.values()]
        self._calls = {}
        return parts

    def feed(self, event: C.Event) -> bytes:
        if self._closed:
            return b""
        if isinstance(event, C.Start):
            self._id = self._id or event.id
        elif isinstance(event, C.ToolCallStart):
            self._calls[event.index] = [event.id, event.name, ""]
        elif isinstance(event, C.ToolCallDelta):
            if event.index in self._calls:
                self._calls[event.index][2] += event.arguments
        elif isinstance(event, C.Finish):
            self._finish = event.stop_reason
        elif isinstance(event, C.UsageEvent):
            self._usage = event.usage
        elif isinstance(event, C.ErrorEvent):
            self._closed = True
            status = event.type if event.type in _CODES else "INTERNAL"
            error = {"error": {"code": _CODES[status], "message": event.message, "status": status}}
            return self._frame(error) + (b"" if self._sse else b"]")
        elif event.text:
            out = self._frame(_chunk(self._model, self._id, self._call_parts())) if self._calls else b""
            part = {"text": event.text} | ({"thought": True} if isinstance(event, C.ThinkingDelta) else {})
            return out + self._frame(_chunk(self._model, self._id, [part]))
        return b""

    def close(self) -> bytes:
        """The last chunk (pending calls, the finish reason, usage), and the array's end."""
        if self._closed:
            return b""
        self._closed = True
        out = self._frame(_chunk(self._model, self._id, self._call_parts(), self._finish, self._usage))
        return out if self._sse else out + b"]"


# -- errors, counts, models ------------------------------------------------------


def _error(status: int, message: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": status, "message": message,
                           "status": _STATUS.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")}
    extra = dict(extra or {})
    details = list(extra.pop("details", ()))
    # Gemini's code is the HTTP status: a machine-readable reason and
    # anything else go where Google puts them, in an ErrorInfo detail.
    reason = extra.pop("code", None)
    if reason or extra:
        info: dict[str, Any] = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "domain": "cliproxyd"}
        if reason:
            info["reason"] = str(reason).upper()
        if extra:
            info["metadata"] = {k: str(v) for k, v in extra.items() if v is not None}
        details.append(info)
    if details:
        err["details"] = details
    return {"error": err}


def error_body(status: int, message: str, extra: dict[str, Any] | None = None) -> bytes:
    return common.json_body(_error(status, message, extra))


def stream_error_event(message: str, status: int = 500) -> bytes:
    """An error inside an SSE stream whose chunks came through as they were."""
    return b"data: " + json.dumps(_error(status, message)).encode("ascii") + b"\r\n\r\n"


def count_body(tokens: int) -> dict[str, Any]:
    return {"totalTokens": tokens}


def count_request(data: dict[str, Any], model: str) -> dict[str, Any]:
    """A countTokens body from a generateContent one: all of it, so that the system instruction and tools count."""
    return {"generateContentRequest": {**_unwrap(data), "model": f"models/{model}"}}


def _unwrap(data: Any) -> Any:
    """A countTokens body may wrap the request it counts in C{generateContentRequest}."""
    if isinstance(data, dict) and "contents" not in data:
        inner = _get(data, "generateContentRequest")
        if isinstance(inner, dict):
            return inner
    return data


def count_from_body(data: dict[str, Any]) -> int:
    """The token count of a countTokens answer; ValueError if it has none."""
    value = data.get("totalTokens") if isinstance(data, dict) else None
    if value is None or isinstance(value, bool):
        raise ValueError("the countTokens answer has no totalTokens")
    return int(value)


def _model(name: str, facts: common.ModelFacts | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": f"models/{name}", "displayName": name, "description": name,
                             "supportedGenerationMethods": ["generateContent", "streamGenerateContent",
                                                            "countTokens"]}
    if facts is not None:
        if facts.display_name:
            entry["displayName"] = entry["description"] = facts.display_name
        if facts.context_length:
            entry["inputTokenLimit"] = facts.context_length
        if facts.output_tokens:
            entry["outputTokenLimit"] = facts.output_tokens
        if facts.thinking is not None:
            entry["thinking"] = True
        if facts.input_modalities:
            entry["supportedInputModalities"] = [m.upper() for m in facts.input_modalities]
        if facts.output_modalities:
            entry["supportedOutputModalities"] = [m.upper() for m in facts.output_modalities]
    return entry


def models_body(models: list[tuple[str, str]], facts: Mapping[str, common.ModelFacts] | None = None) -> bytes:
    """The C{/v1beta/models} list; C{facts} adds what the config says of a model (display name, limits, ...)."""
    facts = facts or {}
    return common.json_body({"models": [_model(name, facts.get(name)) for name, _owner in models]})


def model_body(name: str, facts: common.ModelFacts | None = None) -> bytes:
    return common.json_body(_model(name, facts))
