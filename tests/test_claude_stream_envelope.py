"""The Claude stream's content_block_delta events, written from envelopes made once, are the bytes json.dumps writes."""

import json

import pytest

from cliproxyd.formats import canonical as C
from cliproxyd.formats.claude import StreamEncoder

TEXTS = ["hello", "", 'quote " backslash \\ newline \n tab \t', "é ü 日本 \u2028 \u0085 \x00 \x1f", "😀 \ud7ff"]


def _events(data: bytes) -> list[tuple[str, str]]:
    out = []
    for block in data.decode("ascii").split("\n\n"):
        if block:
            name, body = block.split("\n")
            out.append((name.removeprefix("event: "), body.removeprefix("data: ")))
    return out


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("event, kind, field", [(C.TextDelta, "text_delta", "text"),
                                                (C.ThinkingDelta, "thinking_delta", "thinking")])
def test_a_delta_event_is_what_json_dumps_writes(text, event, kind, field):
    encoder = StreamEncoder("m")
    encoder.feed(C.Start("msg_1", "m"))
    encoder.feed(event("first"))  # opens block 0
    encoder.feed(C.TextDelta("x") if event is C.ThinkingDelta else C.ThinkingDelta("x"))  # block 1
    encoder.feed(event("again"))  # block 2
    [(name, body)] = _events(encoder.feed(event(text)))
    assert name == "content_block_delta"
    assert body == json.dumps({"type": "content_block_delta", "index": 2, "delta": {"type": kind, field: text}})
    assert json.loads(body)["delta"][field] == text


def test_a_tool_arguments_delta_is_what_json_dumps_writes():
    encoder = StreamEncoder("m")
    encoder.feed(C.ToolCallStart(0, "call_1", "lookup"))
    arguments = '{"q": "ü \\n"}'
    [(name, body)] = _events(encoder.feed(C.ToolCallDelta(0, arguments)))
    assert name == "content_block_delta"
    assert body == json.dumps({"type": "content_block_delta", "index": 0,
                               "delta": {"type": "input_json_delta", "partial_json": arguments}})
