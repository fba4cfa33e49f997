"""Streams after the first payload: in-stream errors, idle timeouts, the relay's producer."""

from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.internet.error import ConnectionLost

from cliproxyd.replies import UpstreamError
from cliproxyd.executors.stream import StreamRelay, scan_first_payload
from tests.conftest import Harness, config_data, sse_payloads


def test_upstream_dropping_mid_stream_ends_with_an_error_event():
    h = Harness()
    h.upstream.script("sk-up-1", "cut:3")
    code, _, body = h.chat(stream=True)
    assert code == 200  # the status went out with the first payload
    payloads = sse_payloads(body)
    assert len(payloads) == 4  # three relayed events, then our error
    assert "error" in payloads[-1] and "broke off" in payloads[-1]["error"]["message"]
    assert h.keys_seen() == ["sk-up-1"]  # no failover once bytes reached the client


def test_upstream_going_silent_mid_stream_times_out_per_chunk():
    h = Harness(config_data(timeouts={"stream-idle-seconds": 15}))
    h.upstream.script("sk-up-1", "stall:2")
    code, _, body = h.chat(stream=True, advance=1)
    assert code == 200
    payloads = sse_payloads(body)
    assert payloads[-1]["error"]["message"] == "upstream stream idle for 15s"
    assert 15 <= h.clock.seconds() < 17
    assert h.upstream.seen[0].disconnected  # the upstream request was aborted


def test_a_slow_but_steady_stream_is_not_an_idle_one():
    h = Harness(config_data(timeouts={"stream-idle-seconds": 15}))
    h.upstream.script("sk-up-1", "slow:10")  # 10 s between chunks, under the 15 s limit
    code, _, body = h.chat(stream=True, advance=1)
    assert code == 200
    assert sse_payloads(body)[-1] == "[DONE]"
    assert h.clock.seconds() > 15 * 2  # the whole stream took far longer than one idle period


class FakeTransport:
    def __init__(self):
        self.calls = []

    def pauseProducing(self):
        self.calls.append("pause")

    def resumeProducing(self):
        self.calls.append("resume")

    def stopProducing(self):
        self.calls.append("stop")


class FakeConsumer:
    def __init__(self):
        self.data = []
        self.producer = None

    def write(self, data):
        self.data.append(data)

    def registerProducer(self, producer, streaming):
        assert streaming
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None


def _relay(clock, idle=10):
    relay = StreamRelay(clock, idle)
    transport = FakeTransport()
    relay.makeConnection(transport)
    return relay, transport


def test_relay_buffers_until_the_first_payload_then_streams_with_backpressure():
    clock = Clock()
    relay, transport = _relay(clock)
    relay.dataReceived(b": keep-alive\n\n")
    relay.dataReceived(b"data: ")
    assert not relay.first.called  # a comment and half a line are no payload
    relay.dataReceived(b'{"x":1}\n\n')
    assert relay.first.called
    consumer = FakeConsumer()
    done = relay.attach(consumer)
    assert b"".join(consumer.data) == b': keep-alive\n\ndata: {"x":1}\n\n'
    # The client is slow: pausing reaches the upstream transport.
    consumer.producer.pauseProducing()
    assert transport.calls == ["pause"]
    # A paused relay is not idle, however long the client takes.
    clock.advance(100)
    assert "stop" not in transport.calls
    consumer.producer.resumeProducing()
    relay.dataReceived(b"data: [DONE]\n\n")
    relay.connectionLost(Failure(ResponseDone()))
    assert consumer.producer is None
    assert done.result is None
    assert clock.getDelayedCalls() == []


def test_relay_reports_an_idle_upstream_after_resuming():
    clock = Clock()
    relay, transport = _relay(clock, idle=10)
    relay.dataReceived(b"data: 1\n\n")
    consumer = FakeConsumer()
    done = relay.attach(consumer)
    clock.advance(9)
    assert transport.calls == []
    clock.advance(1)
    assert transport.calls == ["stop"]
    relay.connectionLost(Failure(ResponseFailed([Failure(ConnectionLost())])))
    assert done.result == "upstream stream idle for 10s"


def test_relay_failure_before_first_payload_is_an_upstream_error():
    relay, _ = _relay(Clock())
    relay.dataReceived(b"event: ping\n\n")
    relay.connectionLost(Failure(ResponseDone()))
    failures = []
    relay.first.addErrback(failures.append)
    assert failures[0].check(UpstreamError)
    assert failures[0].value.kind == "empty_stream"


def test_scan_first_payload():
    assert scan_first_payload(b"data: {}\n") == (True, None)
    assert scan_first_payload(b"data: {}") == (False, None)
    assert scan_first_payload(b"data:\n\ndata:   \n") == (False, None)
    assert scan_first_payload(b'data: {"error":{"message":"x"}}\n') == (True, b'{"error":{"message":"x"}}')


def test_relay_gives_up_on_a_stream_that_never_sends_data():
    from cliproxyd.executors.stream import MAX_BEFORE_FIRST_PAYLOAD

    relay, transport = _relay(Clock())
    comment = b": padding padding padding\n\n" * 1000
    while not transport.calls:
        relay.dataReceived(comment)
    assert transport.calls == ["stop"]
    assert sum(map(len, relay._buffer)) <= MAX_BEFORE_FIRST_PAYLOAD + len(comment)
    relay.connectionLost(Failure(ResponseFailed([Failure(ConnectionLost())])))
    failures = []
    relay.first.addErrback(failures.append)
    assert failures[0].value.kind == "stream_error"
