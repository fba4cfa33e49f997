"""How the turns of a Responses websocket become requests (L{cliproxyd.formats.responses_turns}), no I/O."""

from __future__ import annotations

import pytest

from cliproxyd.formats.responses_turns import OutputCollector, TurnRefused, Turns


def user(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def said(text: str, item_id: str = "msg_1") -> dict:
    return {"type": "message", "id": item_id, "role": "assistant", "content": [{"type": "output_text", "text": text}]}


def call(call_id: str, item_id: str = "fc_1") -> dict:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": "weather", "arguments": "{}"}


def answered(turns: Turns, message: dict, output: list, rid: str) -> dict:
    body = turns.request(message)
    turns.completed(body, output, rid)
    return body


def test_a_first_create_is_the_request_streamed_without_its_type():
    body = Turns().request({"type": "response.create", "model": "m", "input": "hi", "instructions": "brief"})
    assert body == {"model": "m", "input": "hi", "instructions": "brief", "stream": True}
    assert Turns().request({"type": "response.create", "model": "m"})["input"] == []


def test_a_continuation_sends_the_whole_conversation_and_keeps_model_and_instructions():
    turns = Turns()
    answered(turns, {"type": "response.create", "model": "m", "input": "hi", "instructions": "brief",
                     "previous_response_id": None}, [said("hello")], "resp_1")
    body = turns.request({"type": "response.create", "previous_response_id": "resp_1", "input": [user("more")]})
    assert body["input"] == [user("hi"), said("hello"), user("more")]
    assert (body["model"], body["instructions"], body["stream"]) == ("m", "brief", True)
    assert "previous_response_id" not in body
    # An append adds input the same way.
    assert turns.request({"type": "response.append", "input": [user("more")]})["input"] == body["input"]


def test_a_continuation_may_name_another_model_and_its_own_instructions():
    turns = Turns()
    answered(turns, {"type": "response.create", "model": "m", "input": [user("hi")], "instructions": "a"},
             [said("hello")], "resp_1")
    body = turns.request({"type": "response.create", "model": "n", "instructions": "b", "input": [user("x")]})
    assert (body["model"], body["instructions"]) == ("n", "b")


def test_input_that_holds_the_models_own_items_replaces_the_kept_conversation():
    turns = Turns()
    answered(turns, {"type": "response.create", "model": "m", "input": [user("hi")]}, [said("hello")], "resp_1")
    transcript = [user("hi"), said("hello"), user("again"), call("c1"),
                  {"type": "function_call_output", "call_id": "c1", "output": "sunny"}]
    body = turns.request({"type": "response.create", "input": transcript})
    assert body["input"] == transcript


def test_a_merged_conversation_repeats_no_tool_call_and_no_item():
    turns = Turns()
    answered(turns, {"type": "response.create", "model": "m", "input": [user("weather?")]},
             [call("c1")], "resp_1")
    # The client sends the call back with its output, continuing resp_1 (merged, not replaced).
    body = turns.request({"type": "response.create", "previous_response_id": "resp_1", "input": [
        call("c1"), {"type": "function_call_output", "call_id": "c1", "output": "sunny"}]})
    assert body["input"] == [user("weather?"), call("c1"),
                             {"type": "function_call_output", "call_id": "c1", "output": "sunny"}]


@pytest.mark.parametrize("message, status, code", [
    ({"type": "response.create", "model": "m", "previous_response_id": "resp_x"}, 409, "previous_response_not_found"),
    ({"type": "response.append", "input": []}, 400, None),
    ({"type": "response.cancel"}, 400, None),
    ({"type": "response.create", "input": "no model"}, 400, None),
    ({"type": "response.create", "model": 3}, 400, None),
    ({"type": "response.create", "model": "m", "previous_response_id": 7}, 400, None),
])
def test_messages_that_are_not_sent(message, status, code):
    with pytest.raises(TurnRefused) as caught:
        Turns().request(message)
    assert (caught.value.status, caught.value.code) == (status, code)


def test_a_continuation_of_another_response_than_the_last_is_refused():
    turns = Turns()
    answered(turns, {"type": "response.create", "model": "m", "input": "hi"}, [said("hello")], "resp_1")
    with pytest.raises(TurnRefused) as caught:
        turns.request({"type": "response.create", "previous_response_id": "resp_0", "input": []})
    assert caught.value.code == "previous_response_not_found"
    with pytest.raises(TurnRefused):
        turns.request({"type": "response.create", "input": {"not": "a list"}})


def test_a_refused_or_unanswered_turn_leaves_the_kept_conversation_as_it_was():
    turns = Turns()
    answered(turns, {"type": "response.create", "model": "m", "input": "hi"}, [said("hello")], "resp_1")
    turns.request({"type": "response.create", "previous_response_id": "resp_1", "input": [user("lost")]})
    body = turns.request({"type": "response.create", "previous_response_id": "resp_1", "input": [user("again")]})
    assert body["input"] == [user("hi"), said("hello"), user("again")]


def test_the_collector_takes_the_completed_output_or_the_items_it_saw():
    seen = OutputCollector()
    seen.event({"type": "response.output_item.done", "output_index": 1, "item": call("c1")})
    seen.event({"type": "response.output_item.done", "output_index": 0, "item": said("x")})
    assert not seen.done
    seen.event({"type": "response.completed", "response": {"id": "resp_9", "output": []}})
    assert (seen.done, seen.response_id, seen.output) == (True, "resp_9", [said("x"), call("c1")])
    whole = OutputCollector()
    whole.event({"type": "response.completed", "response": {"id": "resp_8", "output": [said("y")]}})
    assert whole.output == [said("y")]
