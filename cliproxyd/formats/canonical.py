"""
The canonical model between wire formats.

A client's request is decoded from its format into these values and encoded
into the upstream's format; the upstream's answer, whole or streamed, comes
back the same way. Translation only happens across formats: when the
client's format is the upstream's, the body passes through untouched.

Only what at least two formats can express lives here; anything a target
cannot express is dropped by its encoder, deliberately, and logged at debug.
"""

from __future__ import annotations

from typing import Any, Union

from attrs import field, frozen

from cliproxyd.modelnames import Reasoning


@frozen
class Text:
    text: str


@frozen
class Image:
    """An image by URL, or inline as base64 C{data} with its C{media_type}."""

    url: str = ""
    data: str = ""
    media_type: str = ""


@frozen
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model produced it


@frozen
class ToolResult:
    call_id: str
    content: str
    is_error: bool = False


@frozen
class Thinking:
    text: str
    signature: str = ""


Part = Union[Text, Image, ToolCall, ToolResult, Thinking]


@frozen
class Message:
    role: str  # "user" | "assistant"
    parts: tuple[Part, ...]


@frozen
class Tool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(factory=dict, eq=False)


@frozen
class Request:
    model: str
    messages: tuple[Message, ...]
    system: str = ""
    tools: tuple[Tool, ...] = ()
    #: "auto" | "none" | "required" | a tool name
    tool_choice: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    #: what the client asked of thinking (a level or a budget), or None to leave it
    reasoning: Reasoning | None = None


@frozen
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


#: Canonical stop reasons.
STOP, LENGTH, TOOL_CALLS, CONTENT_FILTER = "stop", "length", "tool_calls", "content_filter"


@frozen
class Response:
    id: str
    model: str
    parts: tuple[Part, ...]
    stop_reason: str = STOP
    usage: Usage = field(factory=Usage)


# -- stream events ----------------------------------------------------------------


@frozen
class Start:
    id: str
    model: str


@frozen
class TextDelta:
    text: str


@frozen
class ThinkingDelta:
    text: str


@frozen
class ToolCallStart:
    index: int
    id: str
    name: str


@frozen
class ToolCallDelta:
    index: int
    arguments: str


@frozen
class Finish:
    stop_reason: str


@frozen
class UsageEvent:
    usage: Usage


@frozen
class ErrorEvent:
    message: str
    type: str = "server_error"
    #: the HTTP status the upstream's error stands for (its code, or its type:
    #: a rate limit 429, an overload 529 or 503), 0 when it says nothing we know
    status: int = 0


Event = Union[Start, TextDelta, ThinkingDelta, ToolCallStart, ToolCallDelta, Finish, UsageEvent, ErrorEvent]


class BadRequest(Exception):
    """A client body we will not send anywhere; C{str()} is the reason."""
