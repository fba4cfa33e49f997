"""The Site that knows which requests are in flight, and drains them at shutdown (what is left ends with an error answer)."""

from __future__ import annotations

from io import BytesIO
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request, Site

#: How long the streams ended at the deadline have to get their last event
#: out and close before their connections are dropped.
CLOSE_GRACE = 2.0
#: How often, meanwhile, their connections are looked at.
_CLOSE_POLL = 0.05


def _never(request: Request) -> bool:
    return False


def _ignore(request: Request) -> None:
    pass


def _closed(transport: Any) -> bool:
    """Whether a connection is gone (TLS: the connection under it)."""
    if getattr(transport, "disconnected", False):
        return True
    inner = getattr(transport, "transport", None)
    return inner is not None and _closed(inner)


def _abort(transport: Any) -> None:
    abort = getattr(transport, "abortConnection", None) or transport.loseConnection
    abort()


class InFlight(Service):
    """
    Tracks requests from arrival to finish. Stopping it waits for them to
    finish, up to C{timeout} seconds; then each request still running is
    asked to end (C{end(request)}: the frontend ends a stream with its
    client format's error event, and answers a request that has had
    nothing yet with a 503, closing the connection once the answer is
    complete), those get L{CLOSE_GRACE} more seconds to close, and every
    other connection left is dropped.

    In the service tree it stops after the listener (no new connections)
    and before the HTTP pool (upstream requests still running need it).

    @param end: asks a request to end now, if it can be ended with an
        answer; returns whether it was (by default none is).
    @param drain: tells each request running when stopping begins that no
        more is to come (a websocket closes once its turn is done).
    """

    name = "in-flight"
    log = Logger()

    def __init__(self, clock: IReactorTime, timeout: float,
                 end: Callable[[Request], bool] = _never, drain: Callable[[Request], None] = _ignore) -> None:
        self._clock = clock
        self._timeout = timeout
        self._end = end
        self._drain = drain
        self._requests: set[Request] = set()
        self._drained: Deferred[None] | None = None
        self._deadline: IDelayedCall | None = None
        #: the deadline has passed: what is left is being ended, not waited for
        self._ending = False
        #: the connections of the streams asked to end, until they close
        self._closing: list[Any] = []
        self._grace_until = 0.0

    def __len__(self) -> int:
        return len(self._requests)

    def add(self, request: Request) -> None:
        self._requests.add(request)
        request.notifyFinish().addBoth(self._done, request)

    def _done(self, _: object, request: Request) -> None:
        self._requests.discard(request)
        if not self._requests and self._drained is not None and not self._ending:
            self._fire()

    def stopService(self) -> "Deferred[None]":
        Service.stopService(self)
        for request in list(self._requests):
            self._drain(request)
        if not self._requests:
            return succeed(None)
        self.log.info(
            "waiting up to {timeout}s for {count} in-flight requests",
            timeout=self._timeout,
            count=len(self._requests),
        )
        self._drained = Deferred()
        self._deadline = self._clock.callLater(self._timeout, self._expire)
        return self._drained

    def _expire(self) -> None:
        self._deadline = None
        self._ending = True
        running, cut = list(self._requests), []
        for request in running:
            transport = getattr(request, "transport", None)
            if self._end(request):
                if transport is not None:
                    self._closing.append(transport)
            elif transport is not None:
                cut.append(transport)
        self.log.warn(
            "closing {count} requests still running after {timeout}s ({ended} ended with an error answer)",
            count=len(running),
            timeout=self._timeout,
            ended=len(self._closing),
        )
        for transport in cut:
            _abort(transport)
        if not self._closing:
            self._fire()
            return
        self._grace_until = self._clock.seconds() + CLOSE_GRACE
        self._deadline = self._clock.callLater(_CLOSE_POLL, self._watch_closing)

    def _watch_closing(self) -> None:
        """Fire once the ended streams' connections are closed, dropping those still open after the grace."""
        self._deadline = None
        self._closing = [t for t in self._closing if not _closed(t)]
        if self._closing and self._clock.seconds() < self._grace_until:
            self._deadline = self._clock.callLater(_CLOSE_POLL, self._watch_closing)
            return
        closing, self._closing = self._closing, []
        for transport in closing:
            _abort(transport)
        self._fire()

    def _fire(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        drained, self._drained = self._drained, None
        if drained is not None and not drained.called:
            drained.callback(None)


class MemoryRequest(Request):
    """
    A request whose body is always held in memory. Twisted spools bodies of
    100 kB and more (and every chunked body) to a temporary file, which is
    disk I/O on the reactor thread; LLM requests are JSON we parse whole
    anyway.

    A body larger than the site's C{max_body} is not kept: the request
    arrives with an empty body and C{body_too_large} set, for the route
    to answer 413 in its client's format.
    """

    body_too_large = False
    _limit: int | None = None

    def gotLength(self, length: int | None) -> None:
        self.content = BytesIO()
        self._limit = getattr(self.channel.site, "max_body", None) if self.channel else None
        if length is not None and self._limit is not None and length > self._limit:
            self.body_too_large = True

    #: What a finished request lets go of (Twisted's own cleanup lets go of its channel and body).
    _RELEASED = ("requestHeaders", "responseHeaders", "client", "host", "args", "_adapterCache",
                 "received_cookies", "cookies", "prepath", "postpath")

    def _cleanup(self) -> None:
        """
        The answer is done and every C{notifyFinish} waiter has run: let go
        of what the request holds. Klein's render keeps the request in a
        closure that refers to itself, so the request is freed only by the
        cycle collector; without this, its headers, addresses and adapters
        (about thirty objects) would wait for a collection with it, instead
        of being freed now by reference counting while still in the cache.
        """
        super()._cleanup()
        for name in self._RELEASED:
            self.__dict__.pop(name, None)

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_too_large:
            return
        if self._limit is not None and self.content.tell() + len(data) > self._limit:
            self.body_too_large = True
            self.content = BytesIO()
            return
        self.content.write(data)


class QuietSite(Site):
    """
    A Site for JSON APIs: no access log line per request, no start/stop
    chatter, and no form parsing of POST bodies (Twisted parses the
    Content-Type of every POST for that, which is most of a request's
    parsing cost).
    """

    displayTracebacks = False
    noisy = False

    def __init__(self, resource, max_body: int | None = None, **kw) -> None:
        kw.setdefault("parsePOSTFormSubmission", False)
        kw.setdefault("requestFactory", MemoryRequest)
        super().__init__(resource, **kw)
        self._max_body = max_body

    @property
    def max_body(self) -> int | None:
        """The largest request body kept, in bytes (None: no limit)."""
        return self._max_body

    def log(self, request: Request) -> None:
        pass


class TrackingSite(QuietSite):
    """
    A Site that registers each request with L{InFlight}, and keeps bodies
    to the running generation's C{max-body-mb} (read from C{source}, so a
    reload changes it). (The frontend logs what matters about a request,
    with structured fields.)
    """

    def __init__(self, resource, in_flight: InFlight, source: Any, **kw) -> None:
        super().__init__(resource, **kw)
        self.in_flight = in_flight
        self._source = source

    @property
    def max_body(self) -> int | None:
        gen = self._source.current
        return gen.max_body if gen is not None else None

    def getResourceFor(self, request: Request):
        self.in_flight.add(request)
        return super().getResourceFor(request)
