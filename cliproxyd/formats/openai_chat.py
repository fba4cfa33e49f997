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

from cliproxyd.modelnames import parse_model, suffix_effort


class BadRequest(Exception):
    """A client body we will not send anywhere; C{str()} is the reason."""


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
