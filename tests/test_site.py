"""
Client connections as twisted.web serves them, on the harness's clock: an
HTTPChannel on an in-memory transport in front of the daemon's routes, with
the simulated upstream behind them.
"""

from __future__ import annotations

import json

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from cliproxyd.frontend import TrackingSite
from tests.conftest import Harness, config_data


class Client:
    """One client connection to C{site}: what it sent, and what came back."""

    def __init__(self, site: TrackingSite) -> None:
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    @property
    def received(self) -> bytes:
        return self.transport.value()

    @property
    def closing(self) -> bool:
        return self.transport.disconnecting or self.transport.disconnected


def site_for(h: Harness, timeout: float | None) -> TrackingSite:
    """The daemon's site as tap builds it, on the harness's clock."""
    return TrackingSite(h.daemon.resource(), h.daemon.in_flight, h.daemon.source, timeout=timeout, reactor=h.clock)


def post(path: str, body: dict, length: int | None = None) -> bytes:
    raw = json.dumps(body).encode()
    head = (b"POST %s HTTP/1.1\r\nHost: proxy.test\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (path.encode(), len(raw) if length is None else length))
    return head + raw


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def pump(h: Harness, seconds: float, step: float = 5.0) -> None:
    """Let C{seconds} pass on the clock, the upstream answering as it goes."""
    h.flush()
    for _ in range(int(seconds / step)):
        h.clock.advance(step)
        h.flush()


# -- client-idle-seconds ------------------------------------------------------------


def test_a_request_whose_body_stops_arriving_is_cut_after_the_idle_timeout():
    h = Harness()
    client = Client(site_for(h, 60))
    request = post("/v1/chat/completions", CHAT, length=1000)
    client.send(request[:-20])  # headers and most of the body; 1000 bytes were announced
    h.clock.advance(50)
    client.send(b" ")  # a byte keeps it alive: the timeout is since the last data
    h.clock.advance(59)
    assert not client.closing
    h.clock.advance(1)
    assert client.transport.disconnecting  # closed; aborted if the client does not let go
    h.clock.advance(15)
    assert client.transport.disconnected
    assert not h.upstream.seen and len(h.daemon.in_flight) == 0


def test_a_connection_that_sends_nothing_or_stays_idle_after_an_answer_is_closed():
    h = Harness()
    silent = Client(site_for(h, 60))
    h.clock.advance(60)
    assert silent.transport.disconnecting
    kept = Client(site_for(h, 60))
    kept.send(post("/v1/chat/completions", CHAT))
    h.flush()
    assert kept.received.startswith(b"HTTP/1.1 200 ") and not kept.closing
    h.clock.advance(59)
    assert not kept.closing
    h.clock.advance(1)
    assert kept.transport.disconnecting


def test_a_long_stream_is_never_cut_by_the_idle_timeout():
    h = Harness()
    h.upstream.script("sk-up-1", "slow:45")  # each chunk 45 s apart, within stream-idle-seconds
    client = Client(site_for(h, 30))
    client.send(post("/v1/chat/completions", {**CHAT, "stream": True}))
    while not client.received.endswith(b"\r\n0\r\n\r\n") and h.clock.seconds() < 1000:
        pump(h, 5)
        assert not client.closing, f"cut while chunks were flowing, at {h.clock.seconds()} s"
    assert client.received.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"), client.received[-80:]
    assert h.clock.seconds() > 300  # ten times the idle timeout
    h.clock.advance(30)  # the answer is over: idle again, and the timer runs again
    assert client.transport.disconnecting


def test_a_non_streamed_answer_that_takes_minutes_is_not_cut_by_the_idle_timeout():
    h = Harness()
    h.upstream.script("sk-up-1", "slow:200")
    client = Client(site_for(h, 30))
    client.send(post("/v1/chat/completions", CHAT))
    pump(h, 205)
    assert client.received.startswith(b"HTTP/1.1 200 ") and b"simulated upstream" in client.received
    assert not client.closing


def test_client_idle_seconds_zero_keeps_a_connection_as_long_as_the_client_likes():
    h = Harness(config_data(timeouts={"client-idle-seconds": 0}))
    client = Client(site_for(h, h.config.timeouts.client_idle or None))
    client.send(post("/v1/chat/completions", CHAT, length=1000)[:-20])
    h.clock.advance(7 * 24 * 3600)
    assert not client.closing
