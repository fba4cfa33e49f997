"""
The SOCKS5 and HTTP CONNECT handshakes as byte exchanges (no I/O), and the
tunnel endpoint over in-memory transports on a Clock: every reply code,
replies split at every byte, authentication, leftovers handed on, timeouts
and cancellation.
"""

from __future__ import annotations

import base64

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectError, ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from cliproxyd.proxies import parse_proxy_url
from cliproxyd.proxies.endpoints import TunnelEndpoint
from cliproxyd.proxies.handshake import (
    MAX_CONNECT_HEAD,
    SOCKS5_REPLIES,
    ConnectHandshake,
    ProxyError,
    Socks5Handshake,
)

SOCKS = parse_proxy_url("socks5h://proxy.test:1080")
SOCKS_AUTH = parse_proxy_url("socks5h://al%40ice:p%3Ass@proxy.test:1080")
HTTP = parse_proxy_url("http://proxy.test:3128")
HTTP_AUTH = parse_proxy_url("http://bob:s3cret@proxy.test:3128")

SUCCESS_V4 = b"\x05\x00\x00\x01\x7f\x00\x00\x02\x1f\x90"


def feed_bytewise(handshake, data: bytes) -> bytes:
    """Feed one byte at a time; what the handshake wants sent, in all."""
    out = b""
    for i in range(len(data)):
        out += handshake.feed(data[i:i + 1])
    return out


# -- SOCKS5 ---------------------------------------------------------------------------------


def test_socks5_without_auth_offers_no_auth_and_sends_the_name_for_the_proxy_to_resolve():
    h = Socks5Handshake(SOCKS, "api.example.com", 443)
    assert h.start() == b"\x05\x01\x00"
    assert h.feed(b"\x05\x00") == b"\x05\x01\x00\x03\x0fapi.example.com\x01\xbb"
    assert not h.done
    assert h.feed(SUCCESS_V4) == b""
    assert h.done and h.rest == b""


@pytest.mark.parametrize("host, address", [
    ("10.1.2.3", b"\x01\x0a\x01\x02\x03"),
    ("::1", b"\x04" + b"\x00" * 15 + b"\x01"),
    ("[2001:db8::5]", b"\x04\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x05"),
])
def test_socks5_sends_an_address_as_an_address(host, address):
    h = Socks5Handshake(SOCKS, host, 80)
    h.start()
    assert h.feed(b"\x05\x00") == b"\x05\x01\x00" + address + b"\x00\x50"


def test_socks5_user_and_password_are_percent_decoded_and_sent_after_the_method_is_chosen():
    h = Socks5Handshake(SOCKS_AUTH, "h.test", 443)
    assert h.start() == b"\x05\x02\x00\x02"
    assert h.feed(b"\x05\x02") == b"\x01\x08al@ice\x04p:ss".replace(b"\x08", b"\x06")
    assert h.feed(b"\x01\x00") == b"\x05\x01\x00\x03\x06h.test\x01\xbb"
    h.feed(SUCCESS_V4)
    assert h.done


def test_socks5_a_proxy_that_needs_no_auth_skips_it_even_when_we_have_some():
    h = Socks5Handshake(SOCKS_AUTH, "h.test", 443)
    h.start()
    assert h.feed(b"\x05\x00").startswith(b"\x05\x01\x00\x03")


def test_socks5_every_exchange_split_at_every_byte_gives_the_same_bytes():
    whole = Socks5Handshake(SOCKS_AUTH, "h.test", 443)
    whole.start()
    expected = whole.feed(b"\x05\x02") + whole.feed(b"\x01\x00")
    pieces = Socks5Handshake(SOCKS_AUTH, "h.test", 443)
    pieces.start()
    assert feed_bytewise(pieces, b"\x05\x02\x01\x00") == expected
    # A reply with a domain-name bound address, one byte at a time: done at its last byte, not before.
    reply = b"\x05\x00\x00\x03\x04host\x01\xbb"
    for i in range(len(reply) - 1):
        assert pieces.feed(reply[i:i + 1]) == b"" and not pieces.done
    pieces.feed(reply[-1:])
    assert pieces.done and pieces.rest == b""


def test_socks5_bytes_after_the_reply_in_the_same_read_are_left_for_the_upstream_protocol():
    h = Socks5Handshake(SOCKS, "h.test", 443)
    h.start()
    h.feed(b"\x05\x00")
    h.feed(b"\x05\x00\x00\x04" + b"\x00" * 16 + b"\x00\x00" + b"\x16\x03\x01")
    assert h.done and h.rest == b"\x16\x03\x01"


@pytest.mark.parametrize("code", sorted(SOCKS5_REPLIES) + [9, 200])
def test_socks5_every_failure_reply_code_is_a_proxy_error_saying_what_it_means(code):
    h = Socks5Handshake(SOCKS, "h.test", 443)
    h.start()
    h.feed(b"\x05\x00")
    with pytest.raises(ProxyError) as info:
        h.feed(bytes([5, code, 0, 1]) + b"\x00" * 6)
    message = str(info.value)
    assert message.startswith("proxy socks5h://proxy.test:1080: CONNECT to h.test:443 failed: ")
    assert SOCKS5_REPLIES.get(code, f"unknown reply code {code}") in message
    assert isinstance(info.value, ConnectError)  # cools the credential as "connect"


@pytest.mark.parametrize("creds, before, reply, says", [
    (SOCKS, b"", b"\x05\xff", "wants a user name and password"),
    (SOCKS_AUTH, b"", b"\x05\xff", "no acceptable authentication method"),
    (SOCKS, b"", b"\x05\x02", "which was not offered"),
    (SOCKS, b"", b"\x04\x00", "not a SOCKS5 proxy"),
    (SOCKS, b"", b"HTTP/1.1 400", "not a SOCKS5 proxy"),
    (SOCKS_AUTH, b"\x05\x02", b"\x02\x00", "bad version in its user/password reply"),
    (SOCKS, b"\x05\x00", b"\x04\x00\x00\x01" + b"\x00" * 6, "bad version in its CONNECT reply"),
    (SOCKS, b"\x05\x00", b"\x05\x00\x00\x07" + b"\x00" * 6, "bad address type 7"),
])
def test_socks5_replies_that_make_no_sense_are_proxy_errors(creds, before, reply, says):
    h = Socks5Handshake(creds, "h.test", 443)
    h.start()
    if before:
        h.feed(before)
    with pytest.raises(ProxyError, match=says):
        h.feed(reply)


def test_socks5_a_host_name_too_long_for_the_protocol_is_a_clear_error():
    h = Socks5Handshake(SOCKS, "a" * 256, 443)
    h.start()
    with pytest.raises(ProxyError, match="cannot be sent over SOCKS5"):
        h.feed(b"\x05\x00")


# -- HTTP CONNECT ------------------------------------------------------------------------------


def test_connect_request_and_a_200_open_the_tunnel():
    h = ConnectHandshake(HTTP, "api.example.com", 443)
    assert h.start() == b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n"
    assert h.feed(b"HTTP/1.1 200 Connection established\r\nProxy-Agent: x\r\n\r\n") == b""
    assert h.done and h.rest == b""


def test_connect_sends_basic_auth_and_brackets_ipv6():
    h = ConnectHandshake(HTTP_AUTH, "2001:db8::1", 8443)
    token = base64.b64encode(b"bob:s3cret")
    assert h.start() == (b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n"
                         b"Proxy-Authorization: Basic " + token + b"\r\n\r\n")


def test_connect_answer_split_at_every_byte_and_the_bytes_after_it_are_kept():
    h = ConnectHandshake(HTTP, "h.test", 443)
    h.start()
    feed_bytewise(h, b"HTTP/1.0 200 OK\r\n\r\n")
    assert h.done
    h = ConnectHandshake(HTTP, "h.test", 443)
    h.feed(b"HTTP/1.1 200 OK\r\n\r\n\x16\x03\x03")
    assert h.rest == b"\x16\x03\x03"


@pytest.mark.parametrize("proxy, answer, says", [
    (HTTP, b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n",
     "wants a user name and password (407"),
    (HTTP_AUTH, b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", "authentication failed (407"),
    (HTTP_AUTH, b"HTTP/1.0 401 Unauthorized\r\n\r\n", "authentication failed (401 Unauthorized)"),
    (HTTP, b"HTTP/1.1 403 Forbidden\r\n\r\n", "refused to CONNECT to h.test:443 (403 Forbidden)"),
    (HTTP, b"HTTP/1.1 502 Bad Gateway\r\n\r\n", "answered CONNECT to h.test:443 with 502 Bad Gateway"),
    (HTTP, b"HTTP/1.0 500 Unable to connect\r\n\r\n", "with 500 Unable to connect"),
    (HTTP, b"HTTP/1.1 301 Moved\r\n\r\n", "with 301 Moved"),
    (HTTP, b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP proxy"),
    (HTTP, b"HTTP/1.1 abc\r\n\r\n", "not an HTTP proxy"),
])
def test_connect_refusals_say_what_the_proxy_said(proxy, answer, says):
    h = ConnectHandshake(proxy, "h.test", 443)
    h.start()
    with pytest.raises(ProxyError, match=says.replace("(", r"\(").replace(")", r"\)")) as info:
        h.feed(answer)
    assert "s3cret" not in str(info.value)


def test_connect_an_answer_without_an_end_is_cut_off():
    h = ConnectHandshake(HTTP, "h.test", 443)
    h.start()
    h.feed(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_CONNECT_HEAD // 6 - 10))
    with pytest.raises(ProxyError, match="no end of headers"):
        h.feed(b"X" * 200)


# -- the endpoint, in memory ----------------------------------------------------------------------


@implementer(IStreamClientEndpoint)
class MemoryProxyEndpoint:
    """Stands for the TCP endpoint to the proxy: each connect makes a protocol over a StringTransport."""

    def __init__(self, refuse: bool = False, hang: bool = False) -> None:
        self.refuse = refuse
        self.hang = hang
        self.protocol = None
        self.transport = StringTransport()
        self.pending: Deferred | None = None
        self.cancelled = False

    def connect(self, factory):
        if self.refuse:
            return fail(ConnectionRefusedError("Connection refused"))
        if self.hang:
            self.pending = Deferred(lambda d: setattr(self, "cancelled", True))
            return self.pending
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        return succeed(self.protocol)

    def proxy_sends(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def sent(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        return value


class Upstream(Protocol):
    """The wrapped protocol: records what it gets."""

    def __init__(self) -> None:
        self.received = b""
        self.made = False
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        self.made = True
        self.transport.write(b"GET / HTTP/1.1\r\n\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.lost = reason


def endpoint(proxy=SOCKS, host="h.test", port=443, clock=None, resolve=None, **kwargs):
    inner = MemoryProxyEndpoint(**kwargs)
    clock = clock or Clock()
    return TunnelEndpoint(clock, proxy, inner, host, port, 10, resolve), inner, clock


def result_of(d: Deferred):
    """The Deferred's result so far (None while it has none); a failure is taken (handled) here."""
    out: list = []
    d.addBoth(lambda r: out.append(r) or (None if isinstance(r, Failure) else r))
    return out[0] if out else None


def test_the_wrapped_protocol_gets_the_connection_after_the_handshake_and_the_leftover_bytes():
    ep, inner, clock = endpoint()
    upstream = Upstream()
    d = ep.connect(Factory.forProtocol(lambda: upstream))
    assert inner.sent() == b"\x05\x01\x00"
    inner.proxy_sends(b"\x05")
    inner.proxy_sends(b"\x00")
    assert inner.sent() == b"\x05\x01\x00\x03\x06h.test\x01\xbb"
    assert not upstream.made and not d.called
    inner.proxy_sends(SUCCESS_V4 + b"HTTP/1.1 200")
    assert result_of(d) is upstream
    assert upstream.made and upstream.transport is inner.transport
    assert inner.sent() == b"GET / HTTP/1.1\r\n\r\n"
    assert upstream.received == b"HTTP/1.1 200"
    inner.proxy_sends(b" OK\r\n")
    assert upstream.received == b"HTTP/1.1 200 OK\r\n"
    inner.protocol.connectionLost(Failure(ConnectionRefusedError()))
    assert upstream.lost is not None
    assert clock.getDelayedCalls() == []  # the deadline is cancelled once the tunnel is up


def test_a_refusal_fails_the_connect_with_the_proxy_error_and_aborts_the_connection():
    ep, inner, clock = endpoint(proxy=HTTP)
    upstream = Upstream()
    d = ep.connect(Factory.forProtocol(lambda: upstream))
    inner.proxy_sends(b"HTTP/1.1 403 Forbidden\r\n\r\n")
    failure = result_of(d)
    assert isinstance(failure, Failure) and failure.check(ProxyError)
    assert "403 Forbidden" in str(failure.value)
    assert inner.transport.disconnecting
    assert not upstream.made
    assert clock.getDelayedCalls() == []


def test_a_proxy_that_is_down_is_a_proxy_error_naming_it():
    ep, inner, _ = endpoint(proxy=HTTP_AUTH, refuse=True)
    failure = result_of(ep.connect(Factory.forProtocol(Upstream)))
    assert failure.check(ProxyError) and failure.check(ConnectError)
    assert str(failure.value).startswith("proxy http://bob:***@proxy.test:3128: cannot connect to the proxy")
    assert "Connection refused" in str(failure.value) and "s3cret" not in str(failure.value)


def test_a_proxy_that_closes_during_the_handshake_is_a_proxy_error():
    ep, inner, _ = endpoint()
    d = ep.connect(Factory.forProtocol(Upstream))
    inner.proxy_sends(b"\x05")
    inner.protocol.connectionLost(Failure(ConnectionRefusedError()))
    failure = result_of(d)
    assert failure.check(ProxyError) and "closed the connection during the handshake" in str(failure.value)


def test_a_silent_proxy_times_out_on_the_clock():
    ep, inner, clock = endpoint()
    d = ep.connect(Factory.forProtocol(Upstream))
    inner.proxy_sends(b"\x05\x00")
    clock.advance(9.9)
    assert not d.called
    clock.advance(0.1)
    failure = result_of(d)
    assert failure.check(ProxyError) and "no tunnel to h.test:443 within 10s" in str(failure.value)
    assert inner.transport.disconnecting


def test_a_proxy_that_never_accepts_times_out_and_the_connect_attempt_is_cancelled():
    ep, inner, clock = endpoint(hang=True)
    d = ep.connect(Factory.forProtocol(Upstream))
    clock.advance(10)
    assert inner.cancelled
    assert result_of(d).check(ProxyError)


def test_cancelling_the_connect_stops_the_handshake():
    ep, inner, clock = endpoint()
    d = ep.connect(Factory.forProtocol(Upstream))
    d.cancel()
    assert result_of(d).check(CancelledError)
    assert inner.transport.disconnecting
    assert clock.getDelayedCalls() == []


def test_socks5_resolves_the_name_here_and_sends_the_address():
    asked = []

    def resolve(host, port):
        asked.append((host, port))
        return succeed("192.0.2.7")

    ep, inner, _ = endpoint(proxy=parse_proxy_url("socks5://proxy.test:1080"), resolve=resolve)
    ep.connect(Factory.forProtocol(Upstream))
    inner.proxy_sends(b"\x05\x00")
    assert asked == [("h.test", 443)]
    assert inner.sent() == b"\x05\x01\x00" + b"\x05\x01\x00\x01\xc0\x00\x02\x07\x01\xbb"


def test_socks5h_never_resolves_here():
    def resolve(host, port):
        raise AssertionError("socks5h must let the proxy resolve")

    ep, inner, _ = endpoint(proxy=SOCKS, resolve=resolve)
    ep.connect(Factory.forProtocol(Upstream))
    inner.proxy_sends(b"\x05\x00")
    assert b"\x03\x06h.test" in inner.sent()


def test_socks5_a_name_that_does_not_resolve_fails_without_touching_the_proxy():
    from twisted.internet.error import DNSLookupError

    ep, inner, _ = endpoint(proxy=parse_proxy_url("socks5://proxy.test:1080"),
                            resolve=lambda host, port: fail(DNSLookupError("h.test")))
    failure = result_of(ep.connect(Factory.forProtocol(Upstream)))
    assert failure.check(DNSLookupError)
    assert inner.protocol is None


def test_a_reply_that_comes_after_the_connect_was_given_up_is_not_handed_on():
    ep, inner, clock = endpoint()
    upstream = Upstream()
    d = ep.connect(Factory.forProtocol(lambda: upstream))
    inner.proxy_sends(b"\x05\x00")
    clock.advance(10)
    assert result_of(d).check(ProxyError)
    inner.proxy_sends(SUCCESS_V4)  # bytes already on their way when the connection was aborted
    assert not upstream.made
