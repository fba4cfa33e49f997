"""
OpenAI Chat Completions (C{"openai"}): requests, answers, streams, errors.

Requests on the passthrough path are parsed once, to learn the model and
whether to stream, and kept as raw bytes: when the upstream model is the one
the client asked for, those bytes go upstream untouched. Everything else
translates through the canonical model (see L{cliproxyd.formats}).
"""

from __future__ import annotations

from typing import Any, Mapping

from twisted.logger import Logger

from cliproxyd import jsontext
from cliproxyd.formats import canonical as C
from cliproxyd.formats import common
from cliproxyd.formats.common import DEFAULT_ORIGIN, Origin
from cliproxyd.modelnames import Reasoning, parse_reasoning

log = Logger(namespace="cliproxyd.formats.openai_chat")

NAME = "openai"

BadRequest = C.BadRequest


def validate(data: Any) -> tuple[str, bool]:
    """
    The model and the stream flag of a decoded client body, or BadRequest:
    the types of the top-level fields, each message an object; what is in
    the messages is for the full decode (or a same-format upstream) to judge.
    """
    data = common.body_object(data)
    model = common.model_field(data, "'model' is required and must be a non-empty string")
    messages = common.non_empty_array(data, "messages", "'messages' is required and must be a non-empty array")
    common.objects(messages, "messages")
    stream = common.stream_flag(data, "'stream' must be true or false")
    for key in ("max_tokens", "max_completion_tokens"):
        common.positive_int(data, key)
    for key in ("temperature", "top_p"):
        common.number(data, key)
    common.optional(data, "tools", (list,), "an array")
    common.optional(data, "tool_choice", (str, dict), "a string or an object")
    return model, stream


set_model = common.set_model


def name_answer_model(data: dict[str, Any], model: str) -> bool:
    """A completion and each chunk of its stream name the model at the top."""
    return common.name_model_at(data, model, "model")


def apply_reasoning(data: dict[str, Any], reasoning: Reasoning, model: str = "") -> None:
    """C{reasoning_effort} from C{reasoning}; a reasoning with no level ("auto") removes the field."""
    effort = reasoning.effort()
    if effort is None:
        data.pop("reasoning_effort", None)
    else:
        data["reasoning_effort"] = effort


# -- errors and listings -------------------------------------------------------------


_PROBLEM_TYPES = {
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "insufficient_quota"),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def error_body(status: int, message: str, extra: dict[str, Any] | None = None) -> bytes:
    """
    An OpenAI error for an HTTP status, its type and code derived from the
    status; C{extra} joins the error object and may override C{type} and
    C{code}.
    """
    default = ("server_error", "internal_server_error") if status >= 500 else ("invalid_request_error", None)
    kind, code = _PROBLEM_TYPES.get(status, default)
    return common.error_json({"message": message, "type": kind, "code": code}, extra)


def stream_error_event(message: str, type: str = "server_error", code: str | None = None) -> bytes:
    """An error delivered inside an SSE stream, after the status was already sent."""
    return b"data: " + error_body(500, message, {"type": type, "code": code}) + b"\n\n"


def is_error_body(body: bytes) -> bool:
    """Whether C{body} is an OpenAI-shaped error object (so it can be passed on as it is)."""
    try:
        data = jsontext.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and isinstance(data.get("error"), dict)


def _model(name: str, created: int, owner: str, facts: common.ModelFacts | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": name, "object": "model", "created": created, "owned_by": owner}
    if facts is not None:
        if facts.display_name:
            entry["display_name"] = facts.display_name
        if facts.context_length:
            entry["context_length"] = facts.context_length
        if facts.output_tokens:
            entry["max_completion_tokens"] = facts.output_tokens
        if facts.thinking is not None:
            entry["thinking"] = common.thinking_json(facts.thinking)
        if facts.input_modalities:
            entry["input_modalities"] = list(facts.input_modalities)
        if facts.output_modalities:
            entry["output_modalities"] = list(facts.output_modalities)
    return entry


def model_body(name: str, created: int, owner: str = "cliproxyd", facts: common.ModelFacts | None = None) -> bytes:
    return common.json_body(_model(name, created, owner, facts))


def models_body(models: list[tuple[str, str]], created: int,
                facts: Mapping[str, common.ModelFacts] | None = None) -> bytes:
    """The C{/v1/models} list; C{facts} adds what the config says of a model (display name, limits, ...)."""
    facts = facts or {}
    data = [_model(name, created, owner, facts.get(name)) for name, owner in models]
    return common.json_body({"object": "list", "data": data})


# -- requests: a client body -> the canonical model ------------------------------------


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{path} must be a string")
    return value


def _name(value: Any, path: str) -> str:
    if not _string(value, path):
        raise BadRequest(f"{path} must not be empty")
    return value


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{path} must be an object")
    return value


def _array(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise BadRequest(f"{path} must be an array")
    return value


def _max_tokens(data: dict[str, Any]) -> int | None:
    key = "max_completion_tokens" if data.get("max_completion_tokens") is not None else "max_tokens"
    return common.positive_int(data, key)


def _text_content(content: Any, path: str) -> str:
    """A string, or an array of text parts (system, assistant and tool messages)."""
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(_array(content, path)):
        part = _object(part, f"{path}[{j}]")
        if part.get("type") == "text":
            texts.append(_string(part.get("text"), f"{path}[{j}].text"))
        else:
            log.debug("dropping a {kind} part the canonical model cannot carry", kind=part.get("type"))
    return "".join(texts)


def _image(value: Any, path: str) -> C.Image:
    url = _string(value.get("url") if isinstance(value, dict) else None, f"{path}.url")
    if common.web_url(url):
        return C.Image(url=url)
    image = common.base64_image(url)
    if image is None:
        raise BadRequest(f"{path}.url must be an http(s) URL or a base64 data: URL")
    return image


def _user_parts(content: Any, path: str) -> list[C.Part]:
    if isinstance(content, str):
        return [C.Text(content)]
    parts: list[C.Part] = []
    for j, part in enumerate(_array(content, path)):
        part = _object(part, f"{path}[{j}]")
        if part.get("type") == "text":
            parts.append(C.Text(_string(part.get("text"), f"{path}[{j}].text")))
        elif part.get("type") == "image_url":
            parts.append(_image(part.get("image_url"), f"{path}[{j}].image_url"))
        else:
            log.debug("dropping a {kind} part the canonical model cannot carry", kind=part.get("type"))
    return parts


def _assistant_parts(m: dict[str, Any], path: str) -> list[C.Part]:
    parts: list[C.Part] = []
    reasoning = m.get("reasoning_content")
    if reasoning is not None and _string(reasoning, f"{path}.reasoning_content"):
        parts.append(C.Thinking(reasoning))
    if m.get("content") is not None and (text := _text_content(m["content"], f"{path}.content")):
        parts.append(C.Text(text))
    for k, call in enumerate(_array(m.get("tool_calls") or [], f"{path}.tool_calls")):
        where = f"{path}.tool_calls[{k}]"
        call = _object(call, where)
        fn = _object(call.get("function"), f"{where}.function")
        parts.append(C.ToolCall(_string(call.get("id"), f"{where}.id"),
                                _name(fn.get("name"), f"{where}.function.name"),
                                common.arguments_text(fn.get("arguments", "{}"), f"{where}.function.arguments")))
    return parts


def _tools(data: dict[str, Any]) -> tuple[C.Tool, ...]:
    tools = []
    for i, t in enumerate(_array(data.get("tools") or [], "tools")):
        t = _object(t, f"tools[{i}]")
        if t.get("type", "function") != "function":
            log.debug("dropping a {kind} tool the canonical model cannot carry", kind=t.get("type"))
            continue
        fn = _object(t.get("function"), f"tools[{i}].function")
        tools.append(C.Tool(_name(fn.get("name"), f"tools[{i}].function.name"),
                            _string(fn.get("description") or "", f"tools[{i}].function.description"),
                            _object(fn.get("parameters") or {}, f"tools[{i}].function.parameters")))
    return tuple(tools)


def _tool_choice(value: Any) -> str | None:
    if value is None or value in ("auto", "none", "required"):
        return value
    if isinstance(value, dict) and value.get("type") == "function":
        fn = _object(value.get("function"), "tool_choice.function")
        return _name(fn.get("name"), "tool_choice.function.name")
    raise BadRequest("tool_choice must be auto, none, required or {type: function, function: {name}}")


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise BadRequest("stop must be a string or an array of strings")


def _reasoning(value: Any) -> Reasoning | None:
    if value is None:
        return None
    reasoning = parse_reasoning(value) if isinstance(value, str) else None
    if reasoning is None:
        raise BadRequest("reasoning_effort must be none, minimal, low, medium, high or xhigh")
    return reasoning


def request_to_canonical(data: dict[str, Any]) -> C.Request:
    """
    A Chat Completions body as a canonical request. System and developer
    messages become the system text; tool messages become a user message of
    tool results, together with the user message right after them.
    """
    model, stream = validate(data)
    common.shallow(data)
    system: list[str] = []
    messages: list[C.Message] = []
    after_tool = False
    for i, m in enumerate(data["messages"]):
        path = f"messages[{i}]"
        role = _object(m, path).get("role")
        if role in ("system", "developer"):
            system.append(_text_content(m.get("content"), f"{path}.content"))
            continue
        if role == "tool":
            parts: list[C.Part] = [C.ToolResult(_string(m.get("tool_call_id"), f"{path}.tool_call_id"),
                                                _text_content(m.get("content"), f"{path}.content"))]
        elif role == "user":
            parts = _user_parts(m.get("content"), f"{path}.content")
        elif role == "assistant":
            parts = _assistant_parts(m, path)
        else:
            raise BadRequest(f"{path}.role must be system, developer, user, assistant or tool")
        if after_tool and role != "assistant":
            messages[-1] = C.Message("user", messages[-1].parts + tuple(parts))
        else:
            messages.append(C.Message("assistant" if role == "assistant" else "user", tuple(parts)))
        after_tool = role == "tool"
    return C.Request(
        model=model,
        messages=tuple(messages),
        system="\n\n".join(system),
        tools=_tools(data),
        tool_choice=_tool_choice(data.get("tool_choice")),
        max_tokens=_max_tokens(data),
        temperature=common.number(data, "temperature"),
        top_p=common.number(data, "top_p"),
        stop=_stop(data.get("stop")),
        stream=stream,
        reasoning=_reasoning(data.get("reasoning_effort")),
    )


# -- requests: the canonical model -> an upstream body ---------------------------------


def _dropped(part: C.Part, role: str) -> None:
    log.debug("dropping a {kind} part of a {role} message: Chat Completions cannot carry it",
              kind=type(part).__name__, role=role)


def request_from_canonical(req: C.Request, model: str) -> dict[str, Any]:
    """
    An OpenAI Chat Completions request body for C{req}, asking for C{model}.
    Thinking in assistant messages, images outside user messages and the
    error flag of tool results have no place in a chat request and are dropped.
    """
    messages: list[dict[str, Any]] = []
    if req.system:
        messages.append({"role": "system", "content": req.system})
    for m in req.messages:
        if m.role == "assistant":
            text = common.joined_text(m.parts)
            calls = [
                {"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.arguments or "{}"}}
                for p in m.parts
                if isinstance(p, C.ToolCall)
            ]
            for p in m.parts:
                if not isinstance(p, (C.Text, C.ToolCall)):
                    _dropped(p, m.role)
            out: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                out["tool_calls"] = calls
            messages.append(out)
            continue
        content: list[dict[str, Any]] = []
        for p in m.parts:
            if isinstance(p, C.ToolResult):
                messages.append({"role": "tool", "tool_call_id": p.call_id, "content": p.content})
            elif isinstance(p, C.Text):
                content.append({"type": "text", "text": p.text})
            elif isinstance(p, C.Image):
                content.append({"type": "image_url", "image_url": {"url": common.image_url(p)}})
            else:
                _dropped(p, m.role)
        if content:
            if all(c["type"] == "text" for c in content):
                messages.append({"role": "user", "content": "".join(c["text"] for c in content)})
            else:
                messages.append({"role": "user", "content": content})
    body: dict[str, Any] = {"model": model, "messages": messages}
    if req.tools:
        body["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": common.tool_schema(t)}}
            for t in req.tools
        ]
    if req.tool_choice in ("auto", "none", "required"):
        body["tool_choice"] = req.tool_choice
    elif req.tool_choice:
        body["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice}}
    common.set_present(body, max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p)
    if req.stop:
        body["stop"] = list(req.stop)
    effort = req.reasoning.effort() if req.reasoning is not None else None
    if effort:
        body["reasoning_effort"] = effort
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


# -- answers ---------------------------------------------------------------------------

_FINISH_TO_CANON = {"stop": C.STOP, "length": C.LENGTH, "tool_calls": C.TOOL_CALLS,
                    "function_call": C.TOOL_CALLS, "content_filter": C.CONTENT_FILTER}


def _finish_reason(stop_reason: str) -> str:
    # The canonical stop reasons are named as OpenAI names them.
    return stop_reason if stop_reason in (C.STOP, C.LENGTH, C.TOOL_CALLS, C.CONTENT_FILTER) else "stop"


def _completion_id(upstream_id: str, origin: Origin) -> str:
    return common.prefixed_id("chatcmpl-", upstream_id, origin)


def _usage(raw: Any) -> C.Usage:
    return common.openai_usage(raw, "prompt_tokens", "completion_tokens")


def _usage_body(usage: C.Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def response_to_canonical(data: dict[str, Any], *, origin: Origin = DEFAULT_ORIGIN) -> C.Response:
    """A whole OpenAI Chat Completions answer as a canonical response."""
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    parts: list[C.Part] = []
    if message.get("reasoning_content"):
        parts.append(C.Thinking(str(message["reasoning_content"])))
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(c.get("text", "") for c in content if isinstance(c, dict))
    if content:
        parts.append(C.Text(str(content)))
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        parts.append(C.ToolCall(str(call.get("id", "")), str(fn.get("name", "")), fn.get("arguments") or "{}"))
    return common.answer(data, parts, _FINISH_TO_CANON.get(choice.get("finish_reason") or "stop", C.STOP),
                         _usage(data.get("usage")))


def response_from_canonical(resp: C.Response, model: str, *, origin: Origin = DEFAULT_ORIGIN) -> dict[str, Any]:
    """
    A C{chat.completion} object for C{resp}, naming C{model}; thinking
    becomes C{reasoning_content}. C{created} is C{origin}'s time, and the id
    comes from C{origin} when the upstream gave none.
    """
    text = common.joined_text(resp.parts)
    thinking = "".join(p.text for p in resp.parts if isinstance(p, C.Thinking))
    calls = [{"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.arguments}}
             for p in resp.parts if isinstance(p, C.ToolCall)]
    for p in resp.parts:
        if not isinstance(p, (C.Text, C.Thinking, C.ToolCall)):
            _dropped(p, "assistant")
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = thinking
    return {
        "id": _completion_id(resp.id, origin),
        "object": "chat.completion",
        "created": int(origin.now()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": _finish_reason(resp.stop_reason)}],
        "usage": _usage_body(resp.usage),
    }


# -- streams ---------------------------------------------------------------------------


def is_stream_end(data: bytes) -> bool:
    """
    C{[DONE]} on a line of its own, or a chunk with a finish reason (a
    string, where the other chunks have C{null}), written compact or with
    one space after the colon as every provider writes it (see the contract).
    """
    return (b"\ndata: [DONE]" in data or b'"finish_reason":"' in data or b'"finish_reason": "' in data
            or b"\ndata:[DONE]" in data)


def _sse(data: Any) -> bytes:
    return b"data: " + common.sse_json(data) + b"\n\n"


class StreamDecoder:
    """OpenAI chat.completion.chunk objects -> canonical stream events."""

    def __init__(self, *, origin: Origin = DEFAULT_ORIGIN) -> None:
        self._started = False
        self._calls: set[int] = set()

    def feed(self, data: dict[str, Any]) -> list[C.Event]:
        events: list[C.Event] = []
        if isinstance(data.get("error"), dict):
            err = data["error"]
            return [C.ErrorEvent(str(err.get("message", "upstream error")), str(err.get("type") or "server_error"),
                                 common.error_status(err.get("code"), err.get("type")))]
        if not self._started:
            self._started = True
            events.append(C.Start(str(data.get("id", "")), str(data.get("model", ""))))
        for choice in data.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                events.append(C.ThinkingDelta(str(delta["reasoning_content"])))
            if delta.get("content"):
                events.append(C.TextDelta(str(delta["content"])))
            for call in delta.get("tool_calls") or ():
                index = int(call.get("index", 0))
                fn = call.get("function") or {}
                if index not in self._calls:
                    self._calls.add(index)
                    events.append(C.ToolCallStart(index, str(call.get("id", "")), str(fn.get("name", ""))))
                if fn.get("arguments"):
                    events.append(C.ToolCallDelta(index, str(fn["arguments"])))
            if choice.get("finish_reason"):
                events.append(C.Finish(_FINISH_TO_CANON.get(choice["finish_reason"], C.STOP)))
        if data.get("usage"):
            events.append(C.UsageEvent(_usage(data["usage"])))
        return events


class StreamEncoder:
    """
    Canonical stream events -> C{chat.completion.chunk} SSE frames, ending
    with C{data: [DONE]}, or with an error frame and nothing after it. Every
    chunk carries C{origin}'s time when the encoder was built, and the
    upstream's id or, lacking one, an id from C{origin}.
    """

    def __init__(self, model: str, *, origin: Origin = DEFAULT_ORIGIN) -> None:
        self._model = model
        self._origin = origin
        self._id = ""
        self._created = int(origin.now())
        self._started = False
        self._calls: dict[int, int] = {}  # canonical tool index -> index in this stream's tool_calls
        self._next_call = 0
        self._failed = False

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return _sse({"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                     "model": self._model, "choices": choices, **extra})

    def _delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": finish_reason}])

    def feed(self, event: C.Event) -> bytes:
        if self._failed:
            return b""  # an error ended the stream
        out = b""
        if not self._started:
            self._started = True
            self._id = _completion_id(event.id if isinstance(event, C.Start) else "", self._origin)
            out = self._delta({"role": "assistant", "content": ""})
        if isinstance(event, C.TextDelta):
            return out + self._delta({"content": event.text})
        if isinstance(event, C.ThinkingDelta):
            return out + self._delta({"reasoning_content": event.text})
        if isinstance(event, C.ToolCallStart):
            self._calls[event.index] = index = self._next_call
            self._next_call += 1
            return out + self._delta({"tool_calls": [{"index": index, "id": event.id, "type": "function",
                                                      "function": {"name": event.name, "arguments": ""}}]})
        if isinstance(event, C.ToolCallDelta):
            index = self._calls.get(event.index)
            if index is None:
                log.debug("dropping arguments for tool call {index}, which never started", index=event.index)
                return out
            return out + self._delta({"tool_calls": [{"index": index, "function": {"arguments": event.arguments}}]})
        if isinstance(event, C.Finish):
            return out + self._delta({}, _finish_reason(event.stop_reason))
        if isinstance(event, C.UsageEvent):
            return out + self._chunk([], usage=_usage_body(event.usage))
        if isinstance(event, C.ErrorEvent):
            self._failed = True
            return out + _sse({"error": {"message": event.message, "type": event.type, "code": None}})
        return out  # a Start after the first event

    def close(self) -> bytes:
        """C{[DONE]}, unless the stream ended with an error (OpenAI sends none after one)."""
        return b"" if self._failed else b"data: [DONE]\n\n"
