"""
Reading upstream bodies: whole ones, and streams relayed with backpressure.

Both readers are C{IProtocol}s handed to C{response.deliverBody}, and both
keep an idle timer: treq's C{timeout=} covers only the response headers, so a
body that stalls would otherwise hold the request forever. The timer measures
the gap since the last chunk and does not run while the client side has
paused us (a slow reader is not an idle upstream).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from zope.interface import implementer

from cliproxyd.formats import FORMATS
from cliproxyd.formats import canonical as C
from cliproxyd.formats.common import error_status
from cliproxyd.formats.request import dumps, loads
from cliproxyd.formats.translate import SSEParser
from cliproxyd.formats.usage import claude_inputs, tail_tokens
from cliproxyd.replies import UpstreamError

#: Error bodies are read for diagnostics and for the client; never more than this.
MAX_ERROR_BODY = 64 * 1024
#: A stream that sends this much before its first generated event is not one we can relay.
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
            self._idle = None

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



def _duration(value: object) -> float | None:
    """C{"12s"}, C{"1.5s"} (protobuf Duration) or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.endswith("s"):
        try:
            return float(value[:-1])
        except ValueError:
            return None
    return None


def retry_hint_from_body(body: bytes, now: float) -> float | None:
    """
    A retry hint inside an error body, in the forms providers use: Gemini's
    C{error.details[].retryDelay} (C{"12s"}), Codex's
    C{error.resets_in_seconds} or C{error.resets_at} (epoch seconds).
    """
    data = _json_object(body)
    err = data.get("error") if data is not None else None
    if not isinstance(err, dict):
        return None
    for detail in err.get("details") or ():
        if isinstance(detail, dict) and "retryDelay" in detail:
            seconds = _duration(detail["retryDelay"])
            if seconds is not None:
                return max(seconds, 0.0)
    seconds = _duration(err.get("resets_in_seconds"))
    if seconds is not None:
        return max(seconds, 0.0)
    at = err.get("resets_at")
    if isinstance(at, (int, float)) and not isinstance(at, bool):
        return max(float(at) - now, 0.0)
    return None


def _first_object(data: Any) -> Any:
    """A JSON array stream's first element (Gemini's form without SSE); anything else as it is."""
    if isinstance(data, list):
        return data[0] if data and isinstance(data[0], dict) else None
    return data


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """The JSON object C{raw} is (or, for an array, starts with); None when it is none."""
    try:
        data = _first_object(loads(raw))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def json_answer(body: bytes, fmt: str, now: float) -> dict[str, Any]:
    """
    The JSON object of a whole 2xx answer, decoded once.

    @raise UpstreamError: kind C{"broken"}, status 502, when the body is no
        JSON object (cut short, empty, an HTML page, an array): a protocol
        fault, and another credential may answer. Kind C{"http"} when it is
        an error object all the same (or an array that starts with one, as
        Gemini sends them, or an error event such as Responses' C{error} and
        C{response.failed}), with the status its code or type stands for
        (502 when it says none) and its retry hint.
    """
    data = _json_object(body)
    err = data.get("error") if data is not None else None
    if data is not None and not isinstance(err, dict):
        # An error shaped as a stream's event, sent as a whole body: a
        # Responses error event, or a response.failed with its error inside.
        kind = data.get("type")
        if kind == "error":
            err = data
        elif kind == "response.failed":
            inner = data.get("response")
            err = inner.get("error") if isinstance(inner, dict) and isinstance(inner.get("error"), dict) else {}
    if isinstance(err, dict):
        status = error_status(err.get("code"), err.get("status"), err.get("type")) or 502
        message = err.get("message")
        raise UpstreamError("http", str(message) if message else "the upstream answered with an error object",
                            status=status, body=body[:MAX_ERROR_BODY], retry_after=retry_hint_from_body(body, now),
                            fmt=fmt)
    if data is None or body.lstrip()[:1] != b"{":  # an array of answers is no answer either
        raise UpstreamError("broken", "the upstream answer is not a JSON object", status=502)
    return data


#: What a held event is before the first generated one.
KEEPALIVE, PREAMBLE, GENERATED = "keep-alive", "preamble", "generated"
#: The canonical events that are the model's own: the end of a stream's hold.
_GENERATED = (C.TextDelta, C.ThinkingDelta, C.ToolCallStart, C.ToolCallDelta, C.Finish)
#: How many bytes of a stream's end are kept, to read its last event from.
TAIL = 8 * 1024
#: How far a final event's pattern may reach back into the previous chunk.
_CARRY = 128


#: What a decoder raises on an event whose fields have the wrong types.
_UNREADABLE = (AttributeError, TypeError, KeyError, IndexError, ValueError)


def _error_in(events: list[C.Event]) -> C.ErrorEvent | None:
    return next((e for e in events if isinstance(e, C.ErrorEvent)), None)


def _read(decoder: Any, data: dict[str, Any]) -> list[C.Event] | None:
    """What C{decoder} makes of one event; None when the event is not one of its format's."""
    try:
        return decoder.feed(data)
    except _UNREADABLE:
        return None


#: The event types any format reads as an error (a tuple: a type that is no string must not raise).
_ERROR_TYPES = ("error", "response.failed")


def _shaped_like_error(data: dict[str, Any]) -> bool:
    """
    Whether any format's decoder could read C{data} as an error: they all
    look for an C{error} member, or a C{type} or C{event_type} of C{error},
    or Responses' C{response.failed}. Most events before a stream's content
    (an opening event, a role-only chunk) are none of these, and need not be
    read by every format's decoder.
    """
    return "error" in data or data.get("type") in _ERROR_TYPES or data.get("event_type") == "error"


def _best_error(data: dict[str, Any], fmt: ModuleType, own: C.ErrorEvent | None) -> C.ErrorEvent | None:
    """
    The error in an event: C{own}, the upstream format's reading, when it
    says what status it stands for; else the first reading of another
    format that does (an upstream may relay another provider's errors, as
    an OpenAI-compatible one in front of Anthropic does); else whichever
    was found. Only asked of an event that is no content, before a stream's
    first content, or of a stream's last event.
    """
    if own is not None and own.status:
        return own
    if own is None and not _shaped_like_error(data):
        return None
    found = [own] if own is not None else []
    for other in FORMATS.values():
        if other is not fmt:
            error = _error_in(_read(other.StreamDecoder(), data) or [])
            if error is not None and error.status:
                return error
            found += [error] if error is not None else []
    return found[0] if found else None


def stream_error(event: C.ErrorEvent, payload: bytes, fmt: str, now: float,
                 redact: Callable[[bytes], bytes] = lambda data: data) -> UpstreamError:
    """
    The upstream's error event (C{payload}, read as C{event}) as an
    attempt's error: the status its type stands for (502 when it says none)
    and the retry hint it carries, so the cooldown table treats it as the
    same refusal in an HTTP status would be.
    """
    body = redact(payload)
    message = redact(event.message.encode("utf-8", "replace")).decode("utf-8", "replace")
    return UpstreamError("stream_error", message, status=event.status or 502, body=body,
                         retry_after=retry_hint_from_body(body, now), fmt=fmt)


def first_error(body: bytes, fmt: ModuleType) -> tuple[C.ErrorEvent, bytes] | None:
    """The first error event of a whole SSE body (a stream read at once), and its payload."""
    decoder = fmt.StreamDecoder()
    for _, payload in SSEParser().feed_events(body + b"\n\n"):
        data = _json_object(payload)
        if data is not None:
            error = _best_error(data, fmt, _error_in(_read(decoder, data) or []))
            if error is not None:
                return error, payload
    return None


def _last_event(tail: bytes) -> tuple[bytes, bytes] | None:
    """C{(name, data)} of the last complete SSE event in C{tail}, if it ends with one."""
    tail = tail.replace(b"\r\n", b"\n")
    if not tail.endswith(b"\n\n"):
        return None
    block = tail[:-2].rsplit(b"\n\n", 1)[-1]
    name, data = b"", []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    return (name, b"\n".join(data)) if data else None


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
    Relay an upstream SSE body to a client, chunk by chunk, once it has
    shown it is an answer.

    Until the first I{generated} event (content: text, thinking, a tool
    call; or the model's finish) the body is held and C{first} is pending.
    The held events are parsed (they are few and small) with the upstream
    format's decoder: an opening event (Claude's C{message_start}, OpenAI's
    role-only chunk, Responses' C{response.created}), a ping or a comment
    is held on; an error event, C{response.failed}, events that are not
    JSON, a body that ends or breaks, an idle timeout, or
    L{MAX_BEFORE_FIRST_PAYLOAD} bytes without a generated event errback
    C{first} with an L{UpstreamError}, so the caller can still move on to
    another credential: nothing has reached the client. Keep-alives (pings,
    comments) do not count as activity while the body is held, so the wait
    for the first generated event is bounded by the idle timeout.

    After C{attach}, every chunk goes straight to the consumer, which has
    the upstream transport registered as its streaming producer: when the
    client reads slowly the upstream socket is paused. Nothing is parsed
    any more; the relay looks for the format's final event in the bytes
    (C{is_stream_end}) and keeps the last few kilobytes, so that a stream that
    ends without its final event is reported as broken, and one ended by
    the upstream's own error event reports that error.

    @param fmt: the upstream's format module.
    @param redact: applied to upstream bytes that go into an error (an
        upstream that echoes a key must not put it in a log).
    """

    def __init__(self, clock: IReactorTime, idle_timeout: float, fmt: ModuleType,
                 redact: Callable[[bytes], bytes] = lambda data: data) -> None:
        super().__init__(clock, idle_timeout)
        self.first: Deferred[None] = Deferred(lambda _: self._cancel())
        #: fires like attach()'s Deferred, for whoever records the outcome
        self.ended: Deferred[UpstreamError | None] = Deferred()
        self._fmt = fmt
        self._redact = redact
        self._buffer: list[bytes] = []
        self._held = 0
        self._parser = SSEParser()
        self._decoder = fmt.StreamDecoder()
        self._events = 0  # events read while held
        self._end = fmt.is_stream_end
        self._final = False  # the format's final event went by
        self._tail = bytearray(b"\n")  # so that a final event on the first line is on a line of its own
        self._consumer: StreamConsumer | None = None
        self._done: Deferred[UpstreamError | None] | None = None
        self._ended: Failure | None = None
        self._error: UpstreamError | None = None
        self._registered = False
        #: input tokens a held event reported (Claude's message_start), for L{usage_tokens}
        self._head_inputs = 0

    def dataReceived(self, data: bytes) -> None:
        self._watch(data)
        consumer = self._consumer
        if consumer is not None:
            self._idle.last = self._clock.seconds()
            consumer.write(data)
            return
        self._buffer.append(data)
        if self.first.called:
            self._idle.last = self._clock.seconds()
            return
        self._held += len(data)
        self._hold(data)

    def _watch(self, data: bytes) -> None:
        """Note the format's final event when it goes by; keep the stream's last bytes (its usage is there)."""
        tail = self._tail
        if not self._final:
            self._final = self._end(tail[-_CARRY:] + data)  # with the end of the chunk before: a marker may straddle
        tail += data
        if len(tail) > 2 * TAIL:
            del tail[:-TAIL]

    def _hold(self, data: bytes) -> None:
        """Read the held events of C{data}: release the stream at a generated one (the rest goes unread), or give up on it."""
        active = False
        for name, payload in self._parser.iter_events(data):
            self._events += 1
            verdict = self.judge(name, payload)
            if verdict == KEEPALIVE:
                continue
            active = True
            if isinstance(verdict, UpstreamError):
                self._error = verdict
                self._abort()
                return
            if verdict == GENERATED:
                self._idle.touch()
                self.first.callback(None)
                return
        if active:
            self._idle.touch()
        if self._held > MAX_BEFORE_FIRST_PAYLOAD:
            self._error = UpstreamError("broken", f"no content in the first {self._held} bytes of the stream",
                                        status=502)
            self._abort()

    def judge(self, name: bytes, payload: bytes) -> str | UpstreamError:
        """
        What one event of the stream is, before its first generated one:
        L{KEEPALIVE}, L{PREAMBLE}, L{GENERATED}, or the L{UpstreamError} it
        makes of the stream (an error event; an event that is not JSON).
        """
        if payload == b"[DONE]":
            return PREAMBLE  # an end: the body's end says whether anything came before it
        data = _json_object(payload)
        if data is None:
            return UpstreamError("broken", "the stream's events are not JSON objects", status=502)
        data = self.unwrap(data)
        if name == b"ping" or data.get("type") == "ping":
            return KEEPALIVE
        message = data.get("message")
        if isinstance(message, dict) and "usage" in message:  # Claude's message_start: the input tokens
            self._head_inputs = claude_inputs(message["usage"])
        events = _read(self._decoder, data)
        if events is None:
            return UpstreamError("broken", f"the stream's events are not {self._fmt.NAME} events", status=502)
        error = _error_in(events)
        if error is None and any(isinstance(e, _GENERATED) for e in events):
            return GENERATED
        error = _best_error(data, self._fmt, error)
        if error is None and name == b"error":
            error = C.ErrorEvent(str(data.get("message") or "upstream error event"))
        if error is not None:
            return self._error_event(error, dumps(data))
        return PREAMBLE

    def unwrap(self, data: dict[str, Any]) -> dict[str, Any]:
        """An event's payload as the upstream format's decoder reads it (an envelope removed)."""
        return data

    def _error_event(self, event: C.ErrorEvent, payload: bytes) -> UpstreamError:
        return stream_error(event, payload, self._fmt.NAME, self._clock.seconds(), self._redact)

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
            return UpstreamError("timeout", f"no content in the stream for {self._idle_timeout:g}s")
        if not _clean_end(reason):
            return UpstreamError("broken", f"stream cut short: {describe(reason)}", status=502)
        held = b"".join(self._buffer).strip()
        if not self._events and held[:1] in (b"[", b"{"):
            # No SSE at all: a JSON answer (Gemini streams an array without alt=sse), maybe an error.
            verdict = self.judge(b"", held)
            if isinstance(verdict, UpstreamError):
                return verdict
        if self._events:
            return UpstreamError("broken", "the stream ended before any content", status=502)
        return UpstreamError("empty_stream", "the stream ended before any data")

    def attach(self, consumer: StreamConsumer) -> "Deferred[UpstreamError | None]":
        """
        Send everything so far to C{consumer}, then the rest as it comes.

        @return: fires when the upstream stream ends: with C{None} when it
            ended complete (its final event came), or with what went wrong:
            it ended before its final event or broke off (C{"broken"}), went
            idle (C{"timeout"}), or the upstream's own error event ended it
            (C{"stream_error"}, C{relayed}: the client has had it).
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
        if self._cancelled:
            self.ended.errback(CancelledError())
            self._done.errback(CancelledError())
            return
        problem = self._problem(self._ended)
        self.ended.callback(problem)
        self._done.callback(problem)

    def usage_tokens(self) -> int | None:
        """
        The tokens the ended stream reports, read once from the bytes kept
        of its end (L{tail_tokens}): nothing is parsed per chunk for it.
        """
        return tail_tokens(self._fmt.NAME, bytes(self._tail), self._head_inputs)

    def _problem(self, reason: Failure) -> UpstreamError | None:
        """What is wrong with a stream that has ended, if anything."""
        if self._timed_out:
            return UpstreamError("timeout", f"upstream stream idle for {self._idle_timeout:g}s")
        if self._final:
            return None
        last = _last_event(bytes(self._tail[-TAIL:]))
        if last is not None:
            verdict = self.judge(*last)
            if isinstance(verdict, UpstreamError) and verdict.kind == "stream_error":
                verdict.relayed = True
                return verdict
        if _clean_end(reason):
            return UpstreamError("broken", "upstream stream ended before its final event", status=502)
        return UpstreamError("broken", f"upstream stream broke off: {describe(reason)}", status=502)
