"""
Anthropic Messages: requests in, answers and stream events out, errors.

Decoding validates the client's body and turns it into the canonical model;
encoding renders canonical answers and events as Claude's JSON and SSE.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from twisted.logger import Logger

from cliproxyd.formats import canonical as C
from cliproxyd.modelnames import Reasoning

log = Logger(namespace="cliproxyd.formats.claude")

_STOP_TO_CLAUDE = {C.STOP: "end_turn", C.LENGTH: "max_tokens", C.TOOL_CALLS: "tool_use", C.CONTENT_FILTER: "refusal"}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _block(block: Any, where: str) -> C.Part | None:
    if not isinstance(block, dict):
        raise C.BadRequest(f"{where} must be an object")
    kind = block.get("type")
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise C.BadRequest(f"{where}.text must be a string")
        return C.Text(block["text"])
    if kind == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            return C.Image(data=str(source.get("data", "")), media_type=str(source.get("media_type", "")))
        if source.get("type") == "url":
            return C.Image(url=str(source.get("url", "")))
        raise C.BadRequest(f"{where}.source must be base64 or url")
    if kind == "tool_use":
        return C.ToolCall(str(block.get("id", "")), str(block.get("name", "")),
                          json.dumps(block.get("input") or {}, separators=(",", ":")))
    if kind == "tool_result":
        return C.ToolResult(str(block.get("tool_use_id", "")), _text_of(block.get("content", "")),
                            bool(block.get("is_error", False)))
    if kind == "thinking":
        return C.Thinking(str(block.get("thinking", "")), str(block.get("signature", "")))
    log.debug("dropping a {kind} block the canonical model cannot carry", kind=kind)
    return None


def decode_request(raw: bytes) -> C.Request:
    """Validate a Messages request body and turn it into the canonical model."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise C.BadRequest(f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise C.BadRequest("the body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise C.BadRequest("model: a non-empty string is required")
    raw_messages = data.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise C.BadRequest("messages: a non-empty array is required")
    messages = []
    for i, m in enumerate(raw_messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise C.BadRequest(f"messages[{i}]: an object with role user or assistant is required")
        content = m.get("content")
        if isinstance(content, str):
            parts: list[C.Part] = [C.Text(content)]
        elif isinstance(content, list):
            parts = [p for j, b in enumerate(content) if (p := _block(b, f"messages[{i}].content[{j}]"))]
        else:
            raise C.BadRequest(f"messages[{i}].content must be a string or an array")
        messages.append(C.Message(m["role"], tuple(parts)))
    system = data.get("system", "")
    if not isinstance(system, (str, list)):
        raise C.BadRequest("system must be a string or an array of text blocks")
    tools = []
    for i, t in enumerate(data.get("tools") or ()):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise C.BadRequest(f"tools[{i}]: an object with a name is required")
        tools.append(C.Tool(t["name"], str(t.get("description", "")), t.get("input_schema") or {}))
    choice = data.get("tool_choice")
    tool_choice = None
    if isinstance(choice, dict):
        tool_choice = {"auto": "auto", "any": "required", "none": "none"}.get(choice.get("type"))
        if choice.get("type") == "tool":
            tool_choice = str(choice.get("name", ""))
    max_tokens = data.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise C.BadRequest("max_tokens must be a positive integer")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise C.BadRequest("stream must be true or false")
    reasoning = None
    thinking = data.get("thinking")
    if isinstance(thinking, dict):
        budget = thinking.get("budget_tokens")
        if thinking.get("type") == "enabled" and isinstance(budget, int) and not isinstance(budget, bool):
            reasoning = Reasoning(budget=budget)
        elif thinking.get("type") == "adaptive":
            reasoning = Reasoning(level="auto")
        elif thinking.get("type") == "disabled":
            reasoning = Reasoning(level="none")
    stop = data.get("stop_sequences") or ()
    return C.Request(
        model=model,
        messages=tuple(messages),
        system=_text_of(system),
        tools=tuple(tools),
        tool_choice=tool_choice,
        max_tokens=max_tokens,
        temperature=data.get("temperature"),
        top_p=data.get("top_p"),
        stop=tuple(str(s) for s in stop) if isinstance(stop, list) else (),
        stream=stream,
        reasoning=reasoning,
    )


def _message_id(upstream_id: str) -> str:
    return upstream_id if upstream_id.startswith("msg_") else "msg_" + (upstream_id or uuid.uuid4().hex)


def encode_response(resp: C.Response, model: str) -> bytes:
    """A whole canonical answer as a Claude Messages response body."""
    content: list[dict[str, Any]] = []
    for p in resp.parts:
        if isinstance(p, C.Thinking):
            content.append({"type": "thinking", "thinking": p.text, "signature": p.signature})
        elif isinstance(p, C.Text):
            content.append({"type": "text", "text": p.text})
        elif isinstance(p, C.ToolCall):
            content.append({"type": "tool_use", "id": p.id, "name": p.name, "input": _arguments(p.arguments)})
    body = {
        "id": _message_id(resp.id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _STOP_TO_CLAUDE.get(resp.stop_reason, "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": resp.usage.input_tokens,
            "output_tokens": resp.usage.output_tokens,
            "cache_read_input_tokens": resp.usage.cached_tokens,
        },
    }
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _arguments(text: str) -> Any:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _event(name: str, data: dict[str, Any]) -> bytes:
    # ASCII escapes: a client that splits lines on U+2028 or U+0085 (as
    # str.splitlines does) must still see one data line per event.
    return b"event: " + name.encode() + b"\ndata: " + json.dumps(data).encode("ascii") + b"\n\n"


class StreamEncoder:
    """Canonical stream events -> Claude's SSE events (message_start ... message_stop)."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._started = False
        self._block: int | None = None  # index of the open content block
        self._kind = ""  # "text" | "thinking" | "tool"
        self._next = 0
        self._tools: dict[int, int] = {}  # canonical tool index -> block index
        self._stop = C.STOP
        self._usage = C.Usage()
        self._closed = False

    def _start(self, msg_id: str = "") -> bytes:
        self._started = True
        return _event("message_start", {"type": "message_start", "message": {
            "id": _message_id(msg_id), "type": "message", "role": "assistant", "model": self._model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0}}})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._block, self._kind = self._next, kind
        self._next += 1
        return out + _event("content_block_start", {"type": "content_block_start", "index": self._block,
                                                    "content_block": block})

    def _close_block(self) -> bytes:
        if self._block is None:
            return b""
        index, self._block = self._block, None
        return _event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def feed(self, event: C.Event) -> bytes:
        out = b"" if self._started or isinstance(event, C.Start) else self._start()
        if isinstance(event, C.Start):
            return out + (b"" if self._started else self._start(event.id))
        if isinstance(event, C.TextDelta):
            if self._block is None or self._kind != "text":
                out += self._open("text", {"type": "text", "text": ""})
            return out + self._delta(self._block, {"type": "text_delta", "text": event.text})
        if isinstance(event, C.ThinkingDelta):
            if self._block is None or self._kind != "thinking":
                out += self._open("thinking", {"type": "thinking", "thinking": ""})
            return out + self._delta(self._block, {"type": "thinking_delta", "thinking": event.text})
        if isinstance(event, C.ToolCallStart):
            out += self._open("tool", {"type": "tool_use", "id": event.id, "name": event.name, "input": {}})
            self._tools[event.index] = self._block
            return out
        if isinstance(event, C.ToolCallDelta):
            index = self._tools.get(event.index)
            if index is None:
                return out
            return out + self._delta(index, {"type": "input_json_delta", "partial_json": event.arguments})
        if isinstance(event, C.Finish):
            self._stop = event.stop_reason
        elif isinstance(event, C.UsageEvent):
            self._usage = event.usage
        elif isinstance(event, C.ErrorEvent):
            self._closed = True
            return out + stream_error_event(event.message)
        return out

    def close(self) -> bytes:
        """The closing events, once the upstream stream has ended cleanly."""
        if self._closed:
            return b""
        self._closed = True
        out = b"" if self._started else self._start()
        out += self._close_block()
        out += _event("message_delta", {"type": "message_delta",
                                        "delta": {"stop_reason": _STOP_TO_CLAUDE.get(self._stop, "end_turn"),
                                                  "stop_sequence": None},
                                        "usage": {"output_tokens": self._usage.output_tokens,
                                                  "input_tokens": self._usage.input_tokens}})
        return out + _event("message_stop", {"type": "message_stop"})


_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}


def error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, message: str, extra: dict[str, Any] | None = None) -> bytes:
    err: dict[str, Any] = {"type": error_type(status), "message": message}
    if extra:
        err.update(extra)
    return json.dumps({"type": "error", "error": err}, ensure_ascii=False).encode("utf-8")


def stream_error_event(message: str, status: int = 500) -> bytes:
    return _event("error", {"type": "error", "error": {"type": error_type(status), "message": message}})
