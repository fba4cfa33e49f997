"""
routing.session-affinity and session-affinity-ttl: the session sources in
CLIProxyAPI's order, and bindings that outrank priority, fail over, and
expire on the Clock (kept in the StateStore).
"""

from __future__ import annotations

import json

import pytest

from cliproxyd.conductor.session import message_hash_ids, session_ids
from cliproxyd.config import parse_config
from cliproxyd.config.load import ConfigError
from cliproxyd.state import MemoryStateStore
from tests.conftest import Harness, config_data


def headers(**named):
    table = {k.replace("_", "-").lower().encode(): v.encode() for k, v in named.items()}
    return table.get


NONE = headers()


# -- the sources ---------------------------------------------------------------------


def test_the_sources_in_order():
    claude_meta = {"metadata": {"user_id": json.dumps({"session_id": "cc-1", "device_id": "d"})}}
    body = {**claude_meta, "session_id": "body-1", "prompt_cache_key": "pck-1", "conversation": "conv-1",
            "messages": [{"role": "user", "content": "hi"}]}
    assert session_ids(headers(X_Claude_Code_Session_Id="cc-h"), body) == ("claude:cc-h",)
    assert session_ids(headers(Session_Id="codex-1"), body) == ("claude:cc-1",)  # Claude's metadata first
    del body["metadata"]
    assert session_ids(headers(Session_Id="codex-1", X_Session_Affinity="oc"), body) == ("codex:codex-1",)
    assert session_ids(lambda n: b"codex-2" if n == b"session_id" else None, body) == ("codex:codex-2",)
    assert session_ids(headers(X_Session_Id="x", X_Session_Affinity="oc"), body) == ("header:x",)
    assert session_ids(headers(X_Session_Affinity="oc", X_Client_Request_Id="pi"), body) == ("affinity:oc",)
    assert session_ids(headers(X_Client_Request_Id="pi"), body) == ("clientreq:pi",)
    assert session_ids(NONE, body) == ("session:body-1",)
    del body["session_id"]
    assert session_ids(NONE, {**body, "sessionId": 42}) == ("session:42",)
    assert session_ids(NONE, body) == ("pck:pck-1", "conv:conv-1")
    del body["prompt_cache_key"]
    assert session_ids(NONE, body) == ("conv:conv-1",)
    assert session_ids(NONE, {**body, "conversation": {"id": "conv-2"}}) == ("conv:conv-2",)
    del body["conversation"]
    assert session_ids(NONE, {**body, "metadata": {"user_id": "u-1"}}) == ("user:u-1",)
    assert session_ids(NONE, {**body, "conversation_id": "c-3"}) == ("conv:c-3",)
    assert session_ids(NONE, body) == message_hash_ids(body) != ()
    assert session_ids(NONE, {"model": "m"}) == ()


def test_claude_codes_older_user_id_form():
    user_id = "user_abc_account__session_0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
    assert session_ids(NONE, {"metadata": {"user_id": user_id}}) == (
        "claude:0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",)


def test_unusable_explicit_ids_are_skipped():
    assert session_ids(headers(X_Session_Id="a\x01b"), {"session_id": "x" * 257, "conversation_id": "ok"}) == (
        "conv:ok",)
    assert session_ids(headers(X_Session_Id="  "), {"session_id": True, "conversation_id": " ok "}) == ("conv:ok",)


def test_the_message_hash_is_of_the_opening_and_keeps_the_first_turns_id():
    first = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]}
    (short,) = message_hash_ids(first)
    assert short.startswith("msg:") and len(short) == 4 + 16
    assert message_hash_ids({"messages": [{"role": "system", "content": "be terse"}, first["messages"][1]]}) != (short,)
    # Only the first 100 bytes of each part count.
    long = {"messages": [{"role": "user", "content": "x" * 100 + "tail one"}]}
    assert message_hash_ids(long) == message_hash_ids({"messages": [{"role": "user", "content": "x" * 100 + "two"}]})
    later = {"messages": first["messages"] + [{"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
                                              {"role": "user", "content": "more"}]}
    full, again = message_hash_ids(later)
    assert again == short and full != short


def test_the_message_hash_reads_every_format():
    claude = {"system": [{"type": "text", "text": "sys"}], "messages": [{"role": "user", "content": "q"}]}
    chat = {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"}]}
    gemini = {"systemInstruction": {"parts": [{"text": "sys"}]}, "contents": [{"role": "user", "parts": [{"text": "q"}]}]}
    responses = {"instructions": "sys", "input": [{"type": "reasoning"}, {"role": "user", "content": [
        {"type": "input_text", "text": "q"}]}]}
    ids = {message_hash_ids(b) for b in (claude, chat, gemini, responses)}
    assert len(ids) == 1 and () not in ids


# -- bindings --------------------------------------------------------------------------


def affinity(keys=("a", "b"), **routing):
    return config_data(keys=keys, routing={"session-affinity": True, **routing})


def chat_in(h, session):
    return h.chat(headers={"X-Session-Affinity": session})


def test_sessions_stay_on_their_credential_while_others_rotate():
    h = Harness(affinity(keys=("a", "b", "c")))
    for s in ("s1", "s2", "s3", "s1", "s2", "s3", "s1"):
        chat_in(h, s)
    assert h.keys_seen() == ["a", "b", "c", "a", "b", "c", "a"]


def test_off_by_default():
    h = Harness(config_data(keys=("a", "b")))
    chat_in(h, "s"), chat_in(h, "s")
    assert h.keys_seen() == ["a", "b"]


def test_a_binding_expires_after_the_ttl_without_use_and_each_use_extends_it():
    h = Harness(affinity(**{"session-affinity-ttl": "10m"}))
    chat_in(h, "s")  # s -> a
    chat_in(h, "t")  # t -> b
    for _ in range(3):
        h.clock.advance(599)
        chat_in(h, "s")  # still a: each answer keeps it ten more minutes
    assert h.keys_seen() == ["a", "b", "a", "a", "a"]
    h.clock.advance(600)
    chat_in(h, "u")  # the cursor: a
    chat_in(h, "s")  # expired: picked afresh (b), and bound there
    chat_in(h, "s")
    assert h.keys_seen()[-3:] == ["a", "b", "b"]


def test_an_established_binding_outranks_a_credential_that_recovers_at_a_higher_priority():
    data = affinity(keys=("low",))
    high = dict(data["openai-compatibility"][0], name="high", priority=5, **{"api-key-entries": [{"api-key": "hi"}]})
    data["openai-compatibility"].append(high)
    h = Harness(data)
    h.upstream.script("hi", "status:503", "ok")
    chat_in(h, "s")  # hi fails and cools, low answers: s -> low
    h.clock.advance(60)
    chat_in(h, "s")
    chat_in(h, "fresh")  # a new session goes by priority
    assert h.keys_seen() == ["hi", "low", "low", "hi"]


def test_a_failed_binding_is_dropped_and_the_session_moves():
    h = Harness(affinity())
    chat_in(h, "s")  # a
    h.upstream.script("a", "status:500", "ok")
    chat_in(h, "s")  # a fails; b answers and s is bound to b
    h.clock.advance(60)
    chat_in(h, "s")
    assert h.keys_seen() == ["a", "a", "b", "b"]


def test_a_second_id_keeps_the_binding_when_a_stronger_one_appears():
    h = Harness(affinity(keys=("a", "b", "c")))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    h.request("POST", "/v1/chat/completions", {**body, "conversation": "c-1"})  # conv:c-1 -> a
    h.request("POST", "/v1/chat/completions", {**body, "conversation_id": "other"})  # -> b
    h.request("POST", "/v1/chat/completions", {**body, "prompt_cache_key": "k", "conversation": "c-1"})
    h.request("POST", "/v1/chat/completions", {**body, "prompt_cache_key": "k"})
    assert h.keys_seen() == ["a", "b", "a", "a"]


def test_a_conversations_later_turns_keep_its_first_turns_credential():
    h = Harness(affinity(keys=("a", "b", "c")))
    opening = [{"role": "user", "content": "plan a trip"}]
    h.chat(messages=opening)  # hashed opening -> a
    h.chat(messages=[{"role": "user", "content": "something else"}])  # -> b
    h.chat(messages=opening + [{"role": "assistant", "content": "where to?"}, {"role": "user", "content": "Oslo"}])
    assert h.keys_seen() == ["a", "b", "a"]


def test_bindings_live_in_the_state_store_and_survive_a_restart_until_they_expire():
    h = Harness(affinity())
    chat_in(h, "t")  # t -> a
    chat_in(h, "s")  # s -> b
    snapshot = h.state.snapshot(h.clock.seconds())
    restored = MemoryStateStore()
    assert restored.restore(snapshot, h.clock.seconds()) == []
    assert restored.session("gpt-4o-mini|affinity:s", h.clock.seconds()) == h.creds[1].id
    late = MemoryStateStore()
    late.restore(snapshot, h.clock.seconds() + 3601)
    assert late.session("gpt-4o-mini|affinity:s", h.clock.seconds() + 3601) is None


def test_session_affinity_ttl_is_validated_at_load():
    assert parse_config({"routing": {"session-affinity-ttl": "2h30m"}})[0].routing.session_affinity_ttl == 9000
    assert parse_config({"routing": {"session-affinity-ttl": 90}})[0].routing.session_affinity_ttl == 90
    assert parse_config({})[0].routing.session_affinity_ttl == 3600
    for bad in ("1 hour", "0s", -5, True):
        with pytest.raises(ConfigError, match="routing.session-affinity-ttl: must be"):
            parse_config({"routing": {"session-affinity-ttl": bad}})


def test_a_session_whose_request_failed_everywhere_is_picked_afresh_next_time():
    h = Harness(affinity())
    chat_in(h, "s")  # s -> a
    h.upstream.script("a", "status:500", "ok")
    h.upstream.script("b", "status:500", "ok")
    assert chat_in(h, "s")[0] == 500  # a, then b: both fail, and s is bound to neither
    h.clock.advance(60)
    chat_in(h, "t")  # the cursor: a
    chat_in(h, "s")  # the usual pick: b (a kept binding would have sent it to a)
    assert h.keys_seen() == ["a", "a", "b", "a", "b"]


def test_a_request_refused_as_invalid_or_by_a_stop_rule_keeps_the_binding():
    data = affinity(keys=("key-a", "key-b", "key-c"))  # keys scrubbed from bodies must not be words of them
    data["openai-compatibility"][0]["request-scoped-errors"] = [
        {"status": 409, "match": ["simulated"], "action": "stop"}]
    h = Harness(data)
    chat_in(h, "s")  # s -> a
    h.upstream.script("key-a", "status:422", "status:409", "ok")
    assert chat_in(h, "s")[0] == 422  # the request's own fault: answered at once
    assert chat_in(h, "s")[0] == 409  # a stop rule
    chat_in(h, "t")  # the cursor: b
    chat_in(h, "s")  # still a (picked afresh it would be c)
    assert h.keys_seen() == ["key-a", "key-a", "key-a", "key-b", "key-a"]


def test_a_websocket_connection_is_a_session_after_the_explicit_ids_and_before_the_message_hash():
    body = {"model": "m", "input": [{"role": "user", "content": "hi"}]}
    assert session_ids(lambda name: None, body, "c0ffee") == ("execution:c0ffee",)
    assert session_ids(lambda name: None, body)[0].startswith("msg:")
    assert session_ids(lambda name: b"s-1" if name == b"session_id" else None, body, "c0ffee") == ("codex:s-1",)
    assert session_ids(lambda name: None, {**body, "prompt_cache_key": "k"}, "c0ffee") == ("pck:k",)
