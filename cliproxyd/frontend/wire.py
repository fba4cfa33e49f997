"""
What the frontend adds to the bytes of an answer, when the config asks:
keep-alives while a client waits (C{streaming.keepalive-seconds},
C{nonstream-keepalive-interval}) and the upstream's response headers
(C{passthrough-headers}).

Without these keys none of this is made: a request pays for a keep-alive
only when keep-alives are on.

Keep-alives before the answer commit the response: the first one sends a
200 and the headers of the answer to come. Failover goes on behind them
(nothing generated has reached the client), but a request that fails for
good can no longer say so with a status: it ends with its format's error
event (a stream) or its format's error body under that 200 (a JSON
answer). This is the trade the keys make, as in CLIProxyAPI.
"""

from __future__ import annotations

from typing import Any, Iterator

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.web.iweb import IRequest

#: What CLIProxyAPI writes to a waiting SSE client: a comment, one whole event's worth.
SSE_KEEPALIVE = b": keep-alive\n\n"
#: What it writes to a client waiting for a JSON answer: whitespace a JSON parser skips.
JSON_KEEPALIVE = b"\n"


class EarlyAnswer:
    """
    While the conductor looks for an answer: after C{interval} seconds
    with nothing sent, commit a 200 with C{headers} and write C{line};
    again every C{interval} seconds until L{stop}.
    """

    def __init__(self, request: IRequest, clock: IReactorTime, interval: float, line: bytes,
                 headers: tuple[tuple[bytes, bytes], ...]) -> None:
        self._request = request
        self._clock = clock
        self._interval = interval
        self._line = line
        self._headers = headers
        #: whether the 200 and its headers went out
        self.committed = False
        self._gone = False
        request.notifyFinish().addBoth(self._finished)
        self._call: IDelayedCall | None = clock.callLater(interval, self._tick)

    def _finished(self, _: object) -> None:
        self._gone = True
        self.stop()

    def _tick(self) -> None:
        self._call = None
        if self._gone:
            return
        if not self.committed:
            self.committed = True
            self._request.setResponseCode(200)
            for name, value in self._headers:
                self._request.setHeader(name, value)
        self._request.write(self._line)
        self._call = self._clock.callLater(self._interval, self._tick)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


class KeepAliveConsumer:
    """
    A stream consumer (the client, as a relay sees it) that writes an SSE
    comment after C{interval} seconds with nothing written, at an event
    boundary only (an upstream chunk may end inside an event).
    """

    def __init__(self, inner: Any, clock: IReactorTime, interval: float) -> None:
        self._inner = inner
        self._clock = clock
        self._interval = interval
        self._last = clock.seconds()
        self._boundary = True
        self._call: IDelayedCall | None = clock.callLater(interval, self._tick)

    def write(self, data: bytes) -> None:
        if data:
            self._last = self._clock.seconds()
            self._boundary = data.endswith((b"\n\n", b"\r\n\r\n"))
        self._inner.write(data)

    def _tick(self) -> None:
        now = self._clock.seconds()
        due = self._last + self._interval
        if now >= due:
            if self._boundary:
                self._inner.write(SSE_KEEPALIVE)
            self._last = now
            due = now + self._interval
        self._call = self._clock.callLater(due - now, self._tick)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self._inner.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._inner.unregisterProducer()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


#: Response headers never passed on: hop-by-hop ones (RFC 9110 7.6.1), cookies, the ones this
#: daemon sets itself (framing, encoding, CORS), as CLIProxyAPI filters them.
BLOCKED = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"set-cookie", b"content-length", b"content-encoding",
    b"access-control-allow-credentials", b"access-control-allow-headers", b"access-control-allow-methods",
    b"access-control-allow-origin", b"access-control-expose-headers", b"access-control-max-age",
    b"x-cpa-trace-id",
})
#: Prefixes of headers AI gateways add (CLIProxyAPI strips them so clients do not see a gateway).
GATEWAY_PREFIXES = (b"x-litellm-", b"helicone-", b"x-portkey-", b"cf-aig-", b"x-kong-", b"x-bt-")


def passable(upstream: Any) -> Iterator[tuple[bytes, list[bytes]]]:
    """The upstream's response headers but those in L{BLOCKED}, those its C{Connection} names and gateway ones."""
    if upstream is None:
        return
    scoped = {token.strip().lower() for value in upstream.getRawHeaders(b"connection", [])
              for token in value.split(b",")}
    for name, values in upstream.getAllRawHeaders():
        lower = name.lower()
        if not (lower in BLOCKED or lower in scoped or lower.startswith(GATEWAY_PREFIXES)):
            yield lower, values


def pass_headers(request: IRequest, upstream: Any) -> None:
    """Copy the L{passable} upstream headers to C{request}, but any the answer has already (its content type...)."""
    mine = request.responseHeaders
    for name, values in passable(upstream):
        if not mine.hasHeader(name):
            mine.setRawHeaders(name, values)


def error_headers(error: Any, own: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """An error answer's headers (C{own}) with the L{passable} ones of the upstream's error answer under them."""
    passed = {name: b", ".join(values) for name, values in passable(getattr(error, "headers", None))
              if name not in (b"content-type", b"server", b"date")}
    return {**passed, **own}
