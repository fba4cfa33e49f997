"""The tokens answers and streams report, per format (L{cliproxyd.formats.usage})."""

from __future__ import annotations

import json

import pytest

from cliproxyd.formats.usage import StreamUsage, answer_tokens


def sse(*events: dict, named: bool = False) -> bytes:
    out = b""
    for e in events:
        if named:
            out += f"event: {e.get('type', 'x')}\n".encode()
        out += b"data: " + json.dumps(e).encode() + b"\n\n"
    return out


@pytest.mark.parametrize("fmt, data, tokens", [
    ("openai", {"usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}, 12),
    ("openai", {"usage": {"prompt_tokens": 5, "completion_tokens": 7}}, 12),
    ("openai", {"choices": []}, None),
    ("claude", {"usage": {"input_tokens": 3, "cache_read_input_tokens": 10, "output_tokens": 4}}, 17),
    ("gemini", {"usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 3, "totalTokenCount": 9}}, 9),
    ("gemini", {"response": {"usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 3}}}, 5),
    ("responses", {"usage": {"input_tokens": 6, "output_tokens": 2, "total_tokens": 8}}, 8),
    ("responses", {"usage": {"input_tokens": True, "output_tokens": "2"}}, 0),  # nonsense counts nothing
    ("nope", {"usage": {"total_tokens": 1}}, None),
])
def test_answer_tokens(fmt, data, tokens):
    assert answer_tokens(fmt, data) == tokens


def test_a_stream_usage_event_split_across_writes_is_read():
    body = sse({"choices": [{"delta": {"content": "hi"}}]},
               {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}})
    reader = StreamUsage("openai")
    for i in range(0, len(body), 7):
        reader.feed(body[i:i + 7])
    assert reader.tokens == 10


def test_claude_adds_message_starts_input_to_message_deltas_output():
    reader = StreamUsage("claude")
    reader.feed(sse({"type": "message_start", "message": {"usage": {"input_tokens": 11, "output_tokens": 1}}},
                    {"type": "content_block_delta", "delta": {"text": "x"}},
                    {"type": "message_delta", "usage": {"output_tokens": 9}}, named=True))
    assert reader.tokens == 20


def test_gemini_takes_the_last_usage_metadata_and_responses_the_completed_event():
    g = StreamUsage("gemini")
    g.feed(sse({"usageMetadata": {"totalTokenCount": 3}}, {"usageMetadata": {"totalTokenCount": 8}}))
    assert g.tokens == 8
    r = StreamUsage("responses")
    r.feed(sse({"type": "response.output_text.delta", "delta": "x"},
               {"type": "response.completed", "response": {"usage": {"input_tokens": 2, "output_tokens": 5,
                                                                     "total_tokens": 7}}}, named=True))
    assert r.tokens == 7


def test_a_stream_that_reports_nothing_has_no_tokens():
    reader = StreamUsage("openai")
    reader.feed(b"data: {not json with usage}\n\n: keep-alive\n\ndata: [DONE]\n\n")
    assert reader.tokens is None
