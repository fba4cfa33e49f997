"""
tpm counts streamed answers too (issue 16): the relay keeps a stream's
last bytes anyway, and its final usage is read from them once, when the
stream ends, in every format; nothing is parsed per chunk for it.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionDone

from cliproxyd.executors.oauth import UnwrappingRelay
from cliproxyd.executors.stream import StreamRelay
from cliproxyd.formats import canonical as C
from cliproxyd.formats import claude, gemini, openai_chat, responses
from cliproxyd.formats.usage import tail_tokens
from cliproxyd.testing.upstream import _enveloped
from tests.conftest import Harness, config_data


def _stream(fmt, text: str, usage: C.Usage, pad: int = 0) -> bytes:
    enc = fmt.StreamEncoder("m")
    events = [C.Start("id-1", "m")] + [C.TextDelta(w) for w in ([text] * max(1, pad))]
    events += [C.Finish("stop"), C.UsageEvent(usage)]
    return b"".join(enc.feed(e) for e in events) + (enc.close() if hasattr(enc, "close") else b"")


class Sink:
    def __init__(self):
        self.data = []

    def write(self, data):
        self.data.append(data)

    def registerProducer(self, producer, streaming):
        pass

    def unregisterProducer(self):
        pass


def _relay(fmt, body: bytes, chunk: int = 97, relay_class=StreamRelay):
    relay = relay_class(Clock(), 60.0, fmt)
    relay.makeConnection(None)
    for i in range(0, len(body), chunk):
        relay.dataReceived(body[i:i + chunk])
        if relay.first.called and relay._consumer is None:
            relay.attach(Sink())
    relay.connectionLost(Failure(ConnectionDone()))
    return relay


@pytest.mark.parametrize("fmt", [openai_chat, claude, gemini, responses], ids=lambda f: f.NAME)
@pytest.mark.parametrize("pad", [1, 2000])  # a long stream: the usage is still in the kept tail
def test_each_formats_stream_reports_its_usage_when_it_ends(fmt, pad):
    body = _stream(fmt, "word ", C.Usage(input_tokens=123, output_tokens=45), pad)
    assert tail_tokens(fmt.NAME, body) == 168
    relay = _relay(fmt, body)
    ended = []
    relay.ended.addCallback(ended.append)
    assert ended == [None]  # complete
    assert relay.usage_tokens() == 168


def test_a_code_assist_stream_reports_its_usage_inside_the_envelope():
    body = _enveloped(_stream(gemini, "hi ", C.Usage(input_tokens=7, output_tokens=3)))
    assert b'"response"' in body
    relay = _relay(gemini, body, relay_class=UnwrappingRelay)
    assert relay.usage_tokens() == 10


def test_claude_input_tokens_come_from_the_start_of_the_stream():
    """Claude's message_start has the input tokens and message_delta only the output: the two are added."""
    head = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"m1","type":"message",'
            b'"role":"assistant","content":[],"model":"m","usage":{"input_tokens":900,'
            b'"cache_read_input_tokens":100,"output_tokens":1}}}\n\n'
            b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
            b'"content_block":{"type":"text","text":""}}\n\n')
    text = b''.join(b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                    b'"delta":{"type":"text_delta","text":"the \\"usage\\": {\\"output_tokens\\": 99}"}}\n\n'
                    for _ in range(400))
    end = (b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
           b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
           b'"usage":{"output_tokens":42}}\n\n'
           b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    relay = _relay(claude, head + text + end)
    assert relay.usage_tokens() == 1042  # not the quoted "usage" inside the text


def test_a_stream_without_usage_reports_nothing():
    assert tail_tokens("openai", b'data: {"choices":[{"delta":{"content":"x"}}]}\n\ndata: [DONE]\n\n') is None
    assert tail_tokens("openai", b'data: {"usage": {"total_tokens": 3') is None  # cut short
    assert tail_tokens("nope", b'"usage": {"total_tokens": 3}') is None


# -- the conductor, on a Clock ----------------------------------------------------


def test_a_streamed_answer_counts_toward_tpm():
    data = config_data()
    data["openai-compatibility"][0]["api-key-entries"][0]["tpm"] = 10
    h = Harness(data)
    cred = next(c for c in h.conductor.creds if c.secret == "sk-up-1")
    code, _, body = h.chat(stream=True)
    assert code == 200 and body.rstrip().endswith(b"[DONE]") and h.keys_seen() == ["sk-up-1"]
    # The simulated stream's final usage chunk: 5 prompt tokens and 7 completion tokens.
    assert h.state.limit_window(cred.id).minute_tokens == 12
    h.upstream.seen.clear()
    for _ in range(3):
        assert h.chat(stream=True)[0] == 200
    assert h.keys_seen() == ["sk-up-2"] * 3  # at its tpm: skipped like a cooling key
    h.clock.advance(61)
    h.upstream.seen.clear()
    h.chat(stream=True), h.chat(stream=True)
    assert sorted(h.keys_seen()) == ["sk-up-1", "sk-up-2"]  # the window rolled over
