"""
OpenAI's legacy text completions (C{POST /v1/completions}), served by chat.

No upstream we pool speaks text completions, so a request is always
translated: its C{prompt} becomes the one user turn of a chat request
(through the canonical model, to whichever upstream the conductor picks),
and the chat answer, whole or streamed, comes back as C{text_completion}
objects. This is a client format only: it has no C{StreamDecoder}, no
passthrough and no place in L{cliproxyd.formats.FORMATS}; its error shape
is OpenAI's (L{openai_chat.error_body}), for it is OpenAI's endpoint.

What a chat model cannot do is refused with a 400 naming the field, never
quietly ignored: a list of several prompts, token-array prompts,
C{suffix} (insertion), C{logprobs}, C{n} or C{best_of} above 1. C{echo}
is served (the prompt comes before the completion's text), and so are
C{max_tokens}, C{temperature}, C{top_p}, C{stop} and C{stream} (with
C{stream_options.include_usage}). Fields chat has no canonical place for
(C{presence_penalty}, C{frequency_penalty}, C{seed}, C{user},
C{logit_bias}) are dropped, as translation drops them for every format.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from cliproxyd.formats import canonical as C
from cliproxyd.formats import common, openai_chat
from cliproxyd.formats.common import DEFAULT_ORIGIN, Origin

#: The client format's name (what the metrics and payload rules see).
NAME = "completions"

BadRequest = C.BadRequest

#: How many stop sequences OpenAI takes.
MAX_STOP = 4

# OpenAI's error shape, for this is OpenAI's endpoint.
error_body = openai_chat.error_body
stream_error_event = openai_chat.stream_error_event


def _prompt(data: dict[str, Any]) -> str:
    """The one prompt of a body: a non-empty string, or a list holding one."""
    prompt = data.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise BadRequest(f"prompt: a list of {len(prompt)} prompts is not supported here; send one prompt "
                             "(a string) per request")
        prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest("prompt: token arrays are not supported; send the prompt as text")
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("prompt: a non-empty string is required")
    return prompt


def _unsupported(data: dict[str, Any]) -> None:
    """Refuse what a chat model cannot answer, naming the field."""
    suffix = data.get("suffix")
    if suffix is not None and suffix != "":
        raise BadRequest("suffix: insertion (text after the completion) is not supported; "
                         "completions are served by chat models")
    if data.get("logprobs") is not None:
        raise BadRequest("logprobs: token log probabilities are not supported; "
                         "completions are served by chat models")
    for key in ("n", "best_of"):
        value = common.positive_int(data, key)
        if value is not None and value > 1:
            raise BadRequest(f"{key}: only 1 is supported (one completion per request)")
    echo = data.get("echo")
    if echo is not None and not isinstance(echo, bool):
        raise BadRequest("echo must be true or false")


def _stop(data: dict[str, Any]) -> tuple[str, ...]:
    value = data.get("stop")
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > MAX_STOP:
        raise BadRequest(f"stop must be a string or an array of at most {MAX_STOP} strings")
    return tuple(stops)


def validate(data: Any) -> tuple[str, bool]:
    """The model and the stream flag of a decoded body; L{BadRequest} naming the field that cannot be served."""
    data = common.body_object(data)
    model = common.model_field(data, "'model' is required and must be a non-empty string")
    _prompt(data)
    _unsupported(data)
    stream = common.stream_flag(data, "'stream' must be true or false")
    common.positive_int(data, "max_tokens")
    for key in ("temperature", "top_p"):
        common.number(data, key)
    _stop(data)
    common.optional(data, "stream_options", (dict,), "an object")
    return model, stream


def request_to_canonical(data: dict[str, Any]) -> C.Request:
    """The chat request a completion is served by: the prompt as the one user turn."""
    model, stream = validate(data)
    return C.Request(
        model=model,
        messages=(C.Message("user", (C.Text(_prompt(data)),)),),
        max_tokens=data.get("max_tokens"),
        temperature=data.get("temperature"),
        top_p=data.get("top_p"),
        stop=_stop(data),
        stream=stream,
    )


def answering(data: dict[str, Any]) -> "Answering":
    """How the answers to the (validated) body C{data} look: echoed or not, streamed usage or not."""
    options = data.get("stream_options") or {}
    return Answering(echo=_prompt(data) if data.get("echo") else "",
                     include_usage=options.get("include_usage") is True)


# -- answers ---------------------------------------------------------------------------


def _finish_reason(stop_reason: str) -> str:
    # A completion stops, runs out of tokens or is filtered; a tool call (never asked for) is a stop.
    return stop_reason if stop_reason in (C.STOP, C.LENGTH, C.CONTENT_FILTER) else "stop"


def _completion_id(upstream_id: str, origin: Origin) -> str:
    return common.prefixed_id("cmpl-", upstream_id.removeprefix("chatcmpl-"), origin)


def _usage_body(usage: C.Usage) -> dict[str, Any]:
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens}


def _choice(text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}


@frozen
class Answering:
    """
    The answer side of one completions request, as the frontend holds a
    client format: its C{NAME}, whole answers, the stream encoder and the
    error shapes. C{echo} is the prompt when the client asked for it back.
    """

    echo: str = ""
    #: stream_options.include_usage: a last chunk with no choices and the usage
    include_usage: bool = False

    NAME = NAME
    error_body = staticmethod(error_body)
    stream_error_event = staticmethod(stream_error_event)

    def response_from_canonical(self, resp: C.Response, model: str, *,
                                origin: Origin = DEFAULT_ORIGIN) -> dict[str, Any]:
        """A C{text_completion} for C{resp}, naming C{model}; the prompt first when echoed."""
        return {
            "id": _completion_id(resp.id, origin),
            "object": "text_completion",
            "created": int(origin.now()),
            "model": model,
            "choices": [_choice(self.echo + common.joined_text(resp.parts), _finish_reason(resp.stop_reason))],
            "usage": _usage_body(resp.usage),
        }

    def StreamEncoder(self, model: str, *, origin: Origin = DEFAULT_ORIGIN) -> "StreamEncoder":
        return StreamEncoder(model, origin=origin, echo=self.echo, include_usage=self.include_usage)


class StreamEncoder:
    """
    Canonical stream events -> C{text_completion} SSE chunks (text deltas,
    then one with the finish reason), ending with C{data: [DONE]}, or with
    an error frame and nothing after it. Thinking and tool calls have no
    place in a completion and are left out.
    """

    def __init__(self, model: str, *, origin: Origin = DEFAULT_ORIGIN, echo: str = "",
                 include_usage: bool = False) -> None:
        self._model = model
        self._origin = origin
        self._created = int(origin.now())
        self._id = ""
        self._echo = echo
        self._include_usage = include_usage
        self._usage: C.Usage | None = None
        self._started = False
        self._failed = False

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return b"data: " + common.sse_json({"id": self._id, "object": "text_completion", "created": self._created,
                                            "model": self._model, "choices": choices, **extra}) + b"\n\n"

    def feed(self, event: C.Event) -> bytes:
        if self._failed:
            return b""
        out = b""
        if not self._started:
            self._started = True
            self._id = _completion_id(event.id if isinstance(event, C.Start) else "", self._origin)
            if self._echo:
                out = self._chunk([_choice(self._echo, None)])
        if isinstance(event, C.TextDelta):
            return out + (self._chunk([_choice(event.text, None)]) if event.text else b"")
        if isinstance(event, C.Finish):
            return out + self._chunk([_choice("", _finish_reason(event.stop_reason))])
        if isinstance(event, C.UsageEvent):
            self._usage = event.usage  # sent once, last (upstreams send it with or after the finish)
            return out
        if isinstance(event, C.ErrorEvent):
            self._failed = True
            return out + b"data: " + common.sse_json(
                {"error": {"message": event.message, "type": event.type, "code": None}}) + b"\n\n"
        return out

    def close(self) -> bytes:
        """The usage chunk when asked for, then C{[DONE]}; nothing after an error."""
        if self._failed:
            return b""
        tail = b""
        if self._include_usage:
            tail = self._chunk([], usage=_usage_body(self._usage or C.Usage()))
        return tail + b"data: [DONE]\n\n"
