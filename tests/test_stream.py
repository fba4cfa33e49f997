"""
Upstream bodies: a stream's hold before its first content and its end, in-stream
errors, idle timeouts, the relay's producer; a whole answer's JSON object.
"""

import pytest
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.internet.error import ConnectionLost

from cliproxyd.formats import openai_chat
from cliproxyd.replies import UpstreamError
from cliproxyd.executors.stream import StreamRelay
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


#: An OpenAI chunk with content: what ends a stream's hold.
CONTENT = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'


def _relay(clock, idle=10, fmt=openai_chat):
    relay = StreamRelay(clock, idle, fmt)
    transport = FakeTransport()
    relay.makeConnection(transport)
    return relay, transport


def test_relay_buffers_until_the_first_payload_then_streams_with_backpressure():
    clock = Clock()
    relay, transport = _relay(clock)
    relay.dataReceived(b": keep-alive\n\n")
    relay.dataReceived(b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n')
    relay.dataReceived(CONTENT[:20])
    assert not relay.first.called  # a comment, a role-only chunk and half an event are no content
    relay.dataReceived(CONTENT[20:])
    assert relay.first.called
    consumer = FakeConsumer()
    done = relay.attach(consumer)
    assert b"".join(consumer.data) == (b': keep-alive\n\ndata: {"choices":[{"delta":{"role":"assistant"}}]}\n\n'
                                       + CONTENT)
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
    relay.dataReceived(CONTENT)
    consumer = FakeConsumer()
    done = relay.attach(consumer)
    clock.advance(9)
    assert transport.calls == []
    clock.advance(1)
    assert transport.calls == ["stop"]
    relay.connectionLost(Failure(ResponseFailed([Failure(ConnectionLost())])))
    assert done.result.kind == "timeout" and done.result.message == "upstream stream idle for 10s"


def test_relay_failure_before_first_payload_is_an_upstream_error():
    relay, _ = _relay(Clock())
    relay.dataReceived(b"event: ping\n\n")
    relay.connectionLost(Failure(ResponseDone()))
    failures = []
    relay.first.addErrback(failures.append)
    assert failures[0].check(UpstreamError)
    assert failures[0].value.kind == "empty_stream"


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
    assert failures[0].value.kind == "broken"


def _done(relay, *chunks, reason=ResponseDone):
    """Attach, feed the rest, end the body: what the relay's Deferred fires with."""
    consumer = FakeConsumer()
    done = relay.attach(consumer)
    for chunk in chunks:
        relay.dataReceived(chunk)
    relay.connectionLost(Failure(reason()))
    return done.result


def test_a_stream_that_ends_before_its_final_event_is_reported_broken():
    relay, _ = _relay(Clock())
    relay.dataReceived(CONTENT)
    problem = _done(relay, CONTENT)
    assert (problem.kind, problem.message) == ("broken", "upstream stream ended before its final event")
    assert problem.protocol_fault and not problem.relayed


def test_a_stream_with_its_final_event_is_complete_even_if_cut_after_it():
    relay, _ = _relay(Clock())
    relay.dataReceived(CONTENT)
    finish = b'data: {"choices":[{"index":0,"delta":{},"finish_reason": "stop"}]}\n\n'
    assert _done(relay, finish[:30], finish[30:], reason=lambda: ResponseFailed([Failure(ConnectionLost())])) is None
    relay, _ = _relay(Clock())
    relay.dataReceived(CONTENT)
    assert _done(relay, b"data: [DO", b"NE]\n\n") is None


def test_the_upstreams_own_error_that_ends_a_stream_is_reported_as_relayed():
    from cliproxyd.formats import claude

    relay, _ = _relay(Clock(), fmt=claude)
    relay.dataReceived(b'event: message_start\ndata: {"type":"message_start","message":{"id":"m"}}\n\n'
                       b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                       b'"delta":{"type":"text_delta","text":"hi"}}\n\n')
    assert relay.first.called
    problem = _done(relay, claude.stream_error_event("slow down", 429))
    assert (problem.kind, problem.status, problem.message, problem.relayed) == (
        "stream_error", 429, "slow down", True)


def test_keep_alives_do_not_keep_a_held_stream_from_timing_out():
    from cliproxyd.formats import claude

    clock = Clock()
    relay, transport = _relay(clock, idle=10, fmt=claude)
    relay.dataReceived(b'event: message_start\ndata: {"type":"message_start","message":{"id":"m"}}\n\n')
    for _ in range(4):
        clock.advance(3)
        relay.dataReceived(b'event: ping\ndata: {"type": "ping"}\n\n')
    assert transport.calls == ["stop"] and not relay.first.called
    relay.connectionLost(Failure(ResponseFailed([Failure(ConnectionLost())])))
    failures = []
    relay.first.addErrback(failures.append)
    assert failures[0].value.kind == "timeout"


def test_an_error_after_the_opening_events_fails_the_held_stream_with_its_status():
    from cliproxyd.formats import claude

    relay, transport = _relay(Clock(), fmt=claude)
    relay.dataReceived(b'event: message_start\ndata: {"type":"message_start","message":{"id":"m"}}\n\n'
                       b'event: ping\ndata: {"type": "ping"}\n\n'
                       b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error",'
                       b' "message": "Overloaded"}}\n\n')
    assert transport.calls == ["stop"]
    relay.connectionLost(Failure(ResponseDone()))
    failures = []
    relay.first.addErrback(failures.append)
    error = failures[0].value
    assert (error.kind, error.status, error.message, error.fmt) == ("stream_error", 529, "Overloaded", "claude")


def test_a_whole_answer_must_be_a_json_object():
    from cliproxyd.executors.stream import json_answer

    assert json_answer(b' {"id": "x"}', "openai", 0) == {"id": "x"}
    for body in (b'{"id": "x"', b"", b"<html></html>", b'[{"candidates": []}]', b'"text"'):
        with pytest.raises(UpstreamError) as raised:
            json_answer(body, "gemini", 0)
        assert (raised.value.kind, raised.value.status, raised.value.protocol_fault) == ("broken", 502, True), body
    quota = b'[{"error": {"code": 429, "message": "out", "details": [{"retryDelay": "3s"}]}}]'
    with pytest.raises(UpstreamError) as raised:
        json_answer(quota, "gemini", 0)
    assert (raised.value.kind, raised.value.status, raised.value.retry_after, raised.value.fmt) == (
        "http", 429, 3.0, "gemini")


def test_a_held_event_its_format_cannot_read_fails_the_stream_instead_of_the_relay():
    relay, transport = _relay(Clock())
    relay.dataReceived(b'data: {"choices": "not a list"}\n\n')
    assert transport.calls == ["stop"]
    relay.connectionLost(Failure(ResponseDone()))
    failures = []
    relay.first.addErrback(failures.append)
    assert (failures[0].value.kind, failures[0].value.message) == ("broken", "the stream's events are not openai events")


def test_a_collected_body_is_freed_by_reference_counting_once_read():
    """The idle timer and its reader refer to each other only while the body arrives."""
    import gc
    import weakref

    from twisted.internet.testing import StringTransport

    from cliproxyd.executors.stream import BodyCollector

    clock = Clock()
    gc.collect()
    gc.disable()
    try:
        collector = BodyCollector(clock, 30.0)
        collector.makeConnection(StringTransport())
        collector.dataReceived(b'{"ok": true}')
        collector.connectionLost(Failure(ResponseDone()))
        got = []
        collector.done.addCallback(got.append)
        ref = weakref.ref(collector)
        del collector
        alive = ref() is not None
    finally:
        gc.enable()
    assert got == [b'{"ok": true}'] and not alive and not clock.getDelayedCalls()


# -- what the held stream reads ------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
_NAMES = ["type", "event_type", "choices", "candidates", "response", "delta", "message", "index", "status",
          "code", "content_block", "interaction", "usageMetadata", "id", "model", "text", "failed"]
_TYPES = ["message_start", "ping", "content_block_delta", "response.created", "response.completed",
          "response.output_text.delta", "interaction.start", "content.delta", "failure", "Error", 3, None]
_events = st.dictionaries(st.sampled_from(_NAMES), _json_values | st.sampled_from(_TYPES), max_size=5)


@settings(max_examples=400, deadline=None)
@given(_events)
def test_no_decoder_reads_an_error_from_an_event_not_shaped_like_one(data):
    """
    The held stream asks every format's decoder about an event only when it
    is shaped like an error (an error member, an error type, response.failed):
    no decoder may find an error in any other event.
    """
    from cliproxyd.executors.stream import _error_in, _read, _shaped_like_error
    from cliproxyd.formats import FORMATS

    if _shaped_like_error(data):
        return
    for fmt in FORMATS.values():
        assert _error_in(_read(fmt.StreamDecoder(), data) or []) is None, fmt.NAME


@pytest.mark.parametrize("event", [
    {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota"}},
    {"type": "response.failed", "response": {"error": {"code": "rate_limit_exceeded", "message": "slow down"}}},
    {"event_type": "error", "error": {"code": "unavailable", "message": "try later"}},
])
def test_another_formats_error_in_a_held_stream_still_ends_it(event):
    """An OpenAI stream that relays another provider's error before any content is still an error."""
    import json

    relay = StreamRelay(Clock(), 30.0, openai_chat)
    failures = []
    relay.first.addErrback(failures.append)
    relay.makeConnection(FakeTransport())
    relay.dataReceived(b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
                       b"data: " + json.dumps(event).encode() + b"\n\n")
    relay.connectionLost(Failure(ResponseDone()))
    assert failures and failures[0].value.kind == "stream_error" and failures[0].value.status >= 400


def test_a_held_stream_is_read_only_up_to_its_first_generated_event():
    """What follows the first content is relayed as it came, never parsed."""
    relay = StreamRelay(Clock(), 30.0, openai_chat)
    parsed = []
    events = relay._parser.iter_events

    def counted(chunk):
        for event in events(chunk):
            parsed.append(event)
            yield event

    relay._parser.iter_events = counted
    relay.makeConnection(FakeTransport())
    body = (b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
            b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
            + b'data: {"choices":[{"index":0,"delta":{"content":" there"}}]}\n\n' * 20 + b"data: [DONE]\n\n")
    relay.dataReceived(body)
    assert relay.first.called and len(parsed) == 2


def test_the_sse_parser_keeps_what_an_early_stop_left_unread():
    from cliproxyd.formats.translate import SSEParser

    parser = SSEParser()
    for name, data in parser.iter_events(b"event: a\ndata: 1\n\ndata: 2\n\nda"):
        break
    assert (name, data) == (b"a", b"1")
    assert parser.feed_events(b"ta: 3\n\n") == [(b"", b"2"), (b"", b"3")]
