"""
The times and ids an encoder writes come from the L{Origin} it is given: with
a L{Clock} and a counter for ids, answers and streams are the same bytes
every time, carrying exactly the injected C{created} time and ids.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from twisted.internet.task import Clock

from cliproxyd.formats import DEFAULT_ORIGIN, FORMATS, Origin
from cliproxyd.formats import canonical as C
from cliproxyd.formats import gemini
from cliproxyd.formats.translate import SSEParser
from tests.test_formats_frontend import ask, matrix, payloads

T = 1_700_000_000


class Ids:
    """An id source that counts: C{id0001}, C{id0002}, ..."""

    def __init__(self) -> None:
        self.made = 0

    def __call__(self) -> str:
        self.made += 1
        return f"id{self.made:04d}"


def fixed(at: float = T) -> tuple[Origin, Clock, Ids]:
    clock, ids = Clock(), Ids()
    clock.advance(at)
    return Origin(now=clock.seconds, new_id=ids), clock, ids


ANSWER = C.Response("", "upstream-model", (C.Thinking("hm", "sig"), C.Text("Hello"),
                                            C.ToolCall("call_1", "get_weather", '{"city":"Oslo"}')),
                    C.TOOL_CALLS, C.Usage(10, 5))
EVENTS = [C.Start("", "upstream-model"), C.ThinkingDelta("hm"), C.TextDelta("Hel"), C.TextDelta("lo"),
          C.ToolCallStart(0, "call_1", "get_weather"), C.ToolCallDelta(0, '{"city":"Oslo"}'),
          C.Finish(C.TOOL_CALLS), C.UsageEvent(C.Usage(10, 5))]


def stream(name: str, origin: Origin, events: list[C.Event] = EVENTS) -> bytes:
    encoder = FORMATS[name].StreamEncoder("m", origin=origin)
    return b"".join(encoder.feed(e) for e in events) + encoder.close()


def test_the_default_origin_is_the_wall_clock_and_random_hex_ids():
    assert DEFAULT_ORIGIN.now is time.time
    first, second = DEFAULT_ORIGIN.new_id(), DEFAULT_ORIGIN.new_id()
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != second


# -- whole answers ---------------------------------------------------------------------


@pytest.mark.parametrize("name, created, made_id", [
    ("openai", ("created",), ("id", "chatcmpl-id0001")),
    ("claude", None, ("id", "msg_id0001")),
    ("gemini", None, ("responseId", "id0001")),
    ("responses", ("created_at",), ("id", "resp_id0001")),
])
def test_an_answer_carries_the_injected_time_and_ids(name, created, made_id):
    origin, _, ids = fixed()
    body = FORMATS[name].response_from_canonical(ANSWER, "m", origin=origin)
    if created:
        assert body[created[0]] == T
    assert body[made_id[0]] == made_id[1] and ids.made == 1


def test_the_items_of_a_responses_answer_take_their_ids_from_the_injected_one():
    origin, _, _ = fixed()
    body = FORMATS["responses"].response_from_canonical(ANSWER, "m", origin=origin)
    assert [item["id"] for item in body["output"]] == ["rs_id0001_0", "msg_id0001_1", "fc_id0001_2"]


@pytest.mark.parametrize("name, upstream_id, kept", [
    ("openai", "chatcmpl-up", "chatcmpl-up"), ("claude", "msg_up", "msg_up"),
    ("gemini", "up", "up"), ("responses", "resp_up", "resp_up"),
])
def test_an_upstream_id_is_kept_and_no_id_is_made(name, upstream_id, kept):
    origin, _, ids = fixed()
    body = FORMATS[name].response_from_canonical(C.Response(upstream_id, "m", (C.Text("hi"),)), "m", origin=origin)
    assert kept in (body.get("id"), body.get("responseId")) and ids.made == 0


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_the_same_origin_makes_the_same_answer(name):
    first = FORMATS[name].response_from_canonical(ANSWER, "m", origin=fixed()[0])
    again = FORMATS[name].response_from_canonical(ANSWER, "m", origin=fixed()[0])
    assert json.dumps(first) == json.dumps(again)


# -- streams ---------------------------------------------------------------------------


def test_every_chat_chunk_carries_the_time_the_encoder_was_built_and_the_made_id():
    origin, clock, ids = fixed()
    encoder = FORMATS["openai"].StreamEncoder("m", origin=origin)
    clock.advance(90)  # a stream that takes time still says when it was created
    raw = b"".join(encoder.feed(e) for e in EVENTS) + encoder.close()
    chunks = payloads(raw)
    assert len(chunks) > 5
    assert {(c["id"], c["created"]) for c in chunks} == {("chatcmpl-id0001", T)} and ids.made == 1


def test_a_claude_stream_names_the_made_message_id():
    origin, _, ids = fixed()
    start = [json.loads(p) for p in SSEParser().feed(stream("claude", origin))][0]
    assert start["type"] == "message_start" and start["message"]["id"] == "msg_id0001" and ids.made == 1


def test_a_responses_stream_carries_the_injected_time_and_ids_throughout():
    origin, clock, ids = fixed()
    encoder = FORMATS["responses"].StreamEncoder("m", origin=origin)
    clock.advance(90)
    events = payloads(b"".join(encoder.feed(e) for e in EVENTS) + encoder.close())
    responses = [e["response"] for e in events if "response" in e]
    assert [e["type"] for e in events if "response" in e] == ["response.created", "response.in_progress",
                                                             "response.completed"]
    assert {(r["id"], r["created_at"]) for r in responses} == {("resp_id0001", T)}
    items = {e["item"]["id"] for e in events if "item" in e}
    assert items == {"rs_id0001_0", "msg_id0001_1", "fc_id0001_2"} and ids.made == 1


def test_a_gemini_stream_makes_no_time_and_no_id():
    origin, _, ids = fixed()
    chunks = payloads(stream("gemini", origin))
    assert chunks and all("responseId" not in c and "createTime" not in c for c in chunks) and ids.made == 0


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_the_same_origin_makes_the_same_stream(name):
    assert stream(name, fixed()[0]) == stream(name, fixed()[0])


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_a_stream_with_an_upstream_id_makes_no_id(name):
    origin, _, ids = fixed()
    stream(name, origin, [C.Start("resp_msg_chatcmpl-up", "m"), *EVENTS[1:]])
    assert ids.made == 0


# -- Gemini's calls without ids ----------------------------------------------------------


GEMINI_CALL = {"candidates": [{"content": {"role": "model", "parts": [
    {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]}, "finishReason": "STOP"}]}


def test_gemini_calls_without_ids_take_them_from_the_origin():
    origin, _, _ = fixed()
    answer = gemini.response_to_canonical(GEMINI_CALL, origin=origin)
    assert [p.id for p in answer.parts] == ["call_id0001"]
    events = gemini.StreamDecoder(origin=origin).feed(GEMINI_CALL)
    assert [e.id for e in events if isinstance(e, C.ToolCallStart)] == ["call_id0002"]


def test_a_gemini_call_id_keeps_only_the_first_24_characters_of_a_made_one():
    origin = Origin(now=lambda: T, new_id=lambda: "a" * 32)
    assert gemini.response_to_canonical(GEMINI_CALL, origin=origin).parts[0].id == "call_" + "a" * 24


# -- the frontend gives its encoders its own clock ---------------------------------------


@pytest.mark.parametrize("client, model, key", [("openai", "via-claude", "created"),
                                                 ("responses", "via-openai", "created_at")])
def test_a_translated_answer_is_created_at_the_frontend_s_clock(client, model, key):
    h = matrix()
    h.clock.advance(T)
    code, _, raw = ask(h, client, model)
    assert code == 200, raw
    assert json.loads(raw)[key] == T


@pytest.mark.parametrize("client, model", [("openai", "via-claude"), ("responses", "via-gemini")])
def test_a_translated_stream_is_created_at_the_frontend_s_clock(client, model):
    h = matrix()
    h.clock.advance(T)
    code, _, raw = ask(h, client, model, stream=True)
    assert code == 200, raw
    created = {c.get("created", c.get("response", {}).get("created_at")) for c in payloads(raw)} - {None}
    assert created == {T}
