"""
Wire formats, and the one contract every format module keeps.

There are four formats, one module each: C{openai_chat} (C{"openai"},
Chat Completions), C{claude} (C{"claude"}, Anthropic Messages), C{gemini}
(C{"gemini"}, generateContent) and C{responses} (C{"responses"}, OpenAI
Responses, also what Codex speaks). All translation goes through
L{cliproxyd.formats.canonical}; a format never imports another format.

Every format module provides these names, so that callers can hold a module
as "the client's format" or "the upstream's format" and never branch on
which one it is::

    NAME: str
        "openai" | "claude" | "gemini" | "responses"

    validate(data: Any) -> tuple[str, bool]
        A cheap check of a decoded client body, on the passthrough path:
        returns (model, stream) or raises BadRequest naming the field. Gemini
        carries the model and stream in the URL: it returns ("", False).

    request_to_canonical(data: dict) -> canonical.Request
        The full decode of a client body; raises BadRequest naming the field
        (JSON-path style: "messages[2].content"). Gemini leaves model "" and
        stream False for the caller to fill in from the URL.

    request_from_canonical(req: canonical.Request, model: str) -> dict
        The body to send to an upstream of this format, asking for C{model}.
        Maps req.reasoning to this format's thinking fields. Sets the
        stream flag from req.stream, except Gemini (the URL says it).
        Anything the format cannot express is dropped and logged at debug.

    set_model(data: dict, model: str) -> dict
        Passthrough: a shallow copy of a client body with the model renamed
        (Gemini: the body unchanged, the model lives in the URL).

    apply_reasoning(data: dict, reasoning: Reasoning, model: str = "") -> None
        Passthrough: set this format's thinking fields in a body (a copy
        made by set_model), overriding what was there, for the upstream
        C{model} (whose generation may decide the field's form). Used for
        the thinking suffix of a model name.

    response_to_canonical(data: dict) -> canonical.Response
        A whole upstream answer.

    response_from_canonical(resp: canonical.Response, model: str) -> dict
        A whole answer for a client, naming C{model}.

    StreamDecoder()
        .feed(data: dict) -> list[canonical.Event]: one SSE data payload of
        an upstream stream, JSON-decoded, in order. An error payload becomes
        canonical.ErrorEvent.

    StreamEncoder(model: str)
        .feed(event: canonical.Event) -> bytes: framed bytes for the client
        (SSE events; Gemini may be built with sse=False for its JSON-array
        stream); canonical.ErrorEvent becomes the format's in-stream error.
        .close() -> bytes: whatever ends a stream that ended cleanly.

    error_body(status: int, message: str, extra: dict | None = None) -> bytes
        An error answer in this format's shape.

    count_body(tokens: int) -> dict / count_from_body(data: dict) -> int
        Token counts (Claude and Gemini only; OpenAI and Responses have no
        count endpoint).

Encoders and decoders are pure and synchronous; they never do I/O.
"""

from cliproxyd.formats import claude, gemini, openai_chat, responses  # noqa: E402

#: The format modules by C{NAME}.
FORMATS = {m.NAME: m for m in (openai_chat, claude, gemini, responses)}
