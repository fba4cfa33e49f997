"""
The tokens an upstream says an answer used, in each format's own words:
OpenAI's C{usage} (C{prompt_tokens} + C{completion_tokens}), Claude's
C{usage} (input, cache and output tokens; in a stream C{message_start}'s,
updated by C{message_delta}'s), Gemini's C{usageMetadata}
(C{totalTokenCount}) and Responses' C{usage} (C{input_tokens} +
C{output_tokens}; in a stream C{response.completed}'s) and Interactions'
C{usage} (C{total_tokens}; in a stream C{interaction.completed}'s).

Read only for client keys with token limits (the frontend asks): nothing
here runs for other requests. L{StreamUsage} reads the events of an SSE
stream as they pass, keeping only the line not yet complete.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cliproxyd.jsontext import loads

#: A stream line longer than this is not read for usage (it is passed on all the same).
MAX_LINE = 8 << 20


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _openai(data: dict[str, Any]) -> int | None:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    total = _int(usage.get("total_tokens"))
    return total or _int(usage.get("prompt_tokens")) + _int(usage.get("completion_tokens"))


def _claude_usage(usage: Any) -> int | None:
    if not isinstance(usage, dict):
        return None
    return sum(_int(usage.get(k)) for k in ("input_tokens", "cache_creation_input_tokens",
                                              "cache_read_input_tokens", "output_tokens"))


def _claude(data: dict[str, Any]) -> int | None:
    return _claude_usage(data.get("usage"))


def _gemini(data: dict[str, Any]) -> int | None:
    meta = data.get("usageMetadata")
    if not isinstance(meta, dict):
        response = data.get("response")  # Gemini CLI's envelope
        meta = response.get("usageMetadata") if isinstance(response, dict) else None
        if not isinstance(meta, dict):
            return None
    total = _int(meta.get("totalTokenCount"))
    return total or _int(meta.get("promptTokenCount")) + _int(meta.get("candidatesTokenCount"))


def _responses(data: dict[str, Any]) -> int | None:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        response = data.get("response")
        usage = response.get("usage") if isinstance(response, dict) else None
        if not isinstance(usage, dict):
            return None
    total = _int(usage.get("total_tokens"))
    return total or _int(usage.get("input_tokens")) + _int(usage.get("output_tokens"))


def _interactions(data: dict[str, Any]) -> int | None:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        interaction = data.get("interaction")  # a stream's interaction.completed
        usage = interaction.get("usage") if isinstance(interaction, dict) else None
        if not isinstance(usage, dict):
            return None
    total = _int(usage.get("total_tokens"))
    return total or _int(usage.get("total_input_tokens")) + _int(usage.get("total_output_tokens")) + \
        _int(usage.get("total_thought_tokens"))


#: format name -> the tokens an answer (or a stream event's data) says it used, if it says
ANSWER_TOKENS: dict[str, Callable[[dict[str, Any]], int | None]] = {
    "openai": _openai,
    "claude": _claude,
    "gemini": _gemini,
    "responses": _responses,
    # An Images answer's usage has Responses' fields (input_tokens, output_tokens, total_tokens).
    "images": _responses,
    "interactions": _interactions,
}


def answer_tokens(fmt: str, data: Any) -> int | None:
    """The tokens a whole answer of format C{fmt} reports, or C{None}."""
    read = ANSWER_TOKENS.get(fmt)
    return read(data) if read is not None and isinstance(data, dict) else None


class StreamUsage:
    """
    Reads the usage a stream of format C{fmt} reports, from its SSE bytes
    as they pass (L{feed}); L{tokens} is the last total seen. Claude's
    stream reports input tokens at its start and output tokens at its end:
    the two are kept apart and added.
    """

    def __init__(self, fmt: str) -> None:
        self._fmt = fmt
        self._read = ANSWER_TOKENS.get(fmt)
        self._tail = b""
        self._claude_in = 0
        self._claude_out = 0
        self.tokens: int | None = None

    def feed(self, data: bytes) -> None:
        if self._read is None:
            return
        if self._tail:
            data = self._tail + data
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            line = data[start:end]
            start = end + 1
            if line.startswith(b"data:") and b"sage" in line:
                self._line(line[5:].strip())
        rest = data[start:]
        self._tail = rest if len(rest) <= MAX_LINE else b""

    def _line(self, payload: bytes) -> None:
        try:
            event = loads(payload)
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(event, dict):
            return
        if self._fmt == "claude":
            message = event.get("message")
            usage = message.get("usage") if isinstance(message, dict) else event.get("usage")
            if not isinstance(usage, dict):
                return
            inputs = sum(_int(usage.get(k)) for k in ("input_tokens", "cache_creation_input_tokens",
                                                       "cache_read_input_tokens"))
            self._claude_in = max(self._claude_in, inputs)
            self._claude_out = max(self._claude_out, _int(usage.get("output_tokens")))
            self.tokens = self._claude_in + self._claude_out
            return
        found = self._read(event) if self._read is not None else None
        if found is not None:
            self.tokens = found


#: The usage key of each format's events (a Responses or Gemini CLI envelope needs no other).
_USAGE_KEYS: dict[str, bytes] = {"openai": b'"usage"', "claude": b'"usage"', "responses": b'"usage"',
                                 "gemini": b'"usageMetadata"'}
_DECODER = None


def _object_after(text: bytes, at: int) -> dict[str, Any] | None:
    """The JSON object after the key ending at C{at} (past its colon), or None."""
    global _DECODER
    rest = text[at:].lstrip()
    if not rest.startswith(b":"):
        return None
    if _DECODER is None:
        import json

        _DECODER = json.JSONDecoder()
    try:
        value, _ = _DECODER.raw_decode(rest[1:].lstrip().decode("utf-8", "replace"))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def claude_inputs(usage: Any) -> int:
    """A Claude usage object's input tokens (its cache tokens included)."""
    if not isinstance(usage, dict):
        return 0
    return sum(_int(usage.get(k)) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))


def tail_tokens(fmt: str, tail: bytes, head_inputs: int = 0) -> int | None:
    """
    The tokens a finished stream of format C{fmt} reports, read once from
    its last bytes (C{tail}): the last usage object in them, which every
    format sends with (or just before) its final event. Nothing is parsed
    while the stream runs. A Claude stream reports its input tokens at its
    start (C{head_inputs}, from C{message_start}) and its output at its end.
    """
    key = _USAGE_KEYS.get(fmt)
    if key is None:
        return None
    end = len(tail)
    for _ in range(4):  # the last usage object that decodes (one cut off at the tail's start is skipped)
        at = tail.rfind(key, 0, end)
        if at < 0:
            return None
        usage = _object_after(tail, at + len(key))
        if usage is not None:
            break
        end = at
    else:
        return None
    if fmt == "claude":
        total = max(head_inputs, claude_inputs(usage)) + _int(usage.get("output_tokens"))
        return total or None
    wrapped = {"usageMetadata": usage} if fmt == "gemini" else {"usage": usage}
    return ANSWER_TOKENS[fmt](wrapped) or None
