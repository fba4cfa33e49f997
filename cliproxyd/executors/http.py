"""The process's one outbound connection pool and treq client."""

from __future__ import annotations

from http.cookiejar import CookieJar

from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory

#: Idle keep-alive sockets kept per upstream host (this bounds idle sockets,
#: not concurrency).
MAX_IDLE_PER_HOST = 32
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


def make_http_client(reactor: IReactorTime, connect_timeout: float) -> tuple[HTTPConnectionPool, HTTPClient]:
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = MAX_IDLE_PER_HOST
    pool.cachedConnectionTimeout = IDLE_CONNECTION_SECONDS
    # LLM calls are POSTs: never re-sent automatically (the pool only retries
    # idempotent methods anyway).
    pool.retryAutomatically = False
    pool._factory = _QuietClientFactory
    agent = Agent(reactor, pool=pool, connectTimeout=connect_timeout)
    return pool, HTTPClient(agent, cookiejar=_NoCookies())


class HTTPPoolService(Service):
    """Closes the pool's idle connections at shutdown (it is stopped last)."""

    name = "http-pool"

    def __init__(self, pool: HTTPConnectionPool) -> None:
        self.pool = pool

    def stopService(self):
        Service.stopService(self)
        return self.pool.closeCachedConnections()
