"""The process's one outbound connection pool and treq client, for executors and token calls alike."""

from __future__ import annotations

from http.cookiejar import CookieJar

from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IConsumer, IReactorTime, IStreamClientEndpoint
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


class _QuietClientFactory(_HTTP11ClientFactory):
    # One "Starting factory" log line per new upstream connection is noise.
    noisy = False


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
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = MAX_IDLE_PER_HOST
    pool.cachedConnectionTimeout = IDLE_CONNECTION_SECONDS
    # LLM calls are POSTs: never re-sent automatically (the pool only retries
    # idempotent methods anyway).
    pool.retryAutomatically = False
    pool._factory = _QuietClientFactory
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
