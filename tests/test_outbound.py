"""
The outbound pool on loopback sockets: a connection is reused only while it
is usable; one that began to close is never handed out again, and one the
upstream closes unanswered costs a failover, not a cooldown.
"""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from cliproxyd.frontend import QuietSite
from cliproxyd.outbound import _QuietClientFactory, is_closing, make_http_client
from cliproxyd.testing.upstream import SimulatedUpstream
from tests.test_loopback import Daemon, one_provider, post_chat, wait_for


class FakeTransport:
    def __init__(self, disconnecting=False, inner=None):
        self.disconnecting = disconnecting
        if inner is not None:
            self.transport = inner


class FakeConnection:
    def __init__(self, transport):
        self.transport = transport


def test_a_connection_that_is_closing_never_goes_back_to_the_pool():
    pooled = []
    factory = _QuietClientFactory(pooled.append, "test")
    closing = FakeConnection(FakeTransport(disconnecting=True))
    under_tls = FakeConnection(FakeTransport(inner=FakeTransport(disconnecting=True)))
    usable = FakeConnection(FakeTransport(inner=FakeTransport()))
    for connection in (closing, under_tls, usable):
        factory.buildProtocol(None)._quiescentCallback(connection)
    assert pooled == [usable]
    assert is_closing(closing.transport) and is_closing(under_tls.transport) and not is_closing(usable.transport)


@pytest_twisted.ensureDeferred
async def test_a_pooled_connection_that_began_to_close_is_not_handed_out(reactor):
    """The request goes out on a new connection, once, and is answered."""
    upstream = SimulatedUpstream(reactor)
    port = reactor.listenTCP(0, QuietSite(upstream.resource()), interface="127.0.0.1")
    pool, client = make_http_client(reactor, 5)
    url = f"http://127.0.0.1:{port.getHost().port}/v1/chat/completions"
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    try:
        response = await client.post(url, data=body, headers={"content-type": "application/json"})
        await response.content()
        await wait_for(reactor, lambda: any(pool._connections.values()))
        [cached] = [c for cs in pool._connections.values() for c in cs]
        cached.transport.loseConnection()  # closing, not yet closed: it is still in the pool
        response = await client.post(url, data=body, headers={"content-type": "application/json"}, timeout=5)
        assert response.code == 200
        assert json.loads(await response.content())["choices"][0]["message"]["content"]
        assert len(upstream.seen) == 2
    finally:
        await pool.closeCachedConnections()
        await port.stopListening()


class AnswersOncePerConnection(Protocol):
    """Answers the first request of each connection (keep-alive), and closes it unanswered at the next."""

    def connectionMade(self):
        self.buffer = b""
        self.answered = False
        self.factory.connections += 1

    def dataReceived(self, data):
        self.buffer += data
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        if len(rest) < length:
            return
        self.buffer = rest[length:]
        self.factory.requests += 1
        if self.answered:
            self.transport.loseConnection()
            return
        self.answered = True
        answer = json.dumps({"id": "raw", "object": "chat.completion", "model": "sim-small", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "from the raw upstream"},
             "finish_reason": "stop"}]}).encode()
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(answer), answer))


@pytest_twisted.ensureDeferred
async def test_a_reused_connection_closed_unanswered_moves_on_without_cooling_the_key(reactor):
    factory = Factory.forProtocol(AnswersOncePerConnection)
    factory.connections = factory.requests = 0
    raw = reactor.listenTCP(0, factory, interface="127.0.0.1")
    models = [{"name": "sim-small", "alias": "gpt-4o-mini"}]
    daemon = Daemon(reactor, providers=lambda url: [
        one_provider(f"http://127.0.0.1:{raw.getHost().port}/v1", ["sk-raw"], models, "raw"),
        one_provider(url, ["sk-sim"], models, "sim")])
    try:
        code, body = await post_chat(daemon, "gpt-4o-mini")
        assert code == 200 and b"from the raw upstream" in body
        await deferLater(reactor, 0.05)  # the connection is back in the pool
        code, body = await post_chat(daemon, "gpt-4o-mini")  # on the reused connection, closed unanswered
        assert code == 200 and b"(key ...sk-sim)." in body
        raw_cred = daemon.conductor.creds[0]
        assert not daemon.state.model_state(raw_cred.id, "gpt-4o-mini").blocked(reactor.seconds())
        code, body = await post_chat(daemon, "gpt-4o-mini")  # the key is still first in line
        assert code == 200 and b"from the raw upstream" in body
        assert (factory.connections, factory.requests) == (2, 3)
    finally:
        await daemon.close()
        await raw.stopListening()


# -- the executors' request path (UpstreamClient.send) ----------------------------------


class Echo:
    """A twisted.web resource that answers each POST with what it saw, gzipped when asked, setting a cookie."""

    isLeaf = True

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def render(self, request):
        import gzip

        seen = {"path": request.uri.decode(), "host": request.getHeader(b"host").decode(),
                "cookie": request.getHeader(b"cookie"), "body": request.content.read().decode(),
                "accept-encoding": request.getHeader(b"accept-encoding")}
        seen = {k: v.decode() if isinstance(v, bytes) else v for k, v in seen.items()}
        self.seen.append(seen)
        request.addCookie(b"session", b"one-credentials-cookie")
        body = json.dumps(seen).encode()
        if b"gzip" in (request.getHeader(b"x-want") or b""):
            request.setHeader(b"content-encoding", b"gzip")
            body = gzip.compress(body)
        request.setHeader(b"content-type", b"application/json")
        return body


@pytest_twisted.ensureDeferred
async def test_upstream_sends_go_straight_to_the_agent_keep_no_cookies_and_decode_gzip(reactor):
    from treq import content
    from twisted.web.http_headers import Headers

    from cliproxyd.outbound import UpstreamClient, post

    echo = Echo()
    port = reactor.listenTCP(0, QuietSite(echo), interface="127.0.0.1")
    pool, client = make_http_client(reactor, 5)
    assert isinstance(client, UpstreamClient)
    base = f"http://127.0.0.1:{port.getHost().port}"
    try:
        first = await post(client, base + "/v1/chat/completions", Headers({b"x-want": [b"gzip"]}), b'{"a":1}')
        assert first.code == 200
        seen = json.loads(await content(first))  # decoded: it came gzipped
        assert seen == {"path": "/v1/chat/completions", "host": f"127.0.0.1:{port.getHost().port}", "cookie": None,
                        "body": '{"a":1}', "accept-encoding": "gzip"}
        # The upstream's cookie is not sent back with the next request; a non-ASCII path is encoded as treq would.
        second = await post(client, base + "/v1beta/models/modèle:generateContent", Headers(), b"{}")
        assert json.loads(await content(second))["cookie"] is None
        assert echo.seen[1]["path"] == "/v1beta/models/mod%C3%A8le:generateContent"
        # Each URL was parsed once, and is known from then on.
        agent = client._agent
        assert set(agent._known) == {(base + "/v1/chat/completions").encode(),
                                     (base + "/v1beta/models/mod%C3%A8le:generateContent").encode()}
        third = await post(client, base + "/v1/chat/completions", Headers(), b"{}")
        assert json.loads(await content(third))["host"] == f"127.0.0.1:{port.getHost().port}"
        assert len(agent._known) == 2
    finally:
        await pool.closeCachedConnections()
        await port.stopListening()


def _read_one_answer(head: bytes, body: bytes):
    """A pooled connection's protocol answering one request; returns (body read, the parser, the response)."""
    from twisted.internet.testing import StringTransport
    from twisted.internet.task import Clock
    from twisted.web._newclient import Request
    from twisted.web.http_headers import Headers

    from cliproxyd.executors.stream import BodyCollector

    pooled = []
    protocol = _QuietClientFactory(pooled.append, "test").buildProtocol(None)
    protocol.makeConnection(StringTransport())
    answered = protocol.request(Request(b"POST", b"/v1/chat/completions", Headers({b"host": [b"upstream"]}), None,
                                                persistent=True))
    protocol.dataReceived(head)
    responses = []
    answered.addCallback(responses.append)
    reader = BodyCollector(Clock(), 30.0)
    responses[0].deliverBody(reader)
    protocol.dataReceived(body)
    got = []
    reader.done.addCallback(got.append)
    assert pooled == [protocol] and protocol.state == "QUIESCENT"
    return got, protocol, responses.pop()


def test_a_chunked_answer_is_freed_by_reference_counting_once_read():
    """
    Twisted's chunked decoder and its parser refer to each other for good;
    a pooled connection breaks that once the response is done, so a stream's
    parser and response are freed at once, not left for the cycle collector.
    """
    import gc
    import weakref

    gc.collect()
    gc.disable()
    try:
        got, protocol, response = _read_one_answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        refs = [weakref.ref(response), weakref.ref(response._bodyProtocol or response)]
        del response
        alive = [ref() is not None for ref in refs]
        garbage = gc.collect()
    finally:
        gc.enable()
    assert got == [b"hello world"] and protocol._parser is None
    assert alive == [False, False] and garbage == 0


def test_a_sized_answer_is_freed_by_reference_counting_too():
    import gc
    import weakref

    gc.collect()
    gc.disable()
    try:
        got, protocol, response = _read_one_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", b"{}")
        ref = weakref.ref(response)
        del response
        alive = ref() is not None
        garbage = gc.collect()
    finally:
        gc.enable()
    assert got == [b"{}"] and not alive and garbage == 0
