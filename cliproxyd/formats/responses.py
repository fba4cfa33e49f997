"""
OpenAI Responses (also what Codex upstreams speak): requests, answers,
stream events and errors, to and from the canonical model.

Choices where the canonical model and Responses do not line up:

  - Thinking is never sent upstream. Its signature may come from another
    vendor (a Claude thinking signature), and C{encrypted_content} that
    Responses cannot decrypt fails the whole request; dropping it only
    costs the upstream its earlier reasoning.
  - Requests carry C{store: false}, so no item carries an id (an id would
    name an item that was never stored).
  - Function tools go out with C{strict: false}: Responses defaults to
    strict schemas, which most clients' schemas do not satisfy.
  - Stop sequences and C{ToolResult.is_error} have no Responses field and
    are dropped; refusals come back as text.
  - The stream encoder keeps at most one message or reasoning item open
    (switching kind closes it), keeps function calls open until close() so
    parallel calls may interleave, and ends with C{response.completed}, its
    status C{incomplete} for C{LENGTH} and C{CONTENT_FILTER}.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from cliproxyd.formats import canonical as C
from cliproxyd.formats import common
from cliproxyd.formats.common import DEFAULT_ORIGIN, Origin
from cliproxyd.modelnames import Reasoning

log = Logger(namespace="cliproxyd.formats.responses")

NAME = "responses"

_TOOL_CHOICES = ("auto", "none", "required")
_INCOMPLETE_TO_CANON = {"max_output_tokens": C.LENGTH, "content_filter": C.CONTENT_FILTER}
_CANON_TO_INCOMPLETE = {v: k for k, v in _INCOMPLETE_TO_CANON.items()}
_ROLES = ("user", "assistant", "system", "developer")


# -- requests -----------------------------------------------------------------------


def validate(data: Any) -> tuple[str, bool]:
    """
    The model and stream flag of a client body, or BadRequest naming the
    field: the types of the top-level fields, each input item an object;
    what is in the items is for the full decode (or a Responses upstream)
    to judge.
    """
    data = common.body_object(data)
    model = common.model_field(data)
    items = data.get("input")
    if not isinstance(items, (str, list)):
        raise C.BadRequest("input: a string or an array of items is required")
    if isinstance(items, list):
        common.objects(items, "input")
    stream = common.stream_flag(data)
    common.positive_int(data, "max_output_tokens")
    for key in ("temperature", "top_p"):
        common.number(data, key)
    common.optional(data, "instructions", (str,), "a string")
    common.optional(data, "tools", (list,), "an array")
    common.optional(data, "tool_choice", (str, dict), "auto, none, required or an object")
    common.optional(data, "reasoning", (dict,), "an object")
    return model, stream


def _image(url: Any, where: str) -> C.Image:
    if not isinstance(url, str):
        raise C.BadRequest(f"{where} must be a string")
    if common.web_url(url):
        return C.Image(url=url)
    image = common.base64_image(url)
    if image is None:
        raise C.BadRequest(f"{where} must be an http(s) URL or a base64 data: URL")
    return image


def _content(content: Any, where: str) -> list[C.Part]:
    if isinstance(content, str):
        return [C.Text(content)]
    if not isinstance(content, list):
        raise C.BadRequest(f"{where} must be a string or an array")
    parts: list[C.Part] = []
    for j, block in enumerate(content):
        if not isinstance(block, dict):
            raise C.BadRequest(f"{where}[{j}] must be an object")
        kind = block.get("type")
        if kind in ("input_text", "output_text"):
            if not isinstance(block.get("text"), str):
                raise C.BadRequest(f"{where}[{j}].text must be a string")
            parts.append(C.Text(block["text"]))
        elif kind == "input_image" and block.get("image_url") is not None:
            parts.append(_image(block["image_url"], f"{where}[{j}].image_url"))
        else:
            log.debug("dropping a {kind} content part the canonical model cannot carry", kind=kind)
    return parts


def _texts(blocks: Any) -> list[str]:
    return [str(b.get("text", "")) for b in blocks if isinstance(b, dict)] if isinstance(blocks, list) else []


def _thinking(item: dict[str, Any]) -> C.Thinking:
    """A reasoning item's summary (or, lacking one, its reasoning text) as thinking."""
    texts = _texts(item.get("summary")) or _texts(item.get("content"))
    return C.Thinking("\n\n".join(texts), str(item.get("encrypted_content") or ""))


def _add(messages: list[C.Message], role: str, parts: list[C.Part]) -> None:
    """Append parts as a message; assistant items, and runs of tool results, share one."""
    if not parts:
        return
    last = messages[-1] if messages else None
    if last is not None and last.role == role and (
        role == "assistant" or all(isinstance(p, C.ToolResult) for p in (*last.parts, *parts))
    ):
        messages[-1] = C.Message(role, last.parts + tuple(parts))
    else:
        messages.append(C.Message(role, tuple(parts)))


def _input(items: list[Any], system: list[str]) -> list[C.Message]:
    messages: list[C.Message] = []
    for i, item in enumerate(items):
        at = f"input[{i}]"
        if not isinstance(item, dict):
            raise C.BadRequest(f"{at} must be an object")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise C.BadRequest(f"{at}.role must be one of {', '.join(_ROLES)}")
            parts = _content(item.get("content"), f"{at}.content")
            if role in ("system", "developer"):
                system.append(common.joined_text(parts))
            else:
                _add(messages, role, parts)
        elif kind == "function_call":
            call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments", "")
            if not isinstance(call_id, str) or not isinstance(name, str) or not name or not isinstance(arguments, str):
                raise C.BadRequest(f"{at}: a function_call needs string call_id, name and arguments")
            arguments = common.arguments_text(arguments, f"{at}.arguments")
            _add(messages, "assistant", [C.ToolCall(call_id, name, arguments)])
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise C.BadRequest(f"{at}.call_id must be a string")
            output = item.get("output")
            if isinstance(output, list):
                output = common.joined_text(_content(output, f"{at}.output"))
            if not isinstance(output, str):
                raise C.BadRequest(f"{at}.output must be a string or an array")
            _add(messages, "user", [C.ToolResult(item["call_id"], output)])
        elif kind == "reasoning":
            for key in ("summary", "content"):
                if item.get(key) is not None and not isinstance(item[key], list):
                    raise C.BadRequest(f"{at}.{key} must be an array")
            if item.get("encrypted_content") is not None and not isinstance(item["encrypted_content"], str):
                raise C.BadRequest(f"{at}.encrypted_content must be a string")
            thinking = _thinking(item)
            _add(messages, "assistant", [thinking] if thinking.text or thinking.signature else [])
        else:
            log.debug("dropping a {kind} input item the canonical model cannot carry", kind=kind)
    return messages


def _tools(raw: Any) -> tuple[C.Tool, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise C.BadRequest("tools must be an array")
    tools = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            raise C.BadRequest(f"tools[{i}] must be an object")
        if t.get("type") != "function":
            log.debug("dropping a {kind} tool the canonical model cannot carry", kind=t.get("type"))
            continue
        if not isinstance(t.get("name"), str) or not t["name"]:
            raise C.BadRequest(f"tools[{i}].name must be a non-empty string")
        parameters, description = t.get("parameters"), t.get("description")
        if parameters is not None and not isinstance(parameters, dict):
            raise C.BadRequest(f"tools[{i}].parameters must be an object")
        if description is not None and not isinstance(description, str):
            raise C.BadRequest(f"tools[{i}].description must be a string")
        tools.append(C.Tool(t["name"], description or "", parameters or {}))
    return tuple(tools)


def _tool_choice(raw: Any) -> str | None:
    if raw is None or raw in _TOOL_CHOICES:
        return raw
    if not isinstance(raw, dict):
        raise C.BadRequest("tool_choice must be auto, none, required or an object")
    if raw.get("type") == "function" and isinstance(raw.get("name"), str):
        return raw["name"]
    log.debug("dropping a {kind} tool_choice the canonical model cannot carry", kind=raw.get("type"))
    return None


def request_to_canonical(data: dict[str, Any]) -> C.Request:
    """Validate a Responses request body and turn it into the canonical model."""
    model, stream = validate(data)
    common.shallow(data)
    system = [data["instructions"]] if isinstance(data.get("instructions"), str) and data["instructions"] else []
    raw_input = data["input"]
    messages = [C.Message("user", (C.Text(raw_input),))] if isinstance(raw_input, str) else _input(raw_input, system)
    max_tokens = common.positive_int(data, "max_output_tokens")
    reasoning = data.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, dict):
        raise C.BadRequest("reasoning must be an object")
    effort = (reasoning or {}).get("effort")
    if effort is not None and not isinstance(effort, str):
        raise C.BadRequest("reasoning.effort must be a string")
    return C.Request(
        model=model,
        messages=tuple(messages),
        system="\n\n".join(system),
        tools=_tools(data.get("tools")),
        tool_choice=_tool_choice(data.get("tool_choice")),
        max_tokens=max_tokens,
        temperature=common.number(data, "temperature"),
        top_p=common.number(data, "top_p"),
        stream=stream,
        reasoning=Reasoning(level=effort) if effort else None,
    )


def _message_items(m: C.Message) -> list[dict[str, Any]]:
    """One message's parts as input items, in order: runs of content become message items."""
    items: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    for p in m.parts:
        item = None
        if isinstance(p, C.Text):
            content.append({"type": "output_text" if m.role == "assistant" else "input_text", "text": p.text})
        elif isinstance(p, C.Image) and m.role == "user":
            content.append({"type": "input_image", "image_url": common.image_url(p), "detail": "auto"})
        elif isinstance(p, C.ToolCall) and m.role == "assistant":
            item = {"type": "function_call", "call_id": p.id, "name": p.name, "arguments": p.arguments or "{}"}
        elif isinstance(p, C.ToolResult) and m.role == "user":
            if p.is_error:
                log.debug("a tool result's error flag has no Responses field")
            item = {"type": "function_call_output", "call_id": p.call_id, "output": p.content}
        else:
            log.debug("dropping a {kind} part of a {role} message", kind=type(p).__name__, role=m.role)
        if item is not None:
            if content:
                items.append({"type": "message", "role": m.role, "content": content})
                content = []
            items.append(item)
    if content:
        items.append({"type": "message", "role": m.role, "content": content})
    return items


def request_from_canonical(req: C.Request, model: str) -> dict[str, Any]:
    """A Responses request body for C{req}, asking for C{model}."""
    body: dict[str, Any] = {"model": model, "input": [item for m in req.messages for item in _message_items(m)]}
    if req.system:
        body["instructions"] = req.system
    if req.tools:
        body["tools"] = [
            {"type": "function", "name": t.name, "description": t.description,
             "parameters": common.tool_schema(t), "strict": False}
            for t in req.tools
        ]
    if req.tool_choice in _TOOL_CHOICES:
        body["tool_choice"] = req.tool_choice
    elif req.tool_choice:
        body["tool_choice"] = {"type": "function", "name": req.tool_choice}
    common.set_present(body, max_output_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p)
    if req.stop:
        log.debug("dropping stop sequences: Responses has none")
    effort = req.reasoning.effort() if req.reasoning is not None else None
    if effort is not None:
        body["reasoning"] = {"effort": effort}
    if req.stream:
        body["stream"] = True
    body["store"] = False
    return body


set_model = common.set_model


def name_answer_model(data: dict[str, Any], model: str) -> bool:
    """A response names its model at the top; stream events in the response they carry."""
    return common.name_model_at(data, model, "model", "response")


def apply_reasoning(data: dict[str, Any], reasoning: Reasoning, model: str = "") -> None:
    """Set (or, for "auto", remove) reasoning.effort, keeping the rest of C{reasoning}."""
    old = data.get("reasoning")
    new = {k: v for k, v in old.items() if k != "effort"} if isinstance(old, dict) else {}
    effort = reasoning.effort()
    if effort is not None:
        new["effort"] = effort
    if new:
        data["reasoning"] = new
    else:
        data.pop("reasoning", None)


# -- answers ------------------------------------------------------------------------


def _usage(raw: Any) -> C.Usage:
    return common.openai_usage(raw, "input_tokens", "output_tokens")


def _stop(response: dict[str, Any], has_calls: bool) -> str:
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        if reason in _INCOMPLETE_TO_CANON:
            return _INCOMPLETE_TO_CANON[reason]
    return C.TOOL_CALLS if has_calls else C.STOP


def _output_parts(output: Any) -> list[C.Part]:
    parts: list[C.Part] = []
    for item in output if isinstance(output, list) else ():
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            for c in item.get("content") or ():
                if isinstance(c, dict) and c.get("type") in ("output_text", "refusal"):
                    parts.append(C.Text(str(c.get("text", c.get("refusal", "")))))
        elif kind == "function_call":
            parts.append(C.ToolCall(str(item.get("call_id", "")), str(item.get("name", "")),
                                    str(item.get("arguments") or "")))
        elif kind == "reasoning":
            thinking = _thinking(item)
            if thinking.text or thinking.signature:
                parts.append(thinking)
        else:
            log.debug("dropping a {kind} output item the canonical model cannot carry", kind=kind)
    return parts


def response_to_canonical(data: dict[str, Any], *, origin: Origin = DEFAULT_ORIGIN) -> C.Response:
    """A whole Response object as a canonical response."""
    parts = _output_parts(data.get("output"))
    return common.answer(data, parts, _stop(data, any(isinstance(p, C.ToolCall) for p in parts)),
                         _usage(data.get("usage")))


def _response_id(upstream_id: str, origin: Origin) -> str:
    return common.prefixed_id("resp_", upstream_id, origin)


def _item_id(prefix: str, response_id: str, index: int) -> str:
    return f"{prefix}_{response_id.removeprefix('resp_')}_{index}"


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def _message_item(item_id: str, texts: list[str], status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": item_id, "role": "assistant", "status": status,
            "content": [_text_part(t) for t in texts]}


def _reasoning_item(item_id: str, texts: list[str], signature: str = "") -> dict[str, Any]:
    item: dict[str, Any] = {"type": "reasoning", "id": item_id,
                            "summary": [{"type": "summary_text", "text": t} for t in texts]}
    if signature:
        item["encrypted_content"] = signature
    return item


def _call_item(item_id: str, call: C.ToolCall, status: str = "completed") -> dict[str, Any]:
    # The SDK tells calls apart by call_id: an upstream that gave none gets one from the item id.
    return {"type": "function_call", "id": item_id, "call_id": call.id or "call" + item_id.removeprefix("fc"),
            "name": call.name, "arguments": call.arguments, "status": status}


def _response(rid: str, model: str, created: int, output: list[dict[str, Any]],
              stop: str | None, usage: C.Usage | None) -> dict[str, Any]:
    """A Response object; C{stop} None means still in progress."""
    reason = _CANON_TO_INCOMPLETE.get(stop) if stop else None
    status = "in_progress" if stop is None else "incomplete" if reason else "completed"
    body: dict[str, Any] = {
        "id": rid, "object": "response", "created_at": created, "status": status, "model": model,
        "output": output, "error": None, "incomplete_details": {"reason": reason} if reason else None,
        "instructions": None, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "usage": None,
    }
    if usage is not None:
        body["usage"] = {
            "input_tokens": usage.input_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.input_tokens + usage.output_tokens,
        }
    return body


def response_from_canonical(resp: C.Response, model: str, *, origin: Origin = DEFAULT_ORIGIN) -> dict[str, Any]:
    """
    A whole canonical answer as a Response object: consecutive texts share a
    message item. C{created_at} is C{origin}'s time, and the id (which the
    items' ids derive from) comes from C{origin} when the upstream gave none.
    """
    rid = _response_id(resp.id, origin)
    output: list[dict[str, Any]] = []
    for p in resp.parts:
        n = len(output)
        if isinstance(p, C.Text) and output and output[-1]["type"] == "message":
            output[-1]["content"].append(_text_part(p.text))
        elif isinstance(p, C.Text):
            output.append(_message_item(_item_id("msg", rid, n), [p.text]))
        elif isinstance(p, C.ToolCall):
            output.append(_call_item(_item_id("fc", rid, n), p))
        elif isinstance(p, C.Thinking):
            output.append(_reasoning_item(_item_id("rs", rid, n), [p.text] if p.text else [], p.signature))
        else:
            log.debug("dropping a {kind} part of an answer", kind=type(p).__name__)
    return _response(rid, model, int(origin.now()), output, resp.stop_reason, resp.usage)


# -- streams ------------------------------------------------------------------------


class StreamDecoder:
    """Responses stream events -> canonical stream events."""

    def __init__(self, *, origin: Origin = DEFAULT_ORIGIN) -> None:
        self._calls: dict[Any, int] = {}  # item id and output index -> canonical tool index
        self._count = 0
        self._argued: set[int] = set()  # calls whose arguments were passed on

    def _lookup(self, item_id: Any, output_index: Any) -> int | None:
        index = self._calls.get(item_id) if item_id is not None else None
        return index if index is not None else self._calls.get(output_index)

    def _call(self, data: dict[str, Any], item: dict[str, Any]) -> tuple[int, list[C.Event]]:
        index = self._lookup(item.get("id"), data.get("output_index"))
        if index is not None:
            return index, []
        index, self._count = self._count, self._count + 1
        for key in (item.get("id"), data.get("output_index")):
            if key is not None:
                self._calls[key] = index
        return index, [C.ToolCallStart(index, str(item.get("call_id", "")), str(item.get("name", "")))]

    def _arguments(self, index: int | None, arguments: Any) -> list[C.Event]:
        """Arguments that arrive whole, when no delta brought them."""
        if index is None or index in self._argued or not arguments:
            return []
        self._argued.add(index)
        return [C.ToolCallDelta(index, str(arguments))]

    def feed(self, data: dict[str, Any]) -> list[C.Event]:
        kind = data.get("type")
        response = data.get("response") if isinstance(data.get("response"), dict) else {}
        if kind == "response.created":
            return [C.Start(str(response.get("id", "")), str(response.get("model", "")))]
        if kind == "response.output_text.delta" and data.get("delta"):
            return [C.TextDelta(str(data["delta"]))]
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta") and data.get("delta"):
            return [C.ThinkingDelta(str(data["delta"]))]
        if kind == "response.reasoning_summary_part.added" and data.get("summary_index"):
            return [C.ThinkingDelta("\n\n")]  # between summary parts, as response_to_canonical joins them
        if kind in ("response.output_item.added", "response.output_item.done"):
            item = data.get("item")
            if not isinstance(item, dict) or item.get("type") != "function_call":
                return []
            index, events = self._call(data, item)
            return events + (self._arguments(index, item.get("arguments")) if kind.endswith("done") else [])
        if kind == "response.function_call_arguments.delta":
            index = self._lookup(data.get("item_id"), data.get("output_index"))
            if index is None or not data.get("delta"):
                return []
            self._argued.add(index)
            return [C.ToolCallDelta(index, str(data["delta"]))]
        if kind == "response.function_call_arguments.done":
            return self._arguments(self._lookup(data.get("item_id"), data.get("output_index")), data.get("arguments"))
        if kind in ("response.completed", "response.incomplete"):
            events: list[C.Event] = [C.Finish(_stop(response, self._count > 0))]
            if isinstance(response.get("usage"), dict):
                events.append(C.UsageEvent(_usage(response["usage"])))
            return events
        if kind == "response.failed":
            err = response.get("error") or {}
            return [C.ErrorEvent(str(err.get("message") or "the upstream response failed"),
                                 str(err.get("code") or "server_error"), common.error_status(err.get("code")))]
        if kind == "error" or isinstance(data.get("error"), dict):
            err = data["error"] if isinstance(data.get("error"), dict) else data
            return [C.ErrorEvent(str(err.get("message") or "upstream error"), str(err.get("code") or "server_error"),
                                 common.error_status(err.get("code"), err.get("type")))]
        return []


def is_stream_end(data: bytes) -> bool:
    """The C{response.completed} or C{response.incomplete} event (see the contract)."""
    return b'"response.completed"' in data or b'"response.incomplete"' in data


def _sse(data: dict[str, Any]) -> bytes:
    return b"event: " + data["type"].encode("ascii") + b"\ndata: " + common.sse_json(data) + b"\n\n"


class StreamEncoder:
    """
    Canonical stream events -> Responses SSE events, as the SDK's stream
    helper expects them. C{created_at} is C{origin}'s time when the encoder
    was built; the response's id is the upstream's or, lacking one, from
    C{origin}.
    """

    def __init__(self, model: str, *, origin: Origin = DEFAULT_ORIGIN) -> None:
        self._model = model
        self._origin = origin
        self._id = ""
        self._created = int(origin.now())
        self._seq = 0
        self._items: list[dict[str, Any]] = []  # the output so far, by output index
        self._open: int | None = None  # the open message or reasoning item
        self._calls: dict[int, int] = {}  # canonical tool index -> output index
        self._stop = C.STOP
        self._usage: C.Usage | None = None
        self._started = self._closed = False

    def _event(self, data: dict[str, Any]) -> bytes:
        data["sequence_number"] = self._seq
        self._seq += 1
        return _sse(data)

    def _start(self, upstream_id: str = "") -> bytes:
        self._started = True
        self._id = _response_id(upstream_id, self._origin)
        return b"".join(
            self._event({"type": kind, "response": _response(self._id, self._model, self._created, [], None, None)})
            for kind in ("response.created", "response.in_progress")
        )

    def _open_item(self, kind: str) -> bytes:
        out = self._close_open()
        index = self._open = len(self._items)
        if kind == "message":
            item = _message_item(_item_id("msg", self._id, index), [], "in_progress")
            added = {"type": "response.content_part.added", "content_index": 0, "part": _text_part("")}
        else:
            item = _reasoning_item(_item_id("rs", self._id, index), [])
            added = {"type": "response.reasoning_summary_part.added", "summary_index": 0,
                     "part": {"type": "summary_text", "text": ""}}
        self._items.append(item)
        out += self._event({"type": "response.output_item.added", "output_index": index, "item": item})
        item["content" if kind == "message" else "summary"].append(dict(added["part"]))
        return out + self._event({**added, "item_id": item["id"], "output_index": index})

    def _close_open(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open = self._open, None
        item = self._items[index]
        ref = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            item["status"] = "completed"
            part = item["content"][0]
            out = self._event({"type": "response.output_text.done", **ref, "content_index": 0,
                               "text": part["text"], "logprobs": []})
            out += self._event({"type": "response.content_part.done", **ref, "content_index": 0, "part": part})
        else:
            part = item["summary"][0]
            out = self._event({"type": "response.reasoning_summary_text.done", **ref, "summary_index": 0,
                               "text": part["text"]})
            out += self._event({"type": "response.reasoning_summary_part.done", **ref, "summary_index": 0,
                                "part": part})
        return out + self._event({"type": "response.output_item.done", "output_index": index, "item": item})

    def _text(self, kind: str, text: str) -> bytes:
        out = b""
        if self._open is None or self._items[self._open]["type"] != kind:
            out = self._open_item(kind)
        index = self._open
        item = self._items[index]
        ref = {"item_id": item["id"], "output_index": index}
        if kind == "message":
            item["content"][0]["text"] += text
            return out + self._event({"type": "response.output_text.delta", **ref, "content_index": 0,
                                      "delta": text, "logprobs": []})
        item["summary"][0]["text"] += text
        return out + self._event({"type": "response.reasoning_summary_text.delta", **ref, "summary_index": 0,
                                  "delta": text})

    def feed(self, event: C.Event) -> bytes:
        if self._closed:
            return b""
        out = b"" if self._started or isinstance(event, C.Start) else self._start()
        if isinstance(event, C.Start):
            return b"" if self._started else self._start(event.id)
        if isinstance(event, C.TextDelta):
            return out + self._text("message", event.text)
        if isinstance(event, C.ThinkingDelta):
            return out + self._text("reasoning", event.text)
        if isinstance(event, C.ToolCallStart):
            out += self._close_open()
            index = len(self._items)
            call = C.ToolCall(event.id, event.name, "")
            self._items.append(_call_item(_item_id("fc", self._id, index), call, "in_progress"))
            self._calls[event.index] = index
            return out + self._event({"type": "response.output_item.added", "output_index": index,
                                      "item": self._items[index]})
        if isinstance(event, C.ToolCallDelta):
            index = self._calls.get(event.index)
            if index is None:
                log.debug("dropping arguments for tool call {index}, which never started", index=event.index)
                return out
            self._items[index]["arguments"] += event.arguments
            return out + self._event({"type": "response.function_call_arguments.delta",
                                      "item_id": self._items[index]["id"], "output_index": index,
                                      "delta": event.arguments})
        if isinstance(event, C.Finish):
            self._stop = event.stop_reason
        elif isinstance(event, C.UsageEvent):
            self._usage = event.usage
        elif isinstance(event, C.ErrorEvent):
            self._closed = True
            return out + self._event({"type": "error", "code": event.type, "message": event.message, "param": None})
        return out

    def close(self) -> bytes:
        """The closing events, once the upstream stream has ended cleanly."""
        if self._closed:
            return b""
        self._closed = True
        out = (b"" if self._started else self._start()) + self._close_open()
        for index, item in enumerate(self._items):
            if item["type"] != "function_call":
                continue
            item["status"] = "completed"
            out += self._event({"type": "response.function_call_arguments.done", "item_id": item["id"],
                                "output_index": index, "arguments": item["arguments"]})
            out += self._event({"type": "response.output_item.done", "output_index": index, "item": item})
        response = _response(self._id, self._model, self._created, self._items, self._stop, self._usage)
        return out + self._event({"type": "response.completed", "response": response})


# -- errors -------------------------------------------------------------------------

_ERROR_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}


def error_body(status: int, message: str, extra: dict[str, Any] | None = None) -> bytes:
    """An OpenAI-shaped error: C{{"error": {message, type, code, param}}}, C{extra} merged in."""
    kind = "rate_limit_error" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    code = _ERROR_CODES.get(status, "server_error" if status >= 500 else None)
    return common.error_json({"message": message, "type": kind, "code": code, "param": None}, extra)


def stream_error_event(message: str, code: str = "server_error") -> bytes:
    """An error inside a stream whose events came through as they were (its sequence number unknown: 0)."""
    return _sse({"type": "error", "code": code, "message": message, "param": None, "sequence_number": 0})
