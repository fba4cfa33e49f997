"""
Anthropic Messages (C{"claude"}): requests, answers, streams, errors, counts.

Decoding validates a client's body and turns it into the canonical model;
encoding renders canonical requests, answers and events as Claude's JSON and
SSE (see L{cliproxyd.formats} for the contract).

Usage: Claude counts cache reads and cache writes apart from C{input_tokens};
the canonical C{input_tokens} counts every prompt token, as OpenAI's
C{prompt_tokens} does. So decoding adds both cache counts to the input, and
encoding reports the input less the cached tokens.

Thinking: a level or budget becomes C{{"type": "enabled", "budget_tokens"}}
with at least Claude's minimum of 1024; "auto" becomes the medium level's
budget (Claude's "adaptive" mode is accepted only by its newest models);
"none" becomes C{{"type": "disabled"}}. C{max_tokens} must exceed the budget:
when it does not, it is raised to the budget plus L{ANSWER_HEADROOM}.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from attrs import Factory, define
from twisted.logger import Logger

from cliproxyd.formats import canonical as C
from cliproxyd.formats import common
from cliproxyd.formats.common import DEFAULT_ORIGIN, Origin
from cliproxyd.modelnames import LEVEL_BUDGETS, Reasoning

log = Logger(namespace="cliproxyd.formats.claude")

NAME = "claude"

#: Claude requires max_tokens; this is asked when the request did not say.
DEFAULT_MAX_TOKENS = 32000
#: Claude's smallest thinking budget.
MIN_BUDGET = 1024
#: The budget asked for "auto" thinking.
AUTO_BUDGET = LEVEL_BUDGETS["medium"]
#: Room left for the answer when max_tokens must be raised above a thinking budget.
ANSWER_HEADROOM = 4096

_STOP_TO_CLAUDE = {C.STOP: "end_turn", C.LENGTH: "max_tokens", C.TOOL_CALLS: "tool_use", C.CONTENT_FILTER: "refusal"}
_STOP_TO_CANON = {"end_turn": C.STOP, "stop_sequence": C.STOP, "pause_turn": C.STOP, "max_tokens": C.LENGTH,
                  "model_context_window_exceeded": C.LENGTH, "tool_use": C.TOOL_CALLS, "refusal": C.CONTENT_FILTER}


# -- requests: a client body -> the canonical model ------------------------------------


def _text_of(content: Any, where: str = "") -> str:
    """
    The text of a string or of an array of blocks (the text blocks' text).
    With C{where} (a request's field), anything else is a BadRequest naming it.
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, b in enumerate(content):
            if not isinstance(b, dict) or b.get("type") != "text":
                continue
            text = b.get("text", "")
            if not isinstance(text, str):
                if where:
                    raise C.BadRequest(f"{where}[{j}].text must be a string")
                continue
            texts.append(text)
        return "".join(texts)
    if where and content is not None:
        raise C.BadRequest(f"{where} must be a string or an array")
    return ""


def _string(block: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    """C{block[key]}, a string (non-empty if C{required}; absent is empty if not)."""
    value = block.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise C.BadRequest(f"{where}.{key} must be a {'non-empty ' if required else ''}string")
    return value


def _image(source: Any, where: str) -> C.Image:
    if not isinstance(source, dict):
        raise C.BadRequest(f"{where} must be an object")
    if source.get("type") == "base64":
        return C.Image(data=_string(source, "data", where), media_type=_string(source, "media_type", where))
    if source.get("type") == "url":
        url = _string(source, "url", where)
        if not common.web_url(url):
            raise C.BadRequest(f"{where}.url must be an http(s) URL")
        return C.Image(url=url)
    raise C.BadRequest(f"{where} must be base64 or url")


def _block(block: Any, where: str, strict: bool = True) -> C.Part | None:
    """
    One content block. C{strict} (a client's request) refuses fields of the
    wrong type; an upstream's answer (not strict) is read as it comes.
    """
    if not isinstance(block, dict):
        raise C.BadRequest(f"{where} must be an object")
    kind = block.get("type")
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise C.BadRequest(f"{where}.text must be a string")
        return C.Text(block["text"])
    if kind == "image":
        return _image(block.get("source"), f"{where}.source")
    if kind == "tool_use":
        tool_input = block.get("input")
        if strict:
            _string(block, "id", where)
            _string(block, "name", where)
            if tool_input is not None and not isinstance(tool_input, dict):
                raise C.BadRequest(f"{where}.input must be an object")
        return C.ToolCall(str(block.get("id", "")), str(block.get("name", "")), common.compact_json(tool_input or {}))
    if kind == "tool_result":
        is_error = block.get("is_error", False)
        if strict:
            _string(block, "tool_use_id", where)
            if is_error is not None and not isinstance(is_error, bool):
                raise C.BadRequest(f"{where}.is_error must be true or false")
        content = _text_of(block.get("content", ""), f"{where}.content" if strict else "")
        return C.ToolResult(str(block.get("tool_use_id", "")), content, bool(is_error))
    if kind == "thinking":
        if strict:
            return C.Thinking(_string(block, "thinking", where, required=False),
                              _string(block, "signature", where, required=False))
        return C.Thinking(str(block.get("thinking", "")), str(block.get("signature", "")))
    log.debug("dropping a {kind} block the canonical model cannot carry", kind=kind)
    return None


def validate(data: Any) -> tuple[str, bool]:
    """
    The model and the stream flag of a decoded client body, or BadRequest:
    the types of the top-level fields, each message an object; what is in
    the messages is for the full decode (or a same-format upstream) to judge.
    """
    data = common.body_object(data)
    model = common.model_field(data)
    common.objects(common.non_empty_array(data, "messages"), "messages")
    stream = common.stream_flag(data, null=False)
    common.positive_int(data, "max_tokens")
    for key in ("temperature", "top_p"):
        common.number(data, key)
    common.optional(data, "system", (str, list), "a string or an array of text blocks")
    common.optional(data, "tools", (list,), "an array")
    common.optional(data, "tool_choice", (dict,), "an object")
    return model, stream


def _tool_choice(choice: Any) -> str | None:
    if choice is None:
        return None
    kind = choice.get("type")
    if kind == "tool":
        return _string(choice, "name", "tool_choice")
    if kind in ("auto", "any", "none"):
        return {"auto": "auto", "any": "required", "none": "none"}[kind]
    raise C.BadRequest("tool_choice.type must be auto, any, tool or none")


def _stop(data: dict[str, Any]) -> tuple[str, ...]:
    stop = data.get("stop_sequences")
    if stop is None:
        return ()
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise C.BadRequest("stop_sequences must be an array of strings")
    return tuple(stop)


def request_to_canonical(data: dict[str, Any]) -> C.Request:
    """Validate a Messages request body and turn it into the canonical model."""
    model, stream = validate(data)
    common.shallow(data)
    messages = []
    for i, m in enumerate(data["messages"]):
        if m.get("role") not in ("user", "assistant"):
            raise C.BadRequest(f"messages[{i}]: an object with role user or assistant is required")
        content = m.get("content")
        if isinstance(content, str):
            parts: list[C.Part] = [C.Text(content)]
        elif isinstance(content, list):
            parts = [p for j, b in enumerate(content) if (p := _block(b, f"messages[{i}].content[{j}]"))]
        else:
            raise C.BadRequest(f"messages[{i}].content must be a string or an array")
        messages.append(C.Message(m["role"], tuple(parts)))
    tools = []
    for i, t in enumerate(data.get("tools") or ()):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
            raise C.BadRequest(f"tools[{i}]: an object with a name is required")
        schema = t.get("input_schema")
        if schema is not None and not isinstance(schema, dict):
            raise C.BadRequest(f"tools[{i}].input_schema must be an object")
        description = t.get("description")
        if description is not None and not isinstance(description, str):
            raise C.BadRequest(f"tools[{i}].description must be a string")
        tools.append(C.Tool(t["name"], description or "", schema or {}))
    max_tokens = common.positive_int(data, "max_tokens")
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
    return C.Request(
        model=model,
        messages=tuple(messages),
        system=_text_of(data.get("system", ""), "system"),
        tools=tuple(tools),
        tool_choice=_tool_choice(data.get("tool_choice")),
        max_tokens=max_tokens,
        temperature=common.number(data, "temperature"),
        top_p=common.number(data, "top_p"),
        stop=_stop(data),
        stream=stream,
        reasoning=reasoning,
    )


# -- requests: the canonical model -> an upstream body ---------------------------------


def _content_block(part: C.Part, role: str) -> dict[str, Any] | None:
    if isinstance(part, C.Text) and part.text:  # Claude rejects empty text blocks
        return {"type": "text", "text": part.text}
    if isinstance(part, C.Image) and role == "user":
        source = ({"type": "url", "url": part.url} if part.url
                  else {"type": "base64", "media_type": part.media_type, "data": part.data})
        return {"type": "image", "source": source}
    if isinstance(part, C.ToolResult) and role == "user":
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.call_id, "content": part.content}
        if part.is_error:
            block["is_error"] = True
        return block
    if isinstance(part, C.ToolCall) and role == "assistant":
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": common.arguments_object(part.arguments)}
    if isinstance(part, C.Thinking) and role == "assistant" and part.signature:  # Claude rejects unsigned thinking
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    log.debug("dropping a {kind} part of a {role} message: Claude cannot carry it",
              kind=type(part).__name__, role=role)
    return None


def _turns(messages: tuple[C.Message, ...]) -> list[dict[str, Any]]:
    """
    Claude's alternating turns: messages of the same role in a row become
    one turn, and tool results open their user turn, as Claude requires.
    """
    turns: list[dict[str, Any]] = []
    for m in messages:
        blocks = [b for p in m.parts if (b := _content_block(p, m.role)) is not None]
        if not blocks:
            log.debug("dropping an empty {role} message", role=m.role)
        elif turns and turns[-1]["role"] == m.role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": m.role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    return turns


def _thinking(reasoning: Reasoning) -> dict[str, Any] | None:
    tokens = reasoning.tokens()
    if tokens is None:
        return None
    if tokens == 0:
        return {"type": "disabled"}
    return {"type": "enabled", "budget_tokens": AUTO_BUDGET if tokens < 0 else max(MIN_BUDGET, tokens)}


def request_from_canonical(req: C.Request, model: str) -> dict[str, Any]:
    """A Messages request body for C{req}, asking for C{model}."""
    body: dict[str, Any] = {"model": model, "max_tokens": req.max_tokens or DEFAULT_MAX_TOKENS,
                            "messages": _turns(req.messages)}
    if req.system:
        body["system"] = req.system
    if req.tools:
        body["tools"] = [{"name": t.name, "input_schema": common.tool_schema(t),
                          **({"description": t.description} if t.description else {})} for t in req.tools]
        if req.tool_choice in ("auto", "none"):
            body["tool_choice"] = {"type": req.tool_choice}
        elif req.tool_choice == "required":
            body["tool_choice"] = {"type": "any"}
        elif req.tool_choice:
            body["tool_choice"] = {"type": "tool", "name": req.tool_choice}
    elif req.tool_choice:
        log.debug("dropping tool_choice {choice!r}: the request has no tools", choice=req.tool_choice)
    common.set_present(body, temperature=req.temperature, top_p=req.top_p)
    if req.stop:
        body["stop_sequences"] = list(req.stop)
    if req.stream:
        body["stream"] = True
    if req.reasoning is not None:
        apply_reasoning(body, req.reasoning)
    return body


set_model = common.set_model


def name_answer_model(data: dict[str, Any], model: str) -> bool:
    """A message names its model at the top; a stream only in its C{message_start} event's message."""
    return common.name_model_at(data, model, "model", "message")


def apply_reasoning(data: dict[str, Any], reasoning: Reasoning, model: str = "") -> None:
    """C{thinking} from C{reasoning} (see the module's rule), raising C{max_tokens} above the budget if it must."""
    thinking = _thinking(reasoning)
    if thinking is None:
        return
    data["thinking"] = thinking
    budget = thinking.get("budget_tokens")
    max_tokens = data.get("max_tokens")
    if budget is not None and (not isinstance(max_tokens, int) or max_tokens <= budget):
        data["max_tokens"] = budget + ANSWER_HEADROOM


# -- answers ---------------------------------------------------------------------------


def _usage(raw: Any) -> C.Usage:
    if not isinstance(raw, dict):
        return C.Usage()
    cached = int(raw.get("cache_read_input_tokens") or 0)
    written = int(raw.get("cache_creation_input_tokens") or 0)
    return C.Usage(int(raw.get("input_tokens") or 0) + written + cached, int(raw.get("output_tokens") or 0), cached)


def _usage_body(usage: C.Usage) -> dict[str, int]:
    return {"input_tokens": max(0, usage.input_tokens - usage.cached_tokens),
            "output_tokens": usage.output_tokens,
            "cache_read_input_tokens": usage.cached_tokens}


def _message_id(upstream_id: str, origin: Origin) -> str:
    return common.prefixed_id("msg_", upstream_id, origin)


def response_to_canonical(data: dict[str, Any], *, origin: Origin = DEFAULT_ORIGIN) -> C.Response:
    """A whole Messages answer as a canonical response; ValueError if its blocks are malformed."""
    try:
        parts = [p for i, b in enumerate(data.get("content") or ()) if (p := _block(b, f"content[{i}]", strict=False))]
    except C.BadRequest as e:
        raise ValueError(f"a malformed Claude answer: {e}") from None
    return common.answer(data, parts, _STOP_TO_CANON.get(data.get("stop_reason") or "end_turn", C.STOP),
                         _usage(data.get("usage")))


def response_from_canonical(resp: C.Response, model: str, *, origin: Origin = DEFAULT_ORIGIN) -> dict[str, Any]:
    """
    A whole canonical answer as a Messages response, naming C{model}; its id
    comes from C{origin} when the upstream gave none.
    """
    content: list[dict[str, Any]] = []
    for p in resp.parts:
        if isinstance(p, C.Thinking):
            content.append({"type": "thinking", "thinking": p.text, "signature": p.signature})
        elif isinstance(p, C.Text):
            content.append({"type": "text", "text": p.text})
        elif isinstance(p, C.ToolCall):
            content.append({"type": "tool_use", "id": p.id, "name": p.name,
                            "input": common.arguments_object(p.arguments)})
        else:
            log.debug("dropping a {kind} part of an answer: Claude cannot carry it", kind=type(p).__name__)
    return {
        "id": _message_id(resp.id, origin),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _STOP_TO_CLAUDE.get(resp.stop_reason, "end_turn"),
        "stop_sequence": None,
        "usage": _usage_body(resp.usage),
    }


# -- streams ---------------------------------------------------------------------------


def is_stream_end(data: bytes) -> bool:
    """The C{message_stop} event (see the contract): the quoted name is only ever its type."""
    return b'"message_stop"' in data


def _event(name: str, data: dict[str, Any]) -> bytes:
    # ASCII escapes: a client that splits lines on U+2028 or U+0085 (as
    # str.splitlines does) must still see one data line per event.
    return b"event: " + name.encode() + b"\ndata: " + json.dumps(data).encode("ascii") + b"\n\n"


def _block_start(kind: str, call_id: str = "", name: str = "") -> dict[str, Any]:
    if kind == "tool":
        return {"type": "tool_use", "id": call_id, "name": name, "input": {}}
    if kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    return {"type": "text", "text": ""}


def _block_delta(kind: str, text: str) -> dict[str, Any]:
    if kind == "tool":
        return {"type": "input_json_delta", "partial_json": text}
    return {"type": f"{kind}_delta", kind: text}


def _delta_envelope(kind: str) -> tuple[bytes, bytes]:
    """The bytes of a C{content_block_delta} event of C{kind} before and after its index, up to its text."""
    marker = "\x00"
    whole = _event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                           "delta": _block_delta(kind, marker)})
    head, _, rest = whole.partition(b'"index": 0')
    tail = rest[:rest.index(json.dumps(marker).encode())]
    return head + b'"index": ', tail


_DELTA_ENVELOPES = {kind: _delta_envelope(kind) for kind in ("text", "thinking", "tool")}
_ascii_json_string = json.encoder.encode_basestring_ascii


@define
class _Held:
    """A content block held back until the end of the stream."""

    kind: str  # "text" | "thinking" | "tool"
    id: str = ""
    name: str = ""
    chunks: list[str] = Factory(list)


class StreamEncoder:
    """
    Canonical stream events -> Claude's SSE events (message_start ... message_stop).

    Claude streams one content block at a time, and a stopped block takes no
    more deltas. So once a tool call's block is open it stays open, since
    more of its arguments may come; whatever arrives meanwhile (other calls,
    their arguments, text) is held and sent as whole blocks at the end.

    The message's id is the upstream's, or one from C{origin}.
    """

    def __init__(self, model: str, *, origin: Origin = DEFAULT_ORIGIN) -> None:
        self._model = model
        self._origin = origin
        self._started = False
        self._block: int | None = None  # index of the open content block
        self._kind = ""  # "text" | "thinking" | "tool": what the open block holds
        self._next = 0
        self._live: int | None = None  # canonical index of the tool call in the open block
        self._held: list[_Held] = []
        self._held_calls: dict[int, _Held] = {}  # canonical tool index -> its held block
        self._stop = C.STOP
        self._usage = C.Usage()
        self._closed = False

    def _start(self, msg_id: str = "") -> bytes:
        self._started = True
        return _event("message_start", {"type": "message_start", "message": {
            "id": _message_id(msg_id, self._origin), "type": "message", "role": "assistant", "model": self._model,
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

    def _delta(self, kind: str, text: str) -> bytes:
        # The most frequent event: its envelope is written once per block kind
        # (bytes as json.dumps writes them; only the text is escaped per event).
        head, tail = _DELTA_ENVELOPES[kind]
        return b"".join((head, str(self._block).encode(), tail, _ascii_json_string(text).encode(), b"}}\n\n"))

    def _hold(self, kind: str) -> _Held:
        if not self._held or self._held[-1].kind != kind:
            self._held.append(_Held(kind))
        return self._held[-1]

    def feed(self, event: C.Event) -> bytes:
        if self._closed:
            return b""  # an error, or the end, closed the stream
        out = b"" if self._started or isinstance(event, C.Start) else self._start()
        if isinstance(event, C.Start):
            return out + (b"" if self._started else self._start(event.id))
        if isinstance(event, (C.TextDelta, C.ThinkingDelta)):
            kind = "text" if isinstance(event, C.TextDelta) else "thinking"
            if self._kind == "tool":
                self._hold(kind).chunks.append(event.text)
                return out
            if self._block is None or self._kind != kind:
                out += self._open(kind, _block_start(kind))
            return out + self._delta(kind, event.text)
        if isinstance(event, C.ToolCallStart):
            if self._kind == "tool":
                self._held.append(held := _Held("tool", event.id, event.name))
                self._held_calls[event.index] = held
                if self._live == event.index:
                    self._live = None
                return out
            self._live = event.index
            return out + self._open("tool", _block_start("tool", event.id, event.name))
        if isinstance(event, C.ToolCallDelta):
            if event.index == self._live:
                return out + self._delta("tool", event.arguments)
            if event.index in self._held_calls:
                self._held_calls[event.index].chunks.append(event.arguments)
            else:
                log.debug("dropping arguments for tool call {index}, which never started", index=event.index)
            return out
        if isinstance(event, C.Finish):
            self._stop = event.stop_reason
        elif isinstance(event, C.UsageEvent):
            self._usage = event.usage
        elif isinstance(event, C.ErrorEvent):
            self._closed = True
            return out + stream_error_event(event.message)
        return out

    def close(self) -> bytes:
        """The held blocks and the closing events, once the upstream stream has ended cleanly."""
        if self._closed:
            return b""
        self._closed = True
        out = b"" if self._started else self._start()
        for held in self._held:
            out += self._open(held.kind, _block_start(held.kind, held.id, held.name))
            if text := "".join(held.chunks):
                out += self._delta(held.kind, text)
        out += self._close_block()
        out += _event("message_delta", {"type": "message_delta",
                                        "delta": {"stop_reason": _STOP_TO_CLAUDE.get(self._stop, "end_turn"),
                                                  "stop_sequence": None},
                                        "usage": _usage_body(self._usage)})
        return out + _event("message_stop", {"type": "message_stop"})


class StreamDecoder:
    """The payloads of Claude's SSE events -> canonical stream events."""

    def __init__(self, *, origin: Origin = DEFAULT_ORIGIN) -> None:
        self._usage: dict[str, Any] = {}  # message_start's usage, updated by message_delta's
        self._calls: dict[int, int] = {}  # content block index -> canonical tool index

    def feed(self, data: dict[str, Any]) -> list[C.Event]:
        kind = data.get("type")
        if kind == "message_start":
            message = data.get("message") or {}
            self._usage = dict(message.get("usage") or {})
            return [C.Start(str(message.get("id", "")), str(message.get("model", "")))]
        if kind == "content_block_start":
            return self._block_start(data.get("index"), data.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(data.get("index"), data.get("delta") or {})
        if kind == "message_delta":
            self._usage.update((k, v) for k, v in (data.get("usage") or {}).items() if v is not None)
            reason = (data.get("delta") or {}).get("stop_reason")
            finish = [C.Finish(_STOP_TO_CANON.get(reason, C.STOP))] if reason else []
            return [*finish, C.UsageEvent(_usage(self._usage))]
        if kind == "error":
            err = data.get("error") or {}
            return [C.ErrorEvent(str(err.get("message", "upstream error")), str(err.get("type") or "api_error"),
                                 common.error_status(err.get("type")))]
        return []  # ping, content_block_stop, message_stop

    def _block_start(self, index: Any, block: dict[str, Any]) -> list[C.Event]:
        if block.get("type") == "text" and block.get("text"):
            return [C.TextDelta(str(block["text"]))]
        if block.get("type") != "tool_use":
            return []
        self._calls[index] = call = len(self._calls)
        events: list[C.Event] = [C.ToolCallStart(call, str(block.get("id", "")), str(block.get("name", "")))]
        if block.get("input"):  # some Claude-compatible upstreams send the whole input here
            events.append(C.ToolCallDelta(call, common.compact_json(block["input"])))
        return events

    def _block_delta(self, index: Any, delta: dict[str, Any]) -> list[C.Event]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [C.TextDelta(str(delta["text"]))]
        if kind == "thinking_delta" and delta.get("thinking"):
            return [C.ThinkingDelta(str(delta["thinking"]))]
        if kind == "input_json_delta" and delta.get("partial_json") and index in self._calls:
            return [C.ToolCallDelta(self._calls[index], str(delta["partial_json"]))]
        return []  # signature_delta, empty deltas


# -- errors, counts, listings ----------------------------------------------------------

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}


def error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, message: str, extra: dict[str, Any] | None = None) -> bytes:
    return common.error_json({"type": error_type(status), "message": message}, extra, type="error")


def stream_error_event(message: str, status: int = 500) -> bytes:
    return _event("error", {"type": "error", "error": {"type": error_type(status), "message": message}})


def count_body(tokens: int) -> dict[str, Any]:
    """The answer of C{/v1/messages/count_tokens}."""
    return {"input_tokens": tokens}


#: What Claude's count_tokens endpoint accepts of a Messages body (it rejects max_tokens, stream, ...).
_COUNT_FIELDS = ("messages", "system", "tools", "tool_choice", "thinking")


def count_request(data: dict[str, Any], model: str) -> dict[str, Any]:
    """The body of a C{/v1/messages/count_tokens} call, from a Messages body for this format."""
    return {"model": model, **{key: data[key] for key in _COUNT_FIELDS if key in data}}


def count_from_body(data: dict[str, Any]) -> int:
    """The count in an upstream's C{count_tokens} answer; KeyError or ValueError when there is none."""
    return int(data["input_tokens"])


def _model(name: str, created_at: str, facts: common.ModelFacts | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "model", "id": name, "display_name": name, "created_at": created_at}
    if facts is not None:
        entry["display_name"] = facts.display_name or name
        if facts.context_length:
            entry["max_input_tokens"] = facts.context_length
        if facts.output_tokens:
            entry["max_tokens"] = facts.output_tokens
    return entry


def models_body(models: list[tuple[str, str]], created: int,
                facts: Mapping[str, common.ModelFacts] | None = None,
                listed: Callable[[str], str] | None = None) -> bytes:
    """
    Claude's C{/v1/models} page: every model, with C{created} as its creation
    time; C{facts} gives a model's display name and token limits; C{listed},
    when given, the id each model is listed under (its display name stays
    its own).
    """
    created_at = datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    facts = facts or {}
    data = [_model(name, created_at, facts.get(name)) for name, _ in models]
    if listed is not None:
        for entry in data:
            entry["id"] = listed(entry["id"])
    return common.json_body({"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                             "last_id": data[-1]["id"] if data else None})
