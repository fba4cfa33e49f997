"""
OpenAI Chat Completions: request decoding and error rendering.

Requests are parsed once, to learn the model and whether to stream, and kept
as raw bytes: when the upstream model is the one the client asked for, those
bytes go upstream untouched.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import field, frozen

from cliproxyd.formats import canonical as C
from cliproxyd.modelnames import parse_model, suffix_effort


BadRequest = C.BadRequest


@frozen
class ChatRequest:
    model: str
    stream: bool
    raw: bytes = field(repr=False)
    data: dict[str, Any] = field(repr=False, eq=False)

    def body_for(self, upstream_model: str) -> bytes:
        """
        The upstream request body: the client's bytes, with the model renamed
        if it must be. A thinking suffix (C{model(high)}, C{model(8192)}) is
        taken off the name and becomes C{reasoning_effort}, overriding the
        body's own.
        """
        if upstream_model == self.model and not upstream_model.endswith(")"):
            return self.raw
        name = parse_model(upstream_model)
        data = dict(self.data)
        data["model"] = name.base
        effort = suffix_effort(name.suffix) if name.suffix else None
        if effort is not None:
            data["reasoning_effort"] = effort
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_request(raw: bytes) -> ChatRequest:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("'model' is required and must be a non-empty string")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty array")
    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false")
    return ChatRequest(model=model, stream=stream, raw=raw, data=data)


def error_body(message: str, type: str, code: str | None = None) -> bytes:
    err: dict[str, Any] = {"message": message, "type": type, "code": code}
    return json.dumps({"error": err}, ensure_ascii=False).encode("utf-8")


def stream_error_event(message: str, type: str = "server_error", code: str | None = None) -> bytes:
    """An error delivered inside an SSE stream, after the status was already sent."""
    return b"data: " + error_body(message, type, code) + b"\n\n"


def is_error_body(body: bytes) -> bool:
    """Whether C{body} is an OpenAI-shaped error object (so it can be passed on as it is)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("error"), dict)


def models_body(models: list[tuple[str, str]], created: int) -> bytes:
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": owner}
        for name, owner in models
    ]
    return json.dumps({"object": "list", "data": data}).encode("utf-8")


# -- translation: the canonical model <-> OpenAI Chat Completions ---------------------

_FINISH_TO_CANON = {"stop": C.STOP, "length": C.LENGTH, "tool_calls": C.TOOL_CALLS,
                    "function_call": C.TOOL_CALLS, "content_filter": C.CONTENT_FILTER}


def from_canonical(req: C.Request, model: str) -> dict[str, Any]:
    """An OpenAI Chat Completions request body for C{req}, asking for C{model}."""
    messages: list[dict[str, Any]] = []
    if req.system:
        messages.append({"role": "system", "content": req.system})
    for m in req.messages:
        if m.role == "assistant":
            text = "".join(p.text for p in m.parts if isinstance(p, C.Text))
            calls = [
                {"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.arguments or "{}"}}
                for p in m.parts
                if isinstance(p, C.ToolCall)
            ]
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
                url = p.url or f"data:{p.media_type};base64,{p.data}"
                content.append({"type": "image_url", "image_url": {"url": url}})
        if content:
            if all(c["type"] == "text" for c in content):
                messages.append({"role": "user", "content": "".join(c["text"] for c in content)})
            else:
                messages.append({"role": "user", "content": content})
    body: dict[str, Any] = {"model": model, "messages": messages}
    if req.tools:
        body["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.parameters or {"type": "object", "properties": {}}}}
            for t in req.tools
        ]
    if req.tool_choice in ("auto", "none", "required"):
        body["tool_choice"] = req.tool_choice
    elif req.tool_choice:
        body["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice}}
    for key, value in (("max_tokens", req.max_tokens), ("temperature", req.temperature), ("top_p", req.top_p)):
        if value is not None:
            body[key] = value
    if req.stop:
        body["stop"] = list(req.stop)
    effort = req.reasoning.effort() if req.reasoning is not None else None
    if effort:
        body["reasoning_effort"] = effort
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _usage(raw: Any) -> C.Usage:
    if not isinstance(raw, dict):
        return C.Usage()
    cached = (raw.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (raw.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return C.Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0),
                   int(cached), int(reasoning))


def response_to_canonical(data: dict[str, Any]) -> C.Response:
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
    return C.Response(
        id=str(data.get("id", "")),
        model=str(data.get("model", "")),
        parts=tuple(parts),
        stop_reason=_FINISH_TO_CANON.get(choice.get("finish_reason") or "stop", C.STOP),
        usage=_usage(data.get("usage")),
    )


class StreamDecoder:
    """OpenAI chat.completion.chunk objects -> canonical stream events."""

    def __init__(self) -> None:
        self._started = False
        self._calls: set[int] = set()

    def feed(self, chunk: dict[str, Any]) -> list[C.Event]:
        events: list[C.Event] = []
        if isinstance(chunk.get("error"), dict):
            err = chunk["error"]
            return [C.ErrorEvent(str(err.get("message", "upstream error")), str(err.get("type") or "server_error"))]
        if not self._started:
            self._started = True
            events.append(C.Start(str(chunk.get("id", "")), str(chunk.get("model", ""))))
        for choice in chunk.get("choices") or ():
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
        if chunk.get("usage"):
            events.append(C.UsageEvent(_usage(chunk["usage"])))
        return events
