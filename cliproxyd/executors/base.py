"""What executors return and raise."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from attrs import frozen

from cliproxyd.conductor.policy import is_request_invalid

if TYPE_CHECKING:
    from cliproxyd.credentials import Credential
    from cliproxyd.executors.stream import StreamRelay


class UpstreamError(Exception):
    """
    An attempt that failed before anything reached the client.

    @ivar status: the upstream HTTP status, or 0 when there was no response
        (connection refused, reset, timed out).
    @ivar kind: C{"http"}, C{"connect"}, C{"timeout"}, C{"empty_stream"},
        C{"stream_error"} or C{"broken"}.
    @ivar body: the upstream error body (bounded), if any.
    @ivar retry_after: seconds the upstream asked us to wait, if it said.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        status: int = 0,
        body: bytes = b"",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(kind, message, status)
        self.kind = kind
        self.message = message
        self.status = status
        self.body = body
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.status or self.kind}: {self.message}"

    @property
    def detail(self) -> str:
        """The message and the upstream body, for the error patterns of the cooldown table."""
        if not self.body:
            return self.message
        return f"{self.message} {self.body[:2000].decode('utf-8', 'replace')}"

    @property
    def request_invalid(self) -> bool:
        """
        The client's request is at fault, so another credential would fail
        the same way: a 422, or a 400 that says C{invalid_request_error} (but
        not a model-support error: those move on).
        """
        return is_request_invalid(self.status, self.detail)


@frozen
class Reply:
    """A whole (non-streamed) successful response."""

    status: int
    content_type: bytes
    body: bytes
    #: a count computed here rather than by the upstream (never clears cooldowns)
    local: bool = False


@frozen
class StreamReply:
    """A streamed response whose first payload has arrived; relay the rest with C{relay.attach}."""

    status: int
    content_type: bytes
    relay: "StreamRelay"


class Executor(Protocol):
    async def execute(
        self, cred: "Credential", body: bytes, stream: bool
    ) -> Reply | StreamReply:
        """Send one request with one credential; raise L{UpstreamError} on failure."""

    async def count_tokens(self, cred: "Credential", body: bytes) -> Reply:
        """Count the request's input tokens with one credential (locally or upstream)."""
