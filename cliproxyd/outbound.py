"""The process's one outbound connection pool and treq client, for executors and token calls alike."""

from __future__ import annotations

from http.cookiejar import CookieJar
from typing import Callable, Hashable

from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IConsumer, IReactorTime, IStreamClientEndpoint
from twisted.web._newclient import HTTP11ClientProtocol
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    URI,
    _HTTP11ClientFactory,
)
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

#: Idle keep-alive sockets kept per upstream host (this bounds idle sockets,
#: not concurrency).
MAX_IDLE_PER_HOST = 128
#: Below the keep-alive limit of the common providers, so we close first.
IDLE_CONNECTION_SECONDS = 60


def is_closing(transport: object) -> bool:
    """
    Whether a connection is closing or closed: its transport, or the one that
    transport runs over (TLS over TCP), was told to close or has.
    """
    while transport is not None:
        if getattr(transport, "disconnecting", False) or getattr(transport, "disconnected", False):
            return True
        transport = getattr(transport, "transport", None)
    return False


class _QuietClientFactory(_HTTP11ClientFactory):
    """
    Connections for the pool, which it gets back only while they are usable.

    A body reader that stops the transport (an error event before a
    stream's first content, an idle body, a client that left) may do so
    inside the read that also brings the end of the response: Twisted then
    finds the response complete, calls it quiescent and hands the connection
    back to the pool, although the transport is already closing. The next
    request would be written to that closing connection; the upstream may
    even get it, while we get C{ConnectionDone} and send it elsewhere too.
    Such a connection is never pooled here: it finishes closing, and the next
    request gets a new one.
    """

    # One "Starting factory" log line per new upstream connection is noise.
    noisy = False

    def __init__(self, quiescentCallback: Callable[[HTTP11ClientProtocol], None], metadata: object) -> None:
        def quiescent(connection: HTTP11ClientProtocol) -> None:
            if is_closing(connection.transport):
                return
            quiescentCallback(connection)

        super().__init__(quiescent, metadata)


class UpstreamPool(HTTPConnectionPool):
    """
    The outbound pool: persistent connections, never one that is closing.

    Twisted's pool hands out any cached connection whose protocol is
    quiescent; one whose transport has begun to close in the meantime would
    take the request and lose it (C{ConnectionDone}: a POST is never retried
    automatically, and the upstream may have read it). Such a connection is
    dropped here before a single byte of the request is written to it, and
    the next cached one, or a new one, is used instead.
    """

    _factory = _QuietClientFactory
    # LLM calls are POSTs: never re-sent automatically (the pool only retries
    # idempotent methods anyway).
    retryAutomatically = False

    def getConnection(self, key: Hashable, endpoint: IStreamClientEndpoint) -> "Deferred[HTTP11ClientProtocol]":
        connections = self._connections.get(key)
        while connections:
            connection = connections.pop(0)
            self._timeouts.pop(connection).cancel()
            if connection.state == "QUIESCENT" and not is_closing(connection.transport):
                return succeed(connection)
            connection.transport.loseConnection()
        return self._newConnection(key, endpoint)


class _NoCookies(CookieJar):
    """
    Upstream cookies are never stored: treq's jar is shared by every
    request of the client, and one credential's session cookie must not ride
    along with another credential's request.
    """

    def set_cookie(self, cookie) -> None:  # type: ignore[override]
        pass

    def extract_cookies(self, response, request) -> None:  # type: ignore[override]
        pass


class CachingEndpointFactory:
    """
    One endpoint per upstream origin, made once.

    The Agent asks for an endpoint on every request, even when the pool has
    an idle connection to reuse; building a C{HostnameEndpoint} means IDNA
    encoding the host each time. There are only as many origins as
    configured base URLs, so they are cached for the process's life.
    """

    def __init__(self, reactor: IReactorTime, connect_timeout: float) -> None:
        self._reactor = reactor
        self._timeout = connect_timeout
        self._tls = BrowserLikePolicyForHTTPS()
        self._cache: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._cache.get(key)
        if endpoint is None:
            endpoint = HostnameEndpoint(self._reactor, uri.host, uri.port, timeout=self._timeout)
            if uri.scheme == b"https":
                endpoint = wrapClientTLS(self._tls.creatorForNetloc(uri.host, uri.port), endpoint)
            self._cache[key] = endpoint
        return endpoint


@implementer(IBodyProducer)
class BytesProducer:
    """A request body already in memory, written in one go (no Cooperator ticks)."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> "Deferred[None]":
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def make_http_client(reactor: IReactorTime, connect_timeout: float) -> tuple[HTTPConnectionPool, HTTPClient]:
    pool = UpstreamPool(reactor, persistent=True)
    pool.maxPersistentPerHost = MAX_IDLE_PER_HOST
    pool.cachedConnectionTimeout = IDLE_CONNECTION_SECONDS
    agent = Agent.usingEndpointFactory(reactor, CachingEndpointFactory(reactor, connect_timeout), pool=pool)
    return pool, HTTPClient(agent, cookiejar=_NoCookies(), data_to_body_producer=BytesProducer)


class HTTPPoolService(Service):
    """Closes the pool's idle connections at shutdown (it is stopped last)."""

    name = "http-pool"

    def __init__(self, pool: HTTPConnectionPool) -> None:
        self.pool = pool

    def stopService(self):
        Service.stopService(self)
        return self.pool.closeCachedConnections()
