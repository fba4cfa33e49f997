"""
Reading upstream bodies: whole ones, and streams relayed with backpressure.

Both readers are C{IProtocol}s handed to C{response.deliverBody}, and both
keep an idle timer: treq's C{timeout=} covers only the response headers, so a
body that stalls would otherwise hold the request forever. The timer measures
the gap since the last chunk and does not run while the client side has
paused us (a slow reader is not an idle upstream).
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from zope.interface import implementer

from cliproxyd.replies import UpstreamError

#: Error bodies are read for diagnostics and for the client; never more than this.
MAX_ERROR_BODY = 64 * 1024
#: A stream that sends this much without a data line is not a stream we can relay.
MAX_BEFORE_FIRST_PAYLOAD = 1024 * 1024


class IdleTimer:
    """Call C{on_idle} once no data has arrived for C{timeout} seconds."""

    def __init__(self, clock: IReactorTime, timeout: float, on_idle: Callable[[], None]) -> None:
        self._clock = clock
        self._timeout = timeout
        self._on_idle = on_idle
        self.paused = False
        self.last = clock.seconds()
        self._call: IDelayedCall | None = clock.callLater(timeout, self._check)

    def touch(self) -> None:
        self.last = self._clock.seconds()

    def _check(self) -> None:
        remaining = self.last + self._timeout - self._clock.seconds()
        if self.paused or remaining > 0:
            self._call = self._clock.callLater(self._timeout if self.paused else remaining, self._check)
            return
        self._call = None
        self._on_idle()

    def cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


def describe(reason: Failure | BaseException) -> str:
    """A readable one-line reason, unwrapping the lists that C{ResponseFailed} and friends carry."""
    value = reason.value if isinstance(reason, Failure) else reason
    inner = getattr(value, "reasons", None)
    if inner:
        return "; ".join(describe(r) for r in inner)
    text = str(value)
    return f"{type(value).__name__}: {text}" if text else type(value).__name__


def is_cancellation(e: BaseException) -> bool:
    """Whether C{e} is, or wraps, a C{CancelledError} (the Agent wraps it in C{ResponseNeverReceived})."""
    if isinstance(e, CancelledError):
        return True
    return any(r.check(CancelledError) for r in getattr(e, "reasons", None) or ())


def _clean_end(reason: Failure) -> bool:
    # PotentialDataLoss: a body with neither a length nor chunking, ended by
    # the close; that is how such bodies always end.
    return reason.check(ResponseDone, PotentialDataLoss) is not None


class _WatchedBody(Protocol):
    """
    The part both readers share: an idle timer from connection to end, and
    the two ways we stop a body early, a timeout or a cancellation (the
    caller's Deferred was cancelled, usually because the client left).
    """

    def __init__(self, clock: IReactorTime, idle_timeout: float) -> None:
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._idle: IdleTimer | None = None
        self._timed_out = False
        self._cancelled = False

    def connectionMade(self) -> None:
        self._idle = IdleTimer(self._clock, self._idle_timeout, self._on_idle)

    def _stop_timer(self) -> None:
        if self._idle is not None:
            self._idle.cancel()

    def _on_idle(self) -> None:
        self._timed_out = True
        self._abort()

    def _cancel(self) -> None:
        self._cancelled = True
        self._abort()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()


class BodyCollector(_WatchedBody):
    """Read a whole body (bounded by C{limit}) into C{done}."""

    def __init__(self, clock: IReactorTime, idle_timeout: float, limit: int | None = None) -> None:
        super().__init__(clock, idle_timeout)
        self.done: Deferred[bytes] = Deferred(lambda _: self._cancel())
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        self._idle.touch()
        if self._limit is not None:
            room = self._limit - self._size
            if room <= 0:
                return
            data = data[:room]
        self._parts.append(data)
        self._size += len(data)

    def connectionLost(self, reason: Failure) -> None:
        self._stop_timer()
        if self.done.called:
            return
        if self._cancelled:
            self.done.errback(CancelledError())
        elif _clean_end(reason) or (self._limit is not None and self._size >= self._limit):
            self.done.callback(b"".join(self._parts))
        elif self._timed_out:
            self.done.errback(
                UpstreamError("timeout", f"no body data for {self._idle_timeout:g}s")
            )
        else:
            self.done.errback(UpstreamError("broken", f"body cut short: {describe(reason)}"))



def scan_first_payload(buffer: bytes) -> tuple[bool, bytes | None]:
    """
    Look for the first SSE C{data:} line with a payload.

    @return: C{(found, error)}: C{found} once a complete non-empty data line
        is in C{buffer}; C{error} is that payload when it is an error object
        rather than an answer.
    """
    lines = buffer.split(b"\n")
    for line in lines[:-1]:  # the last piece may be an incomplete line
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload:
                if payload.startswith(b'{"error"'):
                    return True, payload
                return True, None
    return False, None


@implementer(IPushProducer)
class _RelayProducer:
    """The upstream transport as the client connection sees it: pausing also pauses the idle timer."""

    def __init__(self, relay: "StreamRelay") -> None:
        self._relay = relay

    def pauseProducing(self) -> None:
        self._relay._idle.paused = True
        self._relay.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._relay._idle.paused = False
        self._relay._idle.touch()
        self._relay.transport.resumeProducing()

    def stopProducing(self) -> None:
        # The client connection is going away: end the relay as cancelled,
        # not as an upstream failure.
        self._relay._cancel()


class StreamConsumer:
    """What a relay writes to: C{twisted.web} requests provide all three."""

    def write(self, data: bytes) -> None: ...
    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...


class StreamRelay(_WatchedBody):
    """
    Relay an upstream SSE body to a client, chunk by chunk.

    Until the first payload arrives the body is buffered and C{first} is
    pending; an error, a timeout or an empty close before then errbacks
    C{first} with an L{UpstreamError}, so the caller can still move on to
    another credential. After C{attach}, every chunk goes straight to the
    consumer, which has the upstream transport registered as its streaming
    producer: when the client reads slowly the upstream socket is paused.
    """

    def __init__(self, clock: IReactorTime, idle_timeout: float) -> None:
        super().__init__(clock, idle_timeout)
        self.first: Deferred[None] = Deferred(lambda _: self._cancel())
        #: fires like attach()'s Deferred, for whoever records the outcome
        self.ended: Deferred[str | None] = Deferred()
        self._buffer: list[bytes] = []
        self._consumer: StreamConsumer | None = None
        self._done: Deferred[str | None] | None = None
        self._ended: Failure | None = None
        self._error: UpstreamError | None = None
        self._registered = False

    def dataReceived(self, data: bytes) -> None:
        self._idle.last = self._clock.seconds()
        consumer = self._consumer
        if consumer is not None:
            consumer.write(data)
            return
        self._buffer.append(data)
        if self.first.called:
            return
        head = b"".join(self._buffer)
        self._buffer = [head]
        found, error = scan_first_payload(head)
        if not found and len(head) > MAX_BEFORE_FIRST_PAYLOAD:
            self._error = UpstreamError(
                "stream_error", f"no data event in the first {len(head)} bytes", status=502
            )
            self._abort()
        elif error is not None:
            self._error = UpstreamError(
                "stream_error", "the stream opened with an error", status=502, body=error
            )
            self._abort()
        elif found:
            self.first.callback(None)

    def connectionLost(self, reason: Failure) -> None:
        self._stop_timer()
        self._ended = reason
        if not self.first.called:
            self.first.errback(self._failure_before_first(reason))
        elif self._consumer is not None:
            self._finish()

    def _failure_before_first(self, reason: Failure) -> Exception:
        if self._cancelled:
            return CancelledError()
        if self._error is not None:
            return self._error
        if self._timed_out:
            return UpstreamError("timeout", f"no stream data for {self._idle_timeout:g}s")
        if _clean_end(reason):
            return UpstreamError("empty_stream", "the stream ended before any data")
        return UpstreamError("broken", f"stream cut short: {describe(reason)}")

    def attach(self, consumer: StreamConsumer) -> "Deferred[str | None]":
        """
        Send everything so far to C{consumer}, then the rest as it comes.

        @return: fires when the upstream stream ends: with C{None} for a
            clean end, or with a message when it broke off or went idle.
            Cancelling it aborts the upstream request.
        """
        self._done = Deferred(lambda _: self._cancel())
        self._consumer = consumer
        if self._buffer:
            consumer.write(b"".join(self._buffer))
            self._buffer = []
        if self._ended is not None:
            self._finish()
        else:
            self._registered = True
            consumer.registerProducer(_RelayProducer(self), True)
        return self._done

    def _finish(self) -> None:
        if self._done.called:
            return
        if self._registered:
            self._registered = False
            self._consumer.unregisterProducer()
        reason = self._ended
        if self._cancelled:
            self.ended.errback(CancelledError())
            self._done.errback(CancelledError())
            return
        if _clean_end(reason):
            problem = None
        elif self._timed_out:
            problem = f"upstream stream idle for {self._idle_timeout:g}s"
        else:
            problem = f"upstream stream broke off: {describe(reason)}"
        self.ended.callback(problem)
        self._done.callback(problem)

