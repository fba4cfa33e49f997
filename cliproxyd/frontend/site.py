"""The Site that knows which requests are in flight, and drains them at shutdown."""

from __future__ import annotations

from io import BytesIO
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request, Site


class InFlight(Service):
    """
    Tracks requests from arrival to finish. Stopping it waits for them to
    finish, up to C{timeout} seconds, then closes what is left.

    In the service tree it stops after the listener (no new connections)
    and before the HTTP pool (upstream requests still running need it).
    """

    name = "in-flight"
    log = Logger()

    def __init__(self, clock: IReactorTime, timeout: float) -> None:
        self._clock = clock
        self._timeout = timeout
        self._requests: set[Request] = set()
        self._drained: Deferred[None] | None = None
        self._deadline: IDelayedCall | None = None

    def __len__(self) -> int:
        return len(self._requests)

    def add(self, request: Request) -> None:
        self._requests.add(request)
        request.notifyFinish().addBoth(self._done, request)

    def _done(self, _: object, request: Request) -> None:
        self._requests.discard(request)
        if not self._requests and self._drained is not None:
            self._fire()

    def stopService(self) -> "Deferred[None]":
        Service.stopService(self)
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
        self.log.warn(
            "closing {count} requests still running after {timeout}s",
            count=len(self._requests),
            timeout=self._timeout,
        )
        for request in list(self._requests):
            transport = getattr(request, "transport", None)
            if transport is not None:
                abort = getattr(transport, "abortConnection", None) or transport.loseConnection
                abort()
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
