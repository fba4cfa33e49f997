"""
Client connections as twisted.web serves them, on the harness's clock: an
HTTPChannel on an in-memory transport in front of the daemon's routes, with
the simulated upstream behind them.
"""

from __future__ import annotations

import json
from typing import Callable

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from cliproxyd.frontend import TrackingSite
from cliproxyd.frontend.app import SHUTDOWN_MESSAGE, stream_format
from cliproxyd.frontend.site import CLOSE_GRACE
from tests.conftest import Harness, config_data
from tests.test_formats_frontend import ASK, matrix, payloads


class Client:
    """One client connection to C{site}: what it sent, and what came back."""

    def __init__(self, site: TrackingSite, transport: Callable[..., StringTransport] = StringTransport) -> None:
        self.transport = transport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
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


# -- streams still running when shutdown-seconds is up ----------------------------------


class ClientEnd(StringTransport):
    """
    A client's end of the connection that, like a socket, tells the channel
    when it is gone (on the clock's next turn): an abort at once, a close
    once the data is out, which for a client that reads nothing is never.
    """

    def __init__(self, clock, reads: bool = True) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self._clock = clock
        self._reads = reads
        self.protocol = None

    def loseConnection(self) -> None:
        super().loseConnection()
        if self._reads:
            self._gone(ConnectionDone())

    def abortConnection(self) -> None:
        super().abortConnection()
        self._gone(ConnectionAborted())

    def _gone(self, why: Exception) -> None:
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            self.disconnected = True
            self._clock.callLater(0, protocol.connectionLost, Failure(why))


def connect(h: Harness, reads: bool = True) -> Client:
    conn = Client(site_for(h, 60), lambda peerAddress: ClientEnd(h.clock, reads))
    conn.transport.protocol = conn.channel
    return conn


def http_body(raw: bytes) -> bytes:
    """The body of a chunked HTTP/1.1 answer; AssertionError unless its last chunk came."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower(), head
    body = b""
    while True:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            assert rest == b"\r\n", "the body did not end cleanly"
            return body
        body, rest = body + rest[:n], rest[n + 2:]


def stream_request(client: str, model: str) -> bytes:
    path, build = ASK[client]
    body = build(model)
    if client == "gemini":
        path = f"/v1beta/models/{model}:streamGenerateContent?alt=sse"
    else:
        body["stream"] = True
    return post(path, body)


def stopping(h: Harness):
    """SIGTERM's part for the in-flight requests: their service stops (30 s, build_daemon's default)."""
    in_flight = h.daemon.in_flight
    in_flight.startService()
    stopped = []
    in_flight.stopService().addCallback(stopped.append)
    return stopped


@pytest.mark.parametrize("client", ["openai", "claude", "gemini", "responses"])
@pytest.mark.parametrize("model", ["via-openai", "via-claude"])  # relayed as it is, or translated
def test_a_stream_still_running_at_the_deadline_ends_with_its_clients_error_event(client, model):
    h = matrix()  # one credential per upstream format
    key = {"via-openai": "sk-o", "via-claude": "sk-c"}[model]
    h.upstream.script(key, "slow:20")  # a chunk every 20 s: still going long after the deadline
    conn = connect(h)
    conn.send(stream_request(client, model))
    pump(h, 45)  # the first content chunk comes at 40 s (the stream is held until then)
    assert conn.received.startswith(b"HTTP/1.1 200 ") and len(h.daemon.in_flight) == 1
    stopped = stopping(h)
    pump(h, 25)
    assert not stopped and not conn.closing
    pump(h, 5)  # 30 s: the deadline
    h.clock.advance(0.1)  # the connection is looked at: it has closed
    assert stopped == [None] and len(h.daemon.in_flight) == 0
    assert conn.transport.disconnected
    events = payloads(http_body(conn.received))  # a complete body, not a cut one
    assert len(events) >= 2, "the stream had started"
    last = events[-1]
    if client == "openai":
        assert last["error"]["message"] == SHUTDOWN_MESSAGE and last["error"]["type"] == "server_error"
        assert b"[DONE]" not in conn.received
    elif client == "claude":
        assert last["type"] == "error" and last["error"]["message"] == SHUTDOWN_MESSAGE
        assert b"event: error\n" in conn.received
    elif client == "responses":
        assert last["type"] == "error" and last["message"] == SHUTDOWN_MESSAGE
    else:
        assert last["error"]["message"] == SHUTDOWN_MESSAGE
    # The upstream request was stopped as when a client leaves: nothing is held against the key.
    [seen] = h.upstream.seen
    assert seen.disconnected
    cred = next(c for c in h.creds if c.api_key == key)
    assert h.state.stats(cred.id).failures == 0 and h.state.model_states(cred.id) == {}


def test_an_ended_stream_whose_client_reads_nothing_is_dropped_after_the_grace():
    h = Harness()
    h.upstream.script("sk-up-1", "slow:20")
    conn = connect(h, reads=False)
    conn.send(post("/v1/chat/completions", {**CHAT, "stream": True}))
    pump(h, 25)
    stopped = stopping(h)
    pump(h, 30)
    assert SHUTDOWN_MESSAGE in json.dumps(payloads(http_body(conn.received)))
    assert conn.transport.disconnecting and not conn.transport.disconnected and not stopped
    h.clock.advance(CLOSE_GRACE)
    assert conn.transport.disconnected and stopped == [None]
    assert h.clock.getDelayedCalls() == []


@pytest.mark.parametrize("client", ["openai", "claude", "gemini", "responses"])
@pytest.mark.parametrize("stream", [True, False])
def test_a_request_still_waiting_for_its_upstream_at_the_deadline_gets_a_503_in_its_format(client, stream):
    h = matrix()
    h.upstream.script("sk-o", "hang")
    conn = connect(h)
    if stream:
        conn.send(stream_request(client, "via-openai"))
    else:
        path, build = ASK[client]
        conn.send(post(path or "/v1beta/models/via-openai:generateContent", build("via-openai")))
    pump(h, 5)
    assert conn.received == b"" and len(h.daemon.in_flight) == 1
    stopped = stopping(h)
    pump(h, 25)
    assert not stopped and conn.received == b""
    pump(h, 5)  # 30 s: the deadline
    h.clock.advance(0.1)  # the connection is looked at: it has closed
    assert stopped == [None] and conn.transport.disconnected
    head = conn.received.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 503 "), conn.received
    assert b"\r\nretry-after: 1\r\n" in head and b"\r\nconnection: close\r\n" in head
    body = json.loads(http_body(conn.received))
    assert "nothing was generated" in json.dumps(body)
    if client == "claude":
        assert body["type"] == "error" and body["error"]["type"] == "api_error"
    elif client == "gemini":
        assert body["error"]["status"] == "UNAVAILABLE"
    else:
        assert body["error"]["code"] == "server_shutting_down"
    # The upstream attempt was stopped as when a client leaves: nothing is held against the key.
    [seen] = h.upstream.seen
    assert seen.disconnected
    cred = next(c for c in h.creds if c.api_key == "sk-o")
    assert h.state.stats(cred.id).failures == 0 and h.state.model_states(cred.id) == {}
    assert h.clock.getDelayedCalls() == []


def test_a_gemini_stream_without_alt_sse_is_json_and_is_dropped_not_given_an_sse_event():
    h = matrix()
    h.upstream.script("sk-o", "slow:20")
    conn = connect(h)
    conn.send(post("/v1beta/models/via-openai:streamGenerateContent", ASK["gemini"][1]("via-openai")))
    pump(h, 45)  # held until the first content chunk, at 40 s
    assert b"application/json" in conn.received
    stopped = stopping(h)
    pump(h, 30)
    assert stopped == [None] and conn.transport.disconnected
    assert SHUTDOWN_MESSAGE.encode() not in conn.received


@pytest.mark.parametrize("path, name", [
    (b"/v1/chat/completions", "openai"), (b"/v1/responses", "responses"), (b"/v1/messages", "claude"),
    (b"/v1beta/models/gemini-2.5-pro:streamGenerateContent", "gemini"),
    (b"/v1/models/models/gemini-2.5-pro:streamGenerateContent", "gemini"),
    (b"/v1beta/models/gemini-2.5-pro%3AstreamGenerateContent", "gemini"),
    (b"/v1beta/models/gemini-2.5-pro:generateContent", None), (b"/v1/messages/count_tokens", None),
    (b"/v1/models", None), (b"/healthz", None),
])
def test_the_client_format_of_a_stream_follows_from_its_route(path, name):
    fmt = stream_format(path)
    assert (fmt.NAME if fmt else None) == name


# -- what a finished request leaves behind ------------------------------------------------


def test_a_finished_request_is_freed_without_the_cycle_collector():
    """
    Klein's render keeps the request in a closure that refers to itself, so
    a request is only ever freed by the cycle collector; what it holds
    (headers, addresses, adapters) is let go when the answer is done, and so
    is freed at once by reference counting, not piled up until a collection.
    """
    import gc

    from twisted.internet.address import IPv4Address
    from twisted.web.http_headers import Headers

    from cliproxyd.frontend.site import MemoryRequest

    h = Harness()
    client = Client(site_for(h, 60))
    gc.collect()
    gc.disable()
    try:
        for _ in range(5):
            client.send(post("/v1/chat/completions", CHAT))
            h.flush()
        left = [o for o in gc.get_objects() if isinstance(o, MemoryRequest) and o.finished]
        held = [value for request in left for value in vars(request).values()
                if isinstance(value, (Headers, IPv4Address, dict)) and value]
    finally:
        gc.enable()
    assert client.received.count(b"HTTP/1.1 200 ") == 5
    assert len(left) >= 5 and held == []  # five finished here, waiting for a collection
