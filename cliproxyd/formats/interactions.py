"""
Google's Interactions API (C{POST /v1beta/interactions}): requests with an
C{input} of steps (C{user_input}, C{model_output}, C{thought},
C{function_call}, C{function_result}) or plain text, answers with
C{steps} and C{usage}, and streams of named SSE events (C{interaction.created},
C{step.start}, C{step.delta}, C{step.stop}, C{interaction.completed},
C{error}). API revision 2026-05-20, as Google's SDK and CLIProxyAPI speak it.

A format module like the other four (see L{cliproxyd.formats.contract}):
an C{interactions-api-key} upstream gets a client's Interactions body as it
is, renamed; any other upstream gets it through the canonical model, and a
client of another format reaches an Interactions upstream the same way.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.logger import Logger

from cliproxyd.formats import canonical as C
from cliproxyd.formats import common
from cliproxyd.formats.common import DEFAULT_ORIGIN, Origin
from cliproxyd.modelnames import Reasoning, parse_reasoning

log = Logger(namespace="cliproxyd.formats.interactions")

NAME = "interactions"

#: The API revision sent upstream when the client names none (its own C{Api-Revision} header wins).
API_REVISION = b"2026-05-20"

_STEP_TYPES = ("user_input", "model_output", "thought", "function_call", "function_result")
_CHOICES = {"auto": "auto", "any": "required", "required": "required", "none": "none", "validated": "auto"}
_LEVELS = {"minimal": "minimal", "low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "UNAVAILABLE",
                 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def _model_name(model: str) -> str:
    """A model as the client named it, without Google's C{models/} resource prefix."""
    model = model.strip()
    return model[len("models/"):] if model.startswith("models/") and len(model) > len("models/") else model


def validate(data: Any) -> tuple[str, bool]:
    """
    The model and stream flag of an Interactions body. It names a C{model}
    (an C{agent} is Google's own, not one cliproxyd can route), and an
    C{input}: text, one step or content item, or an array of them.
    """
    data = common.body_object(data)
    if data.get("agent") is not None and data.get("model") is None:
        raise C.BadRequest("agent: agent interactions are not served; name a model")
    model = common.model_field(data, "model: a non-empty string is required")
    value = data.get("input")
    if value is None or (isinstance(value, (list, str)) and not value):
        raise C.BadRequest("input: text or a non-empty array of steps is required")
    if not isinstance(value, (str, list, dict)):
        raise C.BadRequest("input must be a string, an object or an array")
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, (dict, str)):
                raise C.BadRequest(f"input[{i}] must be an object or a string")
    stream = common.stream_flag(data, "stream must be true or false")
    common.optional(data, "system_instruction", (str, dict, list), "a string or content")
    common.optional(data, "tools", (list,), "an array")
    common.optional(data, "generation_config", (dict,), "an object")
    return _model_name(model), stream


set_model = common.set_model


def name_answer_model(data: dict[str, Any], model: str) -> bool:
    """An interaction names its model at the top; a stream's events inside C{interaction}."""
    return common.name_model_at(data, model, "model", "interaction")


def apply_reasoning(data: dict[str, Any], reasoning: Reasoning, model: str = "") -> None:
    """C{generation_config.thinking_level} from C{reasoning} (none: C{minimal}; auto: the field removed)."""
    config = dict(data.get("generation_config") or {})
    effort = reasoning.effort()
    if effort is None:
        config.pop("thinking_level", None)
    else:
        config["thinking_level"] = "minimal" if effort == "none" else _LEVELS.get(effort, "high")
    data["generation_config"] = config


# -- requests ---------------------------------------------------------------------


def _texts(value: Any) -> str:
    """The text of a system instruction or a step's content: a string, a part, or parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            return value["text"]
        return _texts(value.get("parts") or value.get("content") or "")
    if isinstance(value, list):
        return "".join(_texts(v) for v in value)
    return ""


def _content_in(value: Any, where: str) -> list[C.Part]:
    """A step's content (text, or text and image items) as canonical parts."""
    if isinstance(value, str):
        return [C.Text(value)] if value else []
    items = value if isinstance(value, list) else [value] if isinstance(value, dict) else None
    if items is None:
        raise C.BadRequest(f"{where} must be a string or an array of content")
    parts: list[C.Part] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            parts.append(C.Text(item))
            continue
        if not isinstance(item, dict):
            raise C.BadRequest(f"{where}[{i}] must be an object")
        kind = item.get("type") or ("text" if "text" in item else "")
        if kind == "text":
            text = item.get("text")
            if not isinstance(text, str):
                raise C.BadRequest(f"{where}[{i}].text must be a string")
            parts.append(C.Text(text))
        elif kind == "image":
            uri = item.get("uri") or item.get("url") or ""
            data = item.get("data") or ""
            if not isinstance(uri, str) or not isinstance(data, str):
                raise C.BadRequest(f"{where}[{i}]: an image's uri and data are strings")
            parts.append(C.Image(url=uri, data=data, media_type=str(item.get("mime_type") or "")))
        else:
            log.debug("dropped an Interactions content item of type {kind!r}", kind=kind)
    return parts


def _arguments(value: Any, where: str) -> str:
    if value is None:
        return "{}"
    if isinstance(value, str):
        return common.arguments_text(value, where)
    if not isinstance(value, dict):
        raise C.BadRequest(f"{where} must be an object")
    return common.compact_json(value)


def _result(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, dict) and v.get("type") == "text" for v in value):
        return "".join(str(v.get("text") or "") for v in value)
    return common.compact_json(value)


def _step_in(step: Any, where: str, messages: list[C.Message]) -> None:
    """Append one input step (or turn, or content item) to C{messages}, merging turns of one role."""
    if isinstance(step, str):
        role, parts = "user", [C.Text(step)]
    else:
        kind = step.get("type")
        if kind in ("user_input", "model_output"):
            role = "user" if kind == "user_input" else "assistant"
            parts = _content_in(step.get("content") or [], f"{where}.content")
        elif kind == "thought":
            role = "assistant"
            parts = [C.Thinking(_texts(step.get("summary") or step.get("content") or ""),
                                str(step.get("signature") or ""))]
        elif kind == "function_call":
            role = "assistant"
            name = step.get("name")
            if not isinstance(name, str) or not name:
                raise C.BadRequest(f"{where}.name: a function call names its function")
            parts = [C.ToolCall(str(step.get("id") or step.get("call_id") or ""), name,
                                _arguments(step.get("arguments"), f"{where}.arguments"))]
        elif kind == "function_result":
            role = "user"
            parts = [C.ToolResult(str(step.get("call_id") or step.get("id") or ""),
                                  _result(step.get("result")), bool(step.get("is_error")))]
        elif "role" in step:  # a turn, as the API's first revision had them
            role = "assistant" if step.get("role") == "model" else "user"
            parts = _content_in(step.get("content") or [], f"{where}.content")
        else:  # a bare content item stands for the user's
            role, parts = "user", _content_in(step, where)
    if not parts:
        return
    if messages and messages[-1].role == role:
        messages[-1] = C.Message(role, messages[-1].parts + tuple(parts))
    else:
        messages.append(C.Message(role, tuple(parts)))


def _tools_in(raw: Any) -> tuple[C.Tool, ...]:
    tools: list[C.Tool] = []
    for i, tool in enumerate(raw or ()):
        if not isinstance(tool, dict):
            raise C.BadRequest(f"tools[{i}] must be an object")
        declarations = tool.get("function_declarations") or ([tool] if tool.get("type", "function") == "function"
                                                            else [])
        for d in declarations:
            name = d.get("name") if isinstance(d, dict) else None
            if not isinstance(name, str) or not name:
                raise C.BadRequest(f"tools[{i}].name: a function tool names its function")
            params = d.get("parameters")
            tools.append(C.Tool(name, str(d.get("description") or ""), params if isinstance(params, dict) else {}))
    return tuple(tools)


def _tool_choice_in(value: Any) -> str | None:
    if isinstance(value, str):
        return _CHOICES.get(value.lower())
    if isinstance(value, dict):
        allowed = value.get("allowed_tools")
        if isinstance(allowed, dict):
            names = allowed.get("tools")
            if isinstance(names, list) and len(names) == 1 and isinstance(names[0], str):
                return names[0]
            return _CHOICES.get(str(allowed.get("mode") or "").lower())
    return None


def request_to_canonical(data: dict[str, Any]) -> C.Request:
    model, stream = validate(data)
    common.shallow(data)
    raw = data["input"]
    messages: list[C.Message] = []
    for i, step in enumerate(raw if isinstance(raw, list) else [raw]):
        _step_in(step, f"input[{i}]" if isinstance(raw, list) else "input", messages)
    if not messages:
        raise C.BadRequest("input: nothing to answer")
    config = data.get("generation_config") or {}
    stop = config.get("stop_sequences") or ()
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
        raise C.BadRequest("generation_config.stop_sequences must be an array of strings")
    level = config.get("thinking_level")
    return C.Request(
        model=model,
        messages=tuple(messages),
        system=_texts(data.get("system_instruction") or ""),
        tools=_tools_in(data.get("tools")),
        tool_choice=_tool_choice_in(config.get("tool_choice")),
        max_tokens=common.positive_int(config, "max_output_tokens"),
        temperature=common.number(config, "temperature"),
        top_p=common.number(config, "top_p"),
        stop=tuple(stop),
        stream=stream,
        reasoning=parse_reasoning(level) if isinstance(level, str) else None,
    )


def _content_out(parts: tuple[C.Part, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, C.Text):
            out.append({"type": "text", "text": p.text})
        elif isinstance(p, C.Image):
            out.append({"type": "image", "uri": p.url} if p.url else
                       {"type": "image", "data": p.data, "mime_type": p.media_type})
    return out


def _steps_out(messages: tuple[C.Message, ...]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for m in messages:
        pending: list[C.Part] = []

        def flush() -> None:
            if pending:
                content = _content_out(tuple(pending))
                if content:
                    steps.append({"type": "user_input" if m.role == "user" else "model_output", "content": content})
                pending.clear()

        for p in m.parts:
            if isinstance(p, C.ToolCall):
                flush()
                names[p.id] = p.name
                steps.append({"type": "function_call", "id": p.id, "name": p.name,
                              "arguments": common.arguments_object(p.arguments)})
            elif isinstance(p, C.ToolResult):
                flush()
                step: dict[str, Any] = {"type": "function_result", "call_id": p.call_id, "result": p.content}
                if p.call_id in names:
                    step["name"] = names[p.call_id]
                if p.is_error:
                    step["is_error"] = True
                steps.append(step)
            elif isinstance(p, C.Thinking):
                flush()
                thought: dict[str, Any] = {"type": "thought", "summary": [{"type": "text", "text": p.text}]}
                if p.signature:
                    thought["signature"] = p.signature
                steps.append(thought)
            else:
                pending.append(p)
        flush()
    return steps


def request_from_canonical(req: C.Request, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "input": _steps_out(req.messages)}
    if req.system:
        body["system_instruction"] = req.system
    if req.tools:
        body["tools"] = [{"type": "function", "name": t.name, "description": t.description,
                          "parameters": common.tool_schema(t)} for t in req.tools]
    config: dict[str, Any] = {}
    common.set_present(config, temperature=req.temperature, top_p=req.top_p, max_output_tokens=req.max_tokens)
    if req.stop:
        config["stop_sequences"] = list(req.stop)
    if req.tool_choice is not None:
        mode = {"required": "any"}.get(req.tool_choice, req.tool_choice)
        if mode in ("auto", "any", "none"):
            config["tool_choice"] = mode
        else:
            config["tool_choice"] = {"allowed_tools": {"mode": "any", "tools": [req.tool_choice]}}
    if config:
        body["generation_config"] = config
    if req.reasoning is not None:
        apply_reasoning(body, req.reasoning, model)
    if req.stream:
        body["stream"] = True
    return body


# -- answers ----------------------------------------------------------------------


def _int(raw: dict[str, Any], *keys: str) -> int:
    for key in keys:
        value = raw.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def _usage_in(raw: Any) -> C.Usage:
    if not isinstance(raw, dict):
        return C.Usage()
    thoughts = _int(raw, "total_thought_tokens", "reasoning_tokens")
    return C.Usage(_int(raw, "total_input_tokens", "input_tokens"),
                   _int(raw, "total_output_tokens", "output_tokens") + thoughts,
                   _int(raw, "total_cached_tokens", "cached_tokens"), thoughts)


def _usage_out(usage: C.Usage) -> dict[str, int]:
    return common.google_usage(usage, "total_input_tokens", "total_output_tokens", "total_tokens",
                               "total_thought_tokens", "total_cached_tokens")


def _interaction(data: dict[str, Any]) -> dict[str, Any]:
    inner = data.get("interaction")
    return inner if isinstance(inner, dict) else data


def _stop(interaction: dict[str, Any], calls: bool) -> str:
    if calls:
        return C.TOOL_CALLS
    reason = str(interaction.get("finish_reason") or "").lower()
    if interaction.get("status") == "incomplete" or reason in ("max_tokens", "length"):
        return C.LENGTH
    if reason in ("safety", "blocklist", "prohibited_content"):
        return C.CONTENT_FILTER
    return C.STOP


def response_to_canonical(data: dict[str, Any], *, origin: Origin = DEFAULT_ORIGIN) -> C.Response:
    """A whole interaction; ValueError when its steps are malformed (the upstream's fault)."""
    interaction = _interaction(data)
    steps = interaction.get("steps")
    if steps is None:
        steps = interaction.get("outputs") or []
    if not isinstance(steps, list):
        raise ValueError("a malformed interaction: steps is not an array")
    parts: list[C.Part] = []
    for step in steps:
        if not isinstance(step, dict):
            raise ValueError("a malformed interaction: a step is not an object")
        kind = step.get("type")
        if kind == "function_call":
            parts.append(C.ToolCall(str(step.get("id") or step.get("call_id") or "call_" + origin.new_id()[:24]),
                                    str(step.get("name") or ""), common.compact_json(step.get("arguments") or {})))
        elif kind == "thought":
            parts.append(C.Thinking(_texts(step.get("summary") or step.get("content") or ""),
                                    str(step.get("signature") or "")))
        elif kind == "text":  # an output of the API's first revision
            parts.append(C.Text(str(step.get("text") or "")))
        else:
            try:
                parts.extend(p for p in _content_in(step.get("content") or [], "steps") if isinstance(p, C.Text))
            except C.BadRequest as e:
                raise ValueError(f"a malformed interaction: {e}") from None
    calls = any(isinstance(p, C.ToolCall) for p in parts)
    return C.Response(id=str(interaction.get("id") or ""), model=str(interaction.get("model") or ""),
                      parts=tuple(parts), stop_reason=_stop(interaction, calls),
                      usage=_usage_in(interaction.get("usage") or data.get("usage")))


def _timestamp(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


def response_from_canonical(resp: C.Response, model: str, *, origin: Origin = DEFAULT_ORIGIN) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for p in resp.parts:
        if isinstance(p, C.Text):
            if steps and steps[-1]["type"] == "model_output":
                steps[-1]["content"].append({"type": "text", "text": p.text})
            else:
                steps.append({"type": "model_output", "content": [{"type": "text", "text": p.text}]})
        elif isinstance(p, C.Thinking):
            thought: dict[str, Any] = {"type": "thought", "summary": [{"type": "text", "text": p.text}]}
            if p.signature:
                thought["signature"] = p.signature
            steps.append(thought)
        elif isinstance(p, C.ToolCall):
            steps.append({"type": "function_call", "id": p.id, "name": p.name,
                          "arguments": common.arguments_object(p.arguments)})
    stamp = _timestamp(origin.now())
    return {"id": resp.id or origin.new_id(), "object": "interaction", "model": model,
            "status": "incomplete" if resp.stop_reason == C.LENGTH else "completed",
            "role": "model", "created": stamp, "updated": stamp, "steps": steps, "usage": _usage_out(resp.usage)}


# -- streams ----------------------------------------------------------------------


def is_stream_end(data: bytes) -> bool:
    """C{interaction.completed}, as an event's type (compact or spaced JSON) or its SSE event name."""
    return (b'"event_type":"interaction.completed"' in data or b'"event_type": "interaction.completed"' in data
            or b"\nevent: interaction.completed" in data or b"\nevent:interaction.completed" in data)


def _error_in(err: Any) -> C.ErrorEvent:
    err = err if isinstance(err, dict) else {"message": str(err or "")}
    code = err.get("code")
    return C.ErrorEvent(str(err.get("message") or "upstream error"), str(err.get("status") or code or "server_error"),
                        common.error_status(code, err.get("status")))


class StreamDecoder:
    """Interactions SSE events -> canonical events; the usage and the finish come with C{interaction.completed}."""

    def __init__(self, *, origin: Origin = DEFAULT_ORIGIN) -> None:
        self._origin = origin
        self._started = False
        self._finished = False
        self._calls: dict[int, int] = {}  # step index -> tool call index
        self._current_call = -1

    def _start(self, interaction: dict[str, Any], events: list[C.Event]) -> None:
        if not self._started:
            self._started = True
            events.append(C.Start(str(interaction.get("id") or ""), str(interaction.get("model") or "")))

    def feed(self, data: dict[str, Any]) -> list[C.Event]:
        kind = data.get("event_type")
        if kind == "error" or (kind is None and isinstance(data.get("error"), dict)):
            return [_error_in(data.get("error"))]
        events: list[C.Event] = []
        if kind in ("interaction.created", "interaction.start"):
            self._start(_interaction(data), events)
        elif kind == "step.start":
            self._start({}, events)
            step = data.get("step") or {}
            if step.get("type") == "function_call":
                index = len(self._calls)
                self._calls[int(data.get("index") or 0)] = self._current_call = index
                call_id = str(step.get("id") or step.get("call_id") or "call_" + self._origin.new_id()[:24])
                events.append(C.ToolCallStart(index, call_id, str(step.get("name") or "")))
                arguments = step.get("arguments")
                if isinstance(arguments, dict) and arguments:
                    events.append(C.ToolCallDelta(index, common.compact_json(arguments)))
        elif kind in ("step.delta", "content.delta"):
            self._start({}, events)
            delta = data.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text" and delta.get("text"):
                events.append(C.TextDelta(str(delta["text"])))
            elif dtype in ("thought_summary", "thought"):
                text = _texts(delta.get("content") or delta.get("text") or "")
                if text:
                    events.append(C.ThinkingDelta(text))
            elif dtype == "arguments_delta":
                index = self._calls.get(int(data.get("index") or 0), self._current_call)
                if index >= 0 and delta.get("arguments"):
                    events.append(C.ToolCallDelta(index, str(delta["arguments"])))
        elif kind in ("interaction.completed", "interaction.complete") and not self._finished:
            self._finished = True
            interaction = _interaction(data)
            self._start(interaction, events)
            events.append(C.Finish(_stop(interaction, bool(self._calls))))
            if isinstance(interaction.get("usage"), dict):
                events.append(C.UsageEvent(_usage_in(interaction["usage"])))
        return events


def _event(name: str, body: dict[str, Any]) -> bytes:
    body["event_type"] = name
    return b"event: " + name.encode("ascii") + b"\ndata: " + common.sse_json(body) + b"\n\n"


class StreamEncoder:
    """Canonical events -> the Interactions SSE stream: one step per run of text, thought or function call."""

    def __init__(self, model: str, *, origin: Origin = DEFAULT_ORIGIN) -> None:
        self._model = model
        self._origin = origin
        self._id = ""
        self._created = False
        self._step = -1  # the open step's index, -1 when none is open
        self._steps = 0
        self._open_kind = ""
        self._call_steps: dict[int, int] = {}  # tool call index -> step index
        self._finish = C.STOP
        self._usage: C.Usage | None = None
        self._closed = False

    def _head(self) -> bytes:
        if self._created:
            return b""
        self._created = True
        self._id = self._id or self._origin.new_id()
        interaction = {"id": self._id, "object": "interaction", "model": self._model, "status": "in_progress"}
        return (_event("interaction.created", {"interaction": interaction})
                + _event("interaction.status_update", {"interaction_id": self._id, "status": "in_progress"}))

    def _stop_step(self) -> bytes:
        if self._step < 0:
            return b""
        out = _event("step.stop", {"index": self._step})
        self._step, self._open_kind = -1, ""
        return out

    def _open(self, kind: str, step: dict[str, Any]) -> bytes:
        out = self._stop_step()
        self._step, self._open_kind = self._steps, kind
        self._steps += 1
        return out + _event("step.start", {"index": self._step, "step": {"type": kind, **step}})

    def feed(self, event: C.Event) -> bytes:
        if self._closed:
            return b""
        if isinstance(event, C.Start):
            self._id = self._id or event.id
            return self._head()
        if isinstance(event, C.Finish):
            self._finish = event.stop_reason
            return b""
        if isinstance(event, C.UsageEvent):
            self._usage = event.usage
            return b""
        if isinstance(event, C.ErrorEvent):
            self._closed = True
            return self._head() + stream_error_event(event.message, event.status or 500)
        out = self._head()
        if isinstance(event, C.ToolCallStart):
            out += self._open("function_call", {"id": event.id, "name": event.name, "arguments": {}})
            self._call_steps[event.index] = self._step
            return out
        if isinstance(event, C.ToolCallDelta):
            index = self._call_steps.get(event.index, self._step)
            if not event.arguments or index < 0:
                return out
            return out + _event("step.delta", {"index": index,
                                               "delta": {"type": "arguments_delta", "arguments": event.arguments}})
        if not event.text:
            return out
        if isinstance(event, C.ThinkingDelta):
            if self._open_kind != "thought":
                out += self._open("thought", {})
            return out + _event("step.delta", {"index": self._step, "delta": {
                "type": "thought_summary", "content": {"type": "text", "text": event.text}}})
        if self._open_kind != "model_output":
            out += self._open("model_output", {})
        return out + _event("step.delta", {"index": self._step, "delta": {"type": "text", "text": event.text}})

    def close(self) -> bytes:
        if self._closed:
            return b""
        self._closed = True
        out = self._head() + self._stop_step()
        interaction: dict[str, Any] = {"id": self._id, "object": "interaction", "model": self._model,
                                       "status": "incomplete" if self._finish == C.LENGTH else "completed"}
        if self._usage is not None:
            interaction["usage"] = _usage_out(self._usage)
        return out + _event("interaction.completed", {"interaction": interaction})


# -- errors -----------------------------------------------------------------------


def error_body(status: int, message: str, extra: dict[str, Any] | None = None) -> bytes:
    """
    Google's error shape (C{code} the HTTP status, C{status} its name). Of
    C{extra}, a machine-readable C{code} goes where Google puts a reason, in
    an ErrorInfo detail (the rest joins the error object).
    """
    name = _STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
    extra = dict(extra or {})
    reason = extra.pop("code", None)
    extra.pop("type", None)  # an OpenAI-style type: Google's status says it
    if reason:
        extra["details"] = [*extra.get("details", ()), {"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                                        "domain": "cliproxyd", "reason": str(reason).upper()}]
    return common.error_json({"code": status, "message": message, "status": name}, extra)


def stream_error_event(message: str, status: int = 500) -> bytes:
    """The stream's C{error} event (Google's SDK reads C{error.code} as a string)."""
    return _event("error", {"error": {"code": str(status), "message": message}})
