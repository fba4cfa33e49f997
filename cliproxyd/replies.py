"""
The seam between the conductor and the executors: what a request looks like
to an executor (L{Outbound}), what an executor is (L{Executor}), and what it
gives back (L{Reply}, L{StreamReply}) or raises (L{UpstreamError}).

Everyone on the request path shares these values, so they live below all of
them: the executors make them, the conductor judges them, the frontend
renders them. This module imports nothing of cliproxyd's at run time.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from attrs import field, frozen

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from cliproxyd.credentials import Credential
    from cliproxyd.formats import canonical as C


#: The kinds of L{UpstreamError} that are protocol faults: an answer whose
#: form is broken (cut short, not JSON, a stream without content or without
#: its final event), not a refusal.
PROTOCOL_FAULTS = frozenset({"broken", "empty_stream"})


class UpstreamError(Exception):
    """
    An attempt that failed: before anything reached the client (raised), or
    a stream that went wrong after it had started (what its relay's
    C{ended} fires with).

    @ivar status: the upstream HTTP status, or 0 when there was no response
        (connection refused, reset, timed out). For an error inside a 200
        (an error event, an error object), the status its type stands for.
    @ivar kind: C{"http"}, C{"connect"} (no connection made), C{"dropped"}
        (a connection closed with no answer), C{"timeout"}, C{"empty_stream"},
        C{"stream_error"} (the upstream's own error event) or C{"broken"}.
    @ivar body: the upstream error body (bounded), if any.
    @ivar retry_after: seconds the upstream asked us to wait, if it said.
    @ivar relayed: the upstream's own error event ended a stream, and the
        client has had it (relayed as it was, or translated): nothing is to
        be added.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        status: int = 0,
        body: bytes = b"",
        retry_after: float | None = None,
        fmt: str = "",
        relayed: bool = False,
        headers: Any = None,
    ) -> None:
        super().__init__(kind, message, status)
        self.kind = kind
        self.message = message
        self.status = status
        self.body = body
        self.retry_after = retry_after
        #: the wire format of C{body} (the upstream's), if it came from an upstream
        self.fmt = fmt
        self.relayed = relayed
        #: the upstream's response headers, for an HTTP error (C{passthrough-headers} passes some on)
        self.headers = headers

    @property
    def protocol_fault(self) -> bool:
        """Whether this is a protocol fault of one answer (L{PROTOCOL_FAULTS}), cooled briefly."""
        return self.kind in PROTOCOL_FAULTS

    def __str__(self) -> str:
        return f"{self.status or self.kind}: {self.message}"

    @property
    def detail(self) -> str:
        """The message and the upstream body, for the error patterns of the cooldown table."""
        if not self.body:
            return self.message
        return f"{self.message} {self.body[:2000].decode('utf-8', 'replace')}"


@frozen
class Reply:
    """A whole (non-streamed) successful response."""

    status: int
    content_type: bytes
    body: bytes
    #: a count computed here rather than by the upstream (never clears cooldowns)
    local: bool = False
    #: the wire format of C{body}: the upstream's
    fmt: str = "openai"
    #: for a count: the input tokens
    tokens: int | None = None
    #: C{body} decoded (the executor checked it is a JSON object), for whoever translates it
    data: Any = field(default=None, eq=False, repr=False)
    #: the upstream response's headers (C{passthrough-headers} passes some on), if any
    headers: Any = field(default=None, eq=False, repr=False)


class Relay(Protocol):
    """The rest of an upstream stream, relayed to one consumer (L{cliproxyd.executors.stream.StreamRelay})."""

    #: fires with None when the stream ended complete, or with what went wrong
    ended: "Deferred[UpstreamError | None]"

    def attach(self, consumer: Any) -> "Deferred[UpstreamError | None]":
        """Relay the stream into C{consumer} (write, registerProducer, unregisterProducer)."""


@frozen
class StreamReply:
    """A streamed response whose first payload has arrived; relay the rest with C{relay.attach}."""

    status: int
    content_type: bytes
    relay: "Relay"
    #: the wire format of the stream's events: the upstream's
    fmt: str = "openai"
    #: the upstream response's headers (C{passthrough-headers} passes some on), if any
    headers: Any = field(default=None, eq=False, repr=False)


class Outbound(Protocol):
    """A request as executors see it: the body for any upstream format (see L{cliproxyd.formats.request})."""

    model: str
    stream: bool

    @property
    def canonical(self) -> "C.Request": ...

    def body_for(self, upstream: str, target: ModuleType) -> bytes: ...

    def count_body_for(self, upstream: str, target: ModuleType) -> bytes: ...


class Executor(Protocol):
    async def execute(self, cred: "Credential", req: Outbound, upstream: str) -> Reply | StreamReply:
        """Send C{req} for model C{upstream} with one credential; raise L{UpstreamError} on failure."""

    async def count_tokens(self, cred: "Credential", req: Outbound, upstream: str) -> Reply:
        """Count C{req}'s input tokens with one credential (locally or upstream)."""
