"""
The contract every format module keeps, as protocols.

A format module (C{openai_chat}, C{claude}, C{gemini}, C{responses}) is held
by its callers as "the client's format" or "the upstream's format" and used
through these names only, never branching on which one it is. L{Format} is
what all four provide; L{CountingFormat} adds the token counts of the two
that have a count endpoint (Claude and Gemini). A module is checked against
them, name by name and signature by signature, by C{tests/test_format_contract.py}.

A module may give a member more than the protocol asks (another parameter
with a default, such as Gemini's C{StreamEncoder(model, sse=False)}); it may
not ask more of its callers. Names one format has and another lacks, or
spells differently (C{models_body}, C{model_body}, C{is_error_body},
C{error_type}), are not part of the contract.

Encoders and decoders are pure and synchronous; they never do I/O. What
an encoder writes depends on its input alone, and on the L{Origin} it is
given: the time an answer was created and the ids the upstream did not give
come from there (L{DEFAULT_ORIGIN}, the wall clock and random ids, when the
caller gives none).
"""

from __future__ import annotations

from typing import Any, Protocol

from cliproxyd.formats import canonical as C
from cliproxyd.formats.common import DEFAULT_ORIGIN, Origin
from cliproxyd.modelnames import Reasoning


class Decoder(Protocol):
    """An upstream's stream, one SSE data payload at a time, as canonical events."""

    def feed(self, data: dict[str, Any]) -> list[C.Event]:
        """
        The events in one SSE data payload of an upstream stream,
        JSON-decoded, in order. An error payload becomes a
        L{C.ErrorEvent}.
        """


class Encoder(Protocol):
    """Canonical stream events as the framed bytes of a client's stream."""

    def feed(self, event: C.Event) -> bytes:
        """
        The bytes C{event} makes for the client (SSE events; Gemini's
        JSON-array stream when built with C{sse=False}); a
        L{C.ErrorEvent} becomes the format's in-stream error, and ends the
        stream.
        """

    def close(self) -> bytes:
        """Whatever ends a stream that ended cleanly (nothing after an error)."""


class Format(Protocol):
    """The names every format module provides."""

    #: C{"openai"} | C{"claude"} | C{"gemini"} | C{"responses"}: the key in
    #: L{cliproxyd.formats.FORMATS}, and what a reply's C{fmt} names.
    NAME: str

    # -- the passthrough path: a client body checked, renamed, sent as it is

    def validate(self, data: Any) -> tuple[str, bool]:
        """
        A cheap check of a decoded client body, on the passthrough path: the
        types of its top-level fields, and that each turn of the
        conversation is an object. It walks nothing deeper (what is inside
        the turns is the same-format upstream's to judge).

        @return: C{(model, stream)}; Gemini carries the model and the stream
            flag in the URL and returns C{("", False)}.
        @raise C.BadRequest: naming the field that is wrong.
        """

    def set_model(self, data: dict[str, Any], model: str) -> dict[str, Any]:
        """
        A shallow copy of a client body with the model renamed to C{model}
        (Gemini: the body unchanged, the model lives in the URL).
        """

    def apply_reasoning(self, data: dict[str, Any], reasoning: Reasoning, model: str = "") -> None:
        """
        Set this format's thinking fields in C{data} (a copy made by
        L{set_model}), overriding what was there, for the upstream C{model}
        (whose generation may decide the field's form). Used for the thinking
        suffix of a model name.
        """

    # -- requests through the canonical model

    def request_to_canonical(self, data: dict[str, Any]) -> C.Request:
        """
        The full decode of a client body. Gemini leaves C{model} C{""} and
        C{stream} C{False}, for the caller to fill in from the URL. It first
        checks what L{validate} does, then that the body nests at most
        L{cliproxyd.jsontext.MAX_DEPTH} levels (so that nothing after it,
        walking tool schemas or writing JSON, goes deeper).

        @raise C.BadRequest: naming the field JSON-path style
            (C{"messages[2].content"}), for anything of the wrong type or
            too deep; a decoded JSON value never raises anything else.
        """

    def request_from_canonical(self, req: C.Request, model: str) -> dict[str, Any]:
        """
        The body to send to an upstream of this format, asking for C{model}.
        Maps C{req.reasoning} to this format's thinking fields, and sets the
        stream flag from C{req.stream}, except Gemini's (the URL says it).
        Anything the format cannot express is dropped and logged at debug.
        """

    # -- answers

    def response_to_canonical(self, data: dict[str, Any], *, origin: Origin = DEFAULT_ORIGIN) -> C.Response:
        """A whole upstream answer of this format (C{origin} names what the upstream left unnamed)."""

    def response_from_canonical(self, resp: C.Response, model: str, *,
                                origin: Origin = DEFAULT_ORIGIN) -> dict[str, Any]:
        """
        A whole answer for a client of this format, naming C{model}; its
        creation time (where the format has one) and any id the upstream did
        not give come from C{origin}.
        """

    def StreamDecoder(self, *, origin: Origin = DEFAULT_ORIGIN) -> Decoder:
        """A decoder for one upstream stream of this format (C{origin} names what the upstream left unnamed)."""

    def StreamEncoder(self, model: str, *, origin: Origin = DEFAULT_ORIGIN) -> Encoder:
        """
        An encoder for one client stream of this format, naming C{model}.
        It reads C{origin}'s time once, when built, and asks it for an id only
        when the upstream's stream gave none.
        """

    def name_answer_model(self, data: dict[str, Any], model: str) -> bool:
        """
        In C{data}, a whole upstream answer of this format or one event of
        its stream, name C{model} where the upstream named its model
        (C{force-mapping}: a passed-through answer names the model as the
        client asked for it); changed in place. Whether there was a name.
        """

    # -- errors

    def error_body(self, status: int, message: str, extra: dict[str, Any] | None = None) -> bytes:
        """
        An error answer in this format's shape, for HTTP C{status}; C{extra}
        joins the error object (and may override what the status implies).
        """

    def stream_error_event(self, message: str) -> bytes:
        """
        An error inside a stream whose events came through from the upstream
        as they were, after the status was sent (so no encoder knows the
        stream's state).
        """

    # -- the end of a stream

    def is_stream_end(self, data: bytes) -> bool:
        """
        Whether C{data}, raw bytes of an upstream stream of this format, has
        the stream's final event in it (OpenAI's C{[DONE]} or a finish
        reason, Claude's C{message_stop}, Responses' C{response.completed}
        or C{response.incomplete}, Gemini's C{finishReason}): what a
        complete stream has and a cut one lacks.

        Asked of every chunk of a relayed stream, so it is a bytes search,
        never a parse; it finds only JSON structure, never the inside of a
        string value (where a quote is escaped and a newline is C{\n}).
        """


class CountingFormat(Format, Protocol):
    """A format with a token-count endpoint (Claude and Gemini; OpenAI and Responses have none)."""

    def count_request(self, data: dict[str, Any], model: str) -> dict[str, Any]:
        """The body of a count call to an upstream of this format, from a request body for it asking for C{model}."""

    def count_body(self, tokens: int) -> dict[str, Any]:
        """The answer to a client's count request: C{tokens} in this format's shape."""

    def count_from_body(self, data: dict[str, Any]) -> int:
        """
        The count in an upstream's count answer.

        @raise ValueError: when the answer has none (Claude's count raises
            C{KeyError} for a missing field).
        """
