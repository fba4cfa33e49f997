"""
The outbound clients through real proxies on loopback: microsocks (SOCKS5,
user/password) and tinyproxy (HTTP CONNECT, Basic auth), plain and TLS
upstreams, an https:// proxy (TLS to the proxy, TLS to the upstream inside
it). The proxies connect out from 127.0.0.2, so the upstream's view of its
peer proves the request went through them; refusals and a proxy that is
down are clear errors, and nothing goes direct.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import Deferred
from twisted.internet.ssl import Certificate, PrivateCertificate
from twisted.protocols.portforward import ProxyFactory
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.resource import Resource
from twisted.web.server import Site

from cliproxyd.outbound import OutboundClients
from cliproxyd.proxies import parse_proxy_setting
from cliproxyd.proxies.handshake import ProxyError
from tests.conftest import unused_port
from tests.proxy_servers import OUTGOING, microsocks, self_signed, tinyproxy

# Twisted's own TLS options still hand pyOpenSSL objects to pyOpenSSL.
pytestmark = pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")


class Peer(Resource):
    """Answers with the address the request came from."""

    isLeaf = True

    def render(self, request) -> bytes:
        return request.getClientAddress().host.encode()


class Upstreams:
    """An http:// and an https:// upstream on 127.0.0.1, and a TLS policy that trusts the latter."""

    def __init__(self, reactor, tmp) -> None:
        cert_pem, key_pem = self_signed(tmp)
        self.server_tls = PrivateCertificate.loadPEM(key_pem + cert_pem).options()
        self.client_tls = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(cert_pem))
        site = Site(Peer())
        site.noisy = False
        self.plain = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.tls = reactor.listenSSL(0, site, self.server_tls, interface="127.0.0.1")

    def urls(self) -> dict[str, str]:
        return {"http": f"http://localhost:{self.plain.getHost().port}/who",
                "https": f"https://localhost:{self.tls.getHost().port}/who"}

    async def close(self) -> None:
        await self.plain.stopListening()
        await self.tls.stopListening()


@pytest.fixture
def upstreams(reactor, tmp_path):
    ups = Upstreams(reactor, tmp_path)
    yield ups
    pytest_twisted.blockon(Deferred.fromCoroutine(ups.close()))


@contextmanager
def tls_front(reactor, upstreams, port: int):
    """TLS in front of a plain proxy on C{port}: what an https:// proxy is. Yields its URL."""
    front = reactor.listenSSL(0, ProxyFactory("127.0.0.1", port), upstreams.server_tls, interface="127.0.0.1")
    try:
        yield f"https://localhost:{front.getHost().port}"
    finally:
        front.stopListening()


async def peer_seen(reactor, outbound: OutboundClients, proxy: str, url: str) -> str:
    client = outbound.client_for(parse_proxy_setting(proxy))
    response = await client.get(url, timeout=10)
    return (await treq.content(response)).decode()


async def fetch_all(reactor, tls, proxy: str, urls) -> dict[str, str]:
    outbound = OutboundClients(reactor, 5, tls=tls)
    try:
        return {scheme: await peer_seen(reactor, outbound, proxy, url) for scheme, url in urls.items()}
    finally:
        await outbound.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_direct_requests_come_from_127_0_0_1(reactor, upstreams):
    assert await fetch_all(reactor, upstreams.client_tls, "direct", upstreams.urls()) == {
        "http": "127.0.0.1", "https": "127.0.0.1"}


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
@pytest_twisted.ensureDeferred
async def test_socks5_with_user_and_password_carries_plain_and_tls_upstreams(reactor, upstreams, tmp_path, scheme):
    with microsocks(tmp_path, "alice", "p@ss:word") as proxy:
        url = f"{scheme}://alice:p%40ss%3Aword@127.0.0.1:{proxy.port}"
        seen = await fetch_all(reactor, upstreams.client_tls, url, upstreams.urls())
    assert seen == {"http": OUTGOING, "https": OUTGOING}


@pytest_twisted.ensureDeferred
async def test_http_connect_with_basic_auth_carries_plain_and_tls_upstreams(reactor, upstreams, tmp_path):
    with tinyproxy(tmp_path, "bob", "s3cret") as proxy:
        seen = await fetch_all(reactor, upstreams.client_tls, f"http://bob:s3cret@127.0.0.1:{proxy.port}",
                               upstreams.urls())
        log = proxy.text()
    assert seen == {"http": OUTGOING, "https": OUTGOING}
    for port in (upstreams.plain.getHost().port, upstreams.tls.getHost().port):
        assert f"CONNECT localhost:{port} HTTP/1.1" in log  # the proxy resolved the name


@pytest_twisted.ensureDeferred
async def test_an_https_proxy_is_reached_over_tls_with_the_upstreams_tls_inside(reactor, upstreams, tmp_path):
    with tinyproxy(tmp_path) as proxy:
        with tls_front(reactor, upstreams, proxy.port) as url:
            seen = await fetch_all(reactor, upstreams.client_tls, url, upstreams.urls())
        log = proxy.text()
    assert seen == {"http": OUTGOING, "https": OUTGOING}
    assert "CONNECT localhost:" in log


@pytest_twisted.ensureDeferred
async def test_an_https_proxy_whose_certificate_is_not_trusted_is_refused(reactor, upstreams, tmp_path):
    with tinyproxy(tmp_path) as proxy:
        with tls_front(reactor, upstreams, proxy.port) as url:
            outbound = OutboundClients(reactor, 5, tls=BrowserLikePolicyForHTTPS())  # the system's CAs only
            with pytest.raises(ProxyError, match="closed the connection during the handshake"):
                await peer_seen(reactor, outbound, url, upstreams.urls()["http"])
        assert "CONNECT localhost" not in proxy.text()


async def refused(reactor, tls, proxy: str, url: str) -> str:
    outbound = OutboundClients(reactor, 5, tls=tls)
    try:
        with pytest.raises(ProxyError) as info:
            await peer_seen(reactor, outbound, proxy, url)
    finally:
        await outbound.closeCachedConnections()
    return str(info.value)


@pytest_twisted.ensureDeferred
async def test_a_wrong_socks5_password_is_an_authentication_failure(reactor, upstreams, tmp_path):
    with microsocks(tmp_path, "alice", "right") as proxy:
        message = await refused(reactor, upstreams.client_tls, f"socks5h://alice:wrong@127.0.0.1:{proxy.port}",
                                upstreams.urls()["https"])
        no_auth = await refused(reactor, upstreams.client_tls, f"socks5h://127.0.0.1:{proxy.port}",
                                upstreams.urls()["https"])
    assert message == f"proxy socks5h://alice:***@127.0.0.1:{proxy.port}: authentication failed " \
                      "(user name or password refused)"
    assert "wants a user name and password" in no_auth


@pytest_twisted.ensureDeferred
async def test_a_wrong_connect_password_is_an_authentication_failure(reactor, upstreams, tmp_path):
    with tinyproxy(tmp_path, "bob", "right") as proxy:
        message = await refused(reactor, upstreams.client_tls, f"http://bob:wrong@127.0.0.1:{proxy.port}",
                                upstreams.urls()["https"])
    assert "authentication failed (401 Unauthorized)" in message  # tinyproxy's answer to a wrong password
    assert "wrong" not in message


@pytest_twisted.ensureDeferred
async def test_an_upstream_the_proxy_cannot_reach_is_the_proxys_answer(reactor, upstreams, tmp_path):
    dead = unused_port()
    with tinyproxy(tmp_path) as proxy:
        http = await refused(reactor, upstreams.client_tls, f"http://127.0.0.1:{proxy.port}",
                             f"https://127.0.0.1:{dead}/")
    with microsocks(tmp_path) as proxy:
        socks = await refused(reactor, upstreams.client_tls, f"socks5://127.0.0.1:{proxy.port}",
                              f"https://127.0.0.1:{dead}/")
    assert "answered CONNECT to 127.0.0.1:%d with 500" % dead in http
    assert f"CONNECT to 127.0.0.1:{dead} failed: " in socks


@pytest_twisted.ensureDeferred
async def test_a_proxy_that_is_down_fails_the_request_and_nothing_goes_direct(reactor, upstreams):
    hits = []
    original = upstreams.plain.factory.resource.render
    upstreams.plain.factory.resource.render = lambda request: hits.append(request) or original(request)
    message = await refused(reactor, upstreams.client_tls, f"socks5h://u:hunter2@127.0.0.1:{unused_port()}",
                            upstreams.urls()["http"])
    assert "cannot connect to the proxy" in message and "Connection refused" in message
    assert "hunter2" not in message
    assert hits == []


def local_address() -> str | None:
    """This machine's address that is not loopback (the environment's proxies never apply to loopback)."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks a route
        address = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if address.startswith("127.") else address


@pytest_twisted.ensureDeferred
async def test_the_environments_proxy_carries_inheriting_calls_and_no_proxy_sends_them_direct(reactor, tmp_path):
    from cliproxyd.proxies import INHERIT, EnvironmentProxies

    address = local_address()
    if address is None:
        pytest.skip("no address but loopback here, and the environment's proxies never apply to loopback")
    site = Site(Peer())
    site.noisy = False
    port = reactor.listenTCP(0, site, interface=address)
    url = f"http://{address}:{port.getHost().port}/who"
    try:
        with tinyproxy(tmp_path) as proxy:
            seen = {}
            for case, environ in {
                "proxied": {"http_proxy": f"127.0.0.1:{proxy.port}"},
                "no_proxy": {"HTTP_PROXY": f"http://127.0.0.1:{proxy.port}", "NO_PROXY": f"{address}:{port.getHost().port}"},
                "https only": {"HTTPS_PROXY": f"http://127.0.0.1:{proxy.port}"},
            }.items():
                outbound = OutboundClients(reactor, 5, EnvironmentProxies.from_environ(environ))
                try:
                    response = await outbound.client_for(INHERIT).get(url, timeout=10)
                    seen[case] = (await treq.content(response)).decode()
                finally:
                    await outbound.closeCachedConnections()
    finally:
        await port.stopListening()
    assert seen == {"proxied": OUTGOING, "no_proxy": address, "https only": address}
