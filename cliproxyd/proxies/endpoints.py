"""
Client endpoints through a proxy: L{TunnelEndpoint} connects to the proxy
(over TLS for an C{https://} proxy), runs the SOCKS5 or HTTP CONNECT
handshake of L{cliproxyd.proxies.handshake}, and then hands the connection
to the protocol it was asked to connect; TLS to the upstream goes on top
(L{ProxyEndpointFactory}). The whole tunnel, TCP, TLS to the proxy and
handshake, must be up within the connect timeout, on the injected clock.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IProtocolFactory, IReactorTime, IResolutionReceiver, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import URI
from zope.interface import implementer

from cliproxyd.proxies import ProxyURL
from cliproxyd.proxies.handshake import ConnectHandshake, Handshake, ProxyError, Socks5Handshake

#: resolve(host, port) -> the address to send a socks5:// proxy (socks5 resolves names here)
Resolver = Callable[[str, int], "Deferred[str]"]


def _reason(failure: Failure) -> str:
    value = failure.value
    inner = getattr(value, "reasons", None)
    if inner:
        return "; ".join(_reason(r) for r in inner)
    text = str(value).strip()
    return f"{type(value).__name__}: {text}" if text else type(value).__name__


class _Tunnel(Protocol):
    """Runs the handshake on the proxy connection, then relays everything to and from the wrapped protocol."""

    def __init__(self, handshake: Handshake, factory: IProtocolFactory, claim: Callable[[], bool],
                 opened: Callable[[Any], None], fail: Callable[[BaseException], None]) -> None:
        self._handshake = handshake
        self._factory = factory
        self._claim = claim
        self._opened = opened
        self._fail = fail
        self.wrapped: Any = None

    def connectionMade(self) -> None:
        self.transport.write(self._handshake.start())

    def dataReceived(self, data: bytes) -> None:
        if self.wrapped is not None:
            self.wrapped.dataReceived(data)
            return
        try:
            reply = self._handshake.feed(data)
        except ProxyError as e:
            self._fail(e)
            self.transport.abortConnection()
            return
        if reply:
            self.transport.write(reply)
        if not self._handshake.done:
            return
        wrapped = self._factory.buildProtocol(self.transport.getPeer())
        if wrapped is None:
            self._fail(ProxyError(self._handshake.proxy, "the connection was not wanted any more"))
            self.transport.abortConnection()
            return
        if not self._claim():
            self.transport.abortConnection()  # given up (timed out, cancelled) in the meantime
            return
        self.wrapped = wrapped
        wrapped.makeConnection(self.transport)
        self._opened(wrapped)
        if self._handshake.rest:
            wrapped.dataReceived(self._handshake.rest)

    def connectionLost(self, reason: Failure) -> None:
        if self.wrapped is not None:
            self.wrapped.connectionLost(reason)
            return
        self._fail(ProxyError(self._handshake.proxy, f"closed the connection during the handshake ({_reason(reason)})"))


class _TunnelFactory(Factory):
    noisy = False

    def __init__(self, make: Callable[[], _Tunnel]) -> None:
        self._make = make

    def buildProtocol(self, addr: Any) -> _Tunnel:
        return self._make()


@implementer(IResolutionReceiver)
class _Addresses:
    """Collects a name's addresses; fires C{done} with the first (IPv4 first), or a DNS error."""

    def __init__(self, host: str, done: "Deferred[str]") -> None:
        self._host = host
        self._done = done
        self._addresses: list[str] = []

    def resolutionBegan(self, resolution: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        self._addresses.append(address.host)

    def resolutionComplete(self) -> None:
        if not self._addresses:
            self._done.errback(DNSLookupError(
                f"{self._host} (socks5:// resolves names here; socks5h:// lets the proxy resolve them)"))
            return
        v4 = [a for a in self._addresses if ":" not in a]
        self._done.callback((v4 or self._addresses)[0])


def system_resolver(reactor: Any) -> Resolver:
    """The reactor's name resolver, for socks5:// (which sends the proxy an address, not a name)."""

    def resolve(host: str, port: int) -> "Deferred[str]":
        done: Deferred[str] = Deferred()
        reactor.nameResolver.resolveHostName(_Addresses(host, done), host, portNumber=port)
        return done

    return resolve


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@implementer(IStreamClientEndpoint)
class TunnelEndpoint:
    """
    A connection to C{host:port} through C{proxy}.

    @param proxy_endpoint: how to reach the proxy itself (by default TCP,
        and TLS for an C{https://} proxy: see L{ProxyEndpointFactory}).
    @param resolve: for C{socks5://}, turns a name into the address sent
        to the proxy (for C{socks5h://} and HTTP the proxy gets the name).
    """

    def __init__(self, clock: IReactorTime, proxy: ProxyURL, proxy_endpoint: IStreamClientEndpoint, host: str,
                 port: int, timeout: float, resolve: Resolver | None = None) -> None:
        self._clock = clock
        self._proxy = proxy
        self._proxy_endpoint = proxy_endpoint
        self._host = host
        self._port = port
        self._timeout = timeout
        self._resolve = resolve

    def connect(self, factory: IProtocolFactory) -> "Deferred[Any]":
        proxy = self._proxy
        pending: list[Deferred] = []  # the step under way: resolving or connecting
        tunnel: list[_Tunnel] = []
        ended: list[bool] = []

        def cancel(_: Deferred) -> None:
            stop(CancelledError())

        result: Deferred[Any] = Deferred(cancel)

        def stop(error: BaseException) -> None:
            if ended:
                return
            ended.append(True)
            if deadline.active():
                deadline.cancel()
            for d in pending:
                d.cancel()
            if tunnel and tunnel[0].wrapped is None and tunnel[0].transport is not None:
                tunnel[0].transport.abortConnection()
            if not result.called:
                result.errback(error)

        def expire() -> None:
            stop(ProxyError(proxy, f"no tunnel to {self._host}:{self._port} within {self._timeout:g}s"))

        deadline = self._clock.callLater(self._timeout, expire)

        def claim() -> bool:
            """The tunnel is up: it is the wrapped protocol's, unless the connect was given up already."""
            if ended:
                return False
            ended.append(True)
            if deadline.active():
                deadline.cancel()
            return True

        def made_tunnel(host: str) -> _Tunnel:
            handshake_class = Socks5Handshake if proxy.is_socks else ConnectHandshake
            # The caller gets the protocol once it is connected, as from HostnameEndpoint.
            protocol = _Tunnel(handshake_class(proxy, host, self._port), factory, claim, result.callback, stop)
            tunnel.append(protocol)
            return protocol

        def go(host: str) -> None:
            pending.clear()
            if ended:
                return
            d = self._proxy_endpoint.connect(_TunnelFactory(lambda: made_tunnel(host)))
            pending.append(d)
            d.addCallbacks(lambda _: pending.clear(), lambda f: stop(
                f.value if f.check(CancelledError) else
                ProxyError(proxy, f"cannot connect to the proxy ({_reason(f)})")))

        if proxy.is_socks and not proxy.remote_dns and not _is_address(self._host) and self._resolve is not None:
            d = self._resolve(self._host, self._port)
            pending.append(d)
            d.addCallbacks(go, lambda f: stop(f.value))
        else:
            go(self._host)
        return result


class ProxyEndpointFactory:
    """
    Endpoints for an Agent whose every connection goes through one proxy,
    one per upstream origin, made once (as L{cliproxyd.outbound.CachingEndpointFactory}).
    """

    def __init__(self, reactor: Any, proxy: ProxyURL, connect_timeout: float, tls: Any) -> None:
        self._reactor = reactor
        self._proxy = proxy
        self._timeout = connect_timeout
        self._tls = tls
        self._resolve = system_resolver(reactor)
        self._cache: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def proxy_endpoint(self) -> IStreamClientEndpoint:
        proxy = self._proxy
        endpoint: IStreamClientEndpoint = HostnameEndpoint(self._reactor, proxy.host, proxy.port,
                                                           timeout=self._timeout)
        if proxy.scheme == "https":
            endpoint = wrapClientTLS(self._tls.creatorForNetloc(proxy.host.encode("idna"), proxy.port), endpoint)
        return endpoint

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._cache.get(key)
        if endpoint is None:
            host = uri.host.decode("idna").strip("[]")
            endpoint = TunnelEndpoint(self._reactor, self._proxy, self.proxy_endpoint(), host, uri.port,
                                      self._timeout, self._resolve)
            if uri.scheme == b"https":
                endpoint = wrapClientTLS(self._tls.creatorForNetloc(uri.host, uri.port), endpoint)
            self._cache[key] = endpoint
        return endpoint
