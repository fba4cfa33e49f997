"""The process's one outbound connection pool and treq client, for executors and token calls alike."""

from __future__ import annotations

from http.cookiejar import CookieJar
from typing import Any, Callable, Hashable

from hyperlink import EncodedURL
from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IConsumer, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._newclient import HTTP11ClientProtocol
from twisted.web.client import (
    URI,
    Agent,
    BrowserLikePolicyForHTTPS,
    ContentDecoderAgent,
    GzipDecoder,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from cliproxyd.proxies import EnvironmentProxies, ProxySetting, ProxyURL
from cliproxyd.proxies.endpoints import ProxyEndpointFactory

#: Idle keep-alive sockets kept per upstream host (this bounds idle sockets,
#: not concurrency).
MAX_IDLE_PER_HOST = 128
#: Below the keep-alive limit of the common providers, so we close first.
IDLE_CONNECTION_SECONDS = 60
#: Upstream URLs whose parsed form an L{UpstreamAgent} keeps (they come from the
#: config: base URLs, and for Gemini the model names); past this many it starts over.
MAX_KNOWN_URLS = 4096


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


class _UpstreamProtocol(HTTP11ClientProtocol):
    """
    A pooled connection that lets go of each response's parser when the
    response is done.

    Twisted's parser keeps its body decoder, and the chunked decoder keeps
    the parser's bound methods for good (the identity decoder drops them once
    the body is read): a cycle, so every chunked upstream answer (every
    stream) left its parser, response, request and headers, about thirty
    objects, for the cycle collector. Dropping the decoder here, once the
    parser has had its last call, lets reference counting free them at once.
    """

    def _disconnectParser(self, reason: Failure) -> None:
        parser = self._parser
        super()._disconnectParser(reason)
        if parser is not None:
            parser.bodyDecoder = None


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

    def buildProtocol(self, addr: object) -> HTTP11ClientProtocol:
        return _UpstreamProtocol(self._quiescentCallback)


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

    def __init__(self, reactor: IReactorTime, connect_timeout: float, tls: Any = None) -> None:
        self._reactor = reactor
        self._timeout = connect_timeout
        self._tls = tls or BrowserLikePolicyForHTTPS()
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


class UpstreamAgent(Agent):
    """
    An Agent that parses each upstream URL once. Twisted's parses the URL
    and works out the Host header on every request (an IPv6 check included);
    the URLs an executor sends to are a few, made from the config, so their
    parsed form and Host value are kept (at most L{MAX_KNOWN_URLS}).
    """

    _known: dict[bytes, tuple[URI, tuple[bytes, bytes, int], bytes]]

    @classmethod
    def usingEndpointFactory(cls, reactor: Any, endpointFactory: Any, pool: Any = None) -> "UpstreamAgent":
        agent = super().usingEndpointFactory(reactor, endpointFactory, pool)
        agent._known = {}
        return agent

    def request(self, method: bytes, uri: bytes, headers: Headers | None = None,
                bodyProducer: IBodyProducer | None = None) -> "Deferred[IResponse]":
        known = self._known.get(uri)
        if known is None:
            parsed = URI.fromBytes(uri.strip())
            if parsed.scheme not in (b"http", b"https"):
                return super().request(method, uri, headers, bodyProducer)  # its own error, as before
            known = (parsed, (parsed.scheme, parsed.host, parsed.port),
                     self._computeHostValue(parsed.scheme, parsed.host, parsed.port))
            if len(self._known) >= MAX_KNOWN_URLS:
                self._known.clear()
            self._known[uri] = known
        parsed, key, host = known
        try:
            endpoint = self._getEndpoint(parsed)
        except SchemeNotSupported:
            return fail(Failure())
        headers = Headers() if headers is None else headers.copy()
        if not headers.hasHeader(b"host"):
            headers.addRawHeader(b"host", host)
        return self._requestWithEndpoint(key, endpoint, method, parsed, headers, bodyProducer, parsed.originForm)


class UpstreamClient(HTTPClient):
    """
    treq's client, plus L{send}: the executors' request path, straight to
    the agent. treq's C{request} wraps the agent anew on every call (a
    cookie agent and a cookie jar scoped to the URL, whose stdlib request
    object costs more than the rest, a content decoder) and re-encodes the
    URL through hyperlink; upstream calls keep no cookies and follow no
    redirects, so L{send} skips all of that and only decodes gzip, as treq
    does, through a decoder made once. Everything else (token endpoints,
    the management API's calls) uses treq as it is.
    """

    def __init__(self, agent: IAgent) -> None:
        super().__init__(agent, cookiejar=_NoCookies(), data_to_body_producer=BytesProducer)
        self._decoding = ContentDecoderAgent(agent, [(b"gzip", GzipDecoder)])

    def send(self, method: bytes, url: str, headers: Headers, body: bytes) -> "Deferred[IResponse]":
        """C{method} C{url} with C{headers} and C{body}: the upstream's response (any status), gzip decoded."""
        producer = BytesProducer(body) if body or method != b"GET" else None
        return self._decoding.request(method, _url_bytes(url), headers, producer)


def _url_bytes(url: str) -> bytes:
    """C{url} as a request line has it: as it is when it is ASCII, else encoded as treq encodes it."""
    try:
        return url.encode("ascii")
    except UnicodeEncodeError:
        return EncodedURL.from_text(url).to_uri().to_text().encode("ascii")


def post(client: Any, url: str, headers: Headers, body: bytes, method: bytes = b"POST") -> "Deferred[Any]":
    """An upstream POST (or C{method}) through C{client}: L{UpstreamClient.send}, or treq's request for any other client (a stub)."""
    if isinstance(client, UpstreamClient):
        return client.send(method, url, headers, body)
    return client.request(method.decode(), url, data=body, headers=headers, unbuffered=True, allow_redirects=False)


def _pool(reactor: IReactorTime) -> UpstreamPool:
    pool = UpstreamPool(reactor, persistent=True)
    pool.maxPersistentPerHost = MAX_IDLE_PER_HOST
    pool.cachedConnectionTimeout = IDLE_CONNECTION_SECONDS
    return pool


def _client(agent: IAgent) -> UpstreamClient:
    return UpstreamClient(agent)


def make_http_client(reactor: IReactorTime, connect_timeout: float,
                     tls: Any = None) -> tuple[HTTPConnectionPool, HTTPClient]:
    """The direct pool and its client."""
    pool = _pool(reactor)
    agent = UpstreamAgent.usingEndpointFactory(reactor, CachingEndpointFactory(reactor, connect_timeout, tls),
                                               pool=pool)
    return pool, _client(agent)


@implementer(IAgent)
class _EnvironmentAgent:
    """
    Sends each request the way the environment says for its origin
    (L{EnvironmentProxies}: C{HTTPS_PROXY}, C{HTTP_PROXY}, C{NO_PROXY}),
    through the agent, and so the pool, of that proxy or the direct one.
    """

    def __init__(self, outbound: "OutboundClients", environment: EnvironmentProxies) -> None:
        self._outbound = outbound
        self._environment = environment
        self._by_origin: dict[bytes, IAgent] = {}

    def request(self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None) -> Deferred:
        origin = uri.split(b"/", 3)[:3]
        key = b"/".join(origin)
        agent = self._by_origin.get(key)
        if agent is None:
            parsed = URI.fromBytes(uri)
            proxy = self._environment.proxy_for(parsed.scheme.decode("ascii"), parsed.host.decode("idna"),
                                                parsed.port)
            agent = self._outbound.agent_for(proxy)
            self._by_origin[key] = agent
        return agent.request(method, uri, headers, bodyProducer)


class OutboundClients:
    """
    The process's outbound HTTP clients, one per route: the direct one, and
    one per distinct proxy (its own pool, made the first time a config
    names it and kept for the process's life, so reloads reuse it), plus
    one that follows the environment's proxies for settings that inherit.
    Every pool is an L{UpstreamPool}: none hands out a closing connection.
    """

    log = Logger()

    def __init__(self, reactor: IReactorTime, connect_timeout: float,
                 environment: EnvironmentProxies = EnvironmentProxies(), tls: Any = None) -> None:
        self._reactor = reactor
        self._timeout = connect_timeout
        self._environment = environment
        self.pool, self.direct = make_http_client(reactor, connect_timeout, tls)
        #: verifies https:// proxies and upstreams reached through any proxy (tests give their own CA)
        self._tls = tls or BrowserLikePolicyForHTTPS()
        self._proxied: dict[ProxyURL, tuple[UpstreamPool, HTTPClient]] = {}
        self._from_environment = None if environment.empty else _client(_EnvironmentAgent(self, environment))

    def client_for(self, setting: ProxySetting) -> HTTPClient:
        """The client of a (resolved) proxy setting: inherit follows the environment."""
        if setting.proxy is not None:
            return self._proxied_client(setting.proxy)[1]
        if setting.mode == "direct" or self._from_environment is None:
            return self.direct
        return self._from_environment

    def agent_for(self, proxy: ProxyURL | None) -> IAgent:
        client = self.direct if proxy is None else self._proxied_client(proxy)[1]
        return client._agent

    def _proxied_client(self, proxy: ProxyURL) -> tuple[UpstreamPool, HTTPClient]:
        made = self._proxied.get(proxy)
        if made is None:
            pool = _pool(self._reactor)
            factory = ProxyEndpointFactory(self._reactor, proxy, self._timeout, self._tls)
            made = pool, _client(UpstreamAgent.usingEndpointFactory(self._reactor, factory, pool=pool))
            self._proxied[proxy] = made
            self.log.info("outbound proxy {proxy}: a connection pool of its own", proxy=proxy.redacted())
        return made

    def pools(self) -> list[HTTPConnectionPool]:
        return [self.pool, *(pool for pool, _ in self._proxied.values())]

    def closeCachedConnections(self) -> "Deferred[Any]":
        """Close the idle connections of every pool (as a pool's own method does for one)."""
        return gatherResults([pool.closeCachedConnections() for pool in self.pools()])


def client_chooser(client: Any) -> Callable[[ProxySetting], Any]:
    """
    Which client serves a proxy setting: L{OutboundClients.client_for}, or,
    for one plain client (tests hand in a treq stub), always that client.
    """
    if isinstance(client, OutboundClients):
        return client.client_for
    return lambda setting: client


class ConfiguredClient:
    """
    The outbound client the daemon's own calls use (the panel's download,
    the management API's web logins and C{/api-call}): C{request}, C{get}
    and C{post} as treq's C{HTTPClient} has them, each sent the way the
    running config's global C{proxy-url} says at the moment (C{setting()}),
    and L{for_setting} for a call that leaves as one credential's do.
    Nothing the daemon sends goes direct when a proxy is configured.
    """

    def __init__(self, client: Any, setting: Callable[[], ProxySetting]) -> None:
        self._choose = client_chooser(client)
        self._setting = setting

    def for_setting(self, setting: ProxySetting) -> Any:
        """The client of one (resolved) proxy setting, a credential's."""
        return self._choose(setting)

    def request(self, method: str, url: Any, **kwargs: Any) -> "Deferred[Any]":
        return self._choose(self._setting()).request(method, url, **kwargs)

    def get(self, url: Any, **kwargs: Any) -> "Deferred[Any]":
        return self.request("GET", url, **kwargs)

    def post(self, url: Any, **kwargs: Any) -> "Deferred[Any]":
        return self.request("POST", url, **kwargs)


class HTTPPoolService(Service):
    """Closes the idle connections of the pool, or of every pool of L{OutboundClients}, at shutdown (it is stopped last)."""

    name = "http-pool"

    def __init__(self, pool: HTTPConnectionPool | OutboundClients) -> None:
        self.pool = pool

    def stopService(self):
        Service.stopService(self)
        return self.pool.closeCachedConnections()
