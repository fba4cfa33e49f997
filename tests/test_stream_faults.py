"""
Upstream faults inside a 200, in memory, for every upstream format and the
clients of every format: a stream that opens with an error (or with an error
after its opening events, or with nothing but keep-alives), a stream that
ends before its final event, a whole answer whose body is no JSON object.

Two keys serve each model, the first one tried first (fill-first): a fault
before anything reached the client moves on to the second key, and the
client never sees it; a fault after content reached the client is the
client format's in-stream error, never a made-up stop.
"""

from __future__ import annotations

import json

import pytest

from cliproxyd.conductor.policy import PROTOCOL_COOLDOWN, TRANSIENT_COOLDOWN
from cliproxyd.formats.translate import SSEParser
from tests.conftest import Harness
from tests.test_formats_frontend import ASK, HOST

#: model -> (upstream format, its two keys)
MODELS = {"via-openai": ("openai", "sk-o1", "sk-o2"), "via-claude": ("claude", "sk-c1", "sk-c2"),
          "via-gemini": ("gemini", "sk-g1", "sk-g2"), "via-codex": ("responses", "sk-x1", "sk-x2")}
#: upstream format -> its model
VIA = {fmt: model for model, (fmt, _, _) in MODELS.items()}
CLIENTS = list(ASK)


def fault_config(base: str) -> dict:
    """A config (as data) of the four upstream formats at C{base}, two keys each, the first one tried first."""
    def entries(model, name, url):
        return [{"api-key": k, "base-url": url, "models": [{"name": name, "alias": model}]} for k in MODELS[model][1:]]

    return {
        "openai-compatibility": [{"name": "sim", "base-url": base + "/v1",
                                  "api-key-entries": [{"api-key": k} for k in MODELS["via-openai"][1:]],
                                  "models": [{"name": "sim-small", "alias": "via-openai"}]}],
        "claude-api-key": entries("via-claude", "claude-sim", base),
        "gemini-api-key": entries("via-gemini", "gemini-2.5-sim", base),
        "codex-api-key": entries("via-codex", "codex-sim", base + "/v1"),
        "routing": {"strategy": "fill-first"},
    }


def faults(**top) -> Harness:
    return Harness({**fault_config(HOST), **top})


def every_key_fails(model: str, behaviour: str, client: str, stream: bool):
    """What C{client} gets when every key of C{model} answers with C{behaviour}."""
    h = faults()
    for key in MODELS[model][1:]:
        h.upstream.script(key, behaviour)
    return ask(h, client, model, stream=stream)


def ask(h: Harness, client: str, model: str, stream: bool, advance: float = 0):
    path, build = ASK[client]
    body = build(model)
    if client == "gemini":
        path = f"/v1beta/models/{model}:" + ("streamGenerateContent?alt=sse" if stream else "generateContent")
    elif stream:
        body["stream"] = True
    return h.request("POST", path, body, advance=advance)


def cred(h: Harness, key: str):
    return next(c for c in h.creds if c.api_key == key)


def state(h: Harness, key: str, model: str):
    return h.state.model_state(cred(h, key).id, model)


def events(raw: bytes) -> list[tuple[bytes, object]]:
    """C{(event name, payload)} of an SSE body (C{[DONE]} as the string)."""
    return [(name, "[DONE]" if data == b"[DONE]" else json.loads(data)) for name, data in
            SSEParser().feed_events(raw)]


def text_of(client: str, raw: bytes) -> str:
    """The text a streamed answer carries, in the client's format."""
    out = []
    for name, data in events(raw):
        if data == "[DONE]":
            continue
        if client == "openai":
            out += [c["delta"].get("content") or "" for c in data.get("choices", [])]
        elif client == "claude" and data.get("type") == "content_block_delta":
            out.append(data["delta"].get("text", ""))
        elif client == "responses" and data.get("type") == "response.output_text.delta":
            out.append(data["delta"])
        elif client == "gemini":
            out += [p.get("text", "") for c in data.get("candidates", []) for p in c["content"]["parts"]]
    return "".join(out)


def is_error(client: str, data: object) -> bool:
    if not isinstance(data, dict):
        return False
    return data.get("type") in ("error", "response.failed") or "error" in data


def is_stop(client: str, data: object) -> bool:
    """Whether an event is the client format's clean end."""
    if client == "openai":
        return data == "[DONE]" or any(c.get("finish_reason") for c in data.get("choices", []))
    if client == "claude":
        return data.get("type") in ("message_stop", "message_delta")
    if client == "responses":
        return data.get("type") in ("response.completed", "response.incomplete")
    return any(c.get("finishReason") for c in data.get("candidates", []))


def assert_second_key_answered(h: Harness, client: str, model: str, raw: bytes) -> None:
    _, first, second = MODELS[model]
    assert [s.key for s in h.upstream.seen] == [first, second], raw
    assert text_of(client, raw).endswith(f"(key ...{second[-6:]})."), raw
    assert not any(is_error(client, data) for _, data in events(raw)), raw
    assert not any(word in raw for word in (b"in-stream error", b"overload", b"quota", b"rate limit", b"failure"))


# -- a stream that fails before its first content moves on ------------------------------


BEFORE_CONTENT = [(model, behaviour) for model in MODELS for behaviour in (
    "error-first", "preamble-error", "overloaded", "end-early:0", "garbage:html",
    # a stream of its opening events only (Gemini's first event is content)
    *(("end-early:1", "end-early:1:close") if model != "via-gemini" else ()))]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("model, behaviour", BEFORE_CONTENT)
def test_a_stream_that_fails_before_any_content_moves_on_unseen(model, client, behaviour):
    """
    Error events (first, or after the opening events), an empty stream, a
    stream of its opening events only, an HTML answer.
    """
    h = faults()
    h.upstream.script(MODELS[model][1], behaviour)
    code, _, raw = ask(h, client, model, stream=True)
    assert code == 200, raw
    assert_second_key_answered(h, client, model, raw)
    opening = {"claude": "message_start", "responses": "response.created"}.get(client)
    if opening:  # the failed attempt's opening events were never relayed
        assert [data.get("type") for _, data in events(raw)].count(opening) == 1


#: error-first:SHAPE -> the status the error stands for, and its retry hint
SHAPES = {"openai": (500, None), "openai-spaced": (429, None), "claude": (529, None),
          "responses": (429, None), "responses-failed": (500, None), "gemini": (429, 7.0),
          "gemini-array": (429, 7.0)}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("model", list(MODELS))
def test_an_error_first_event_of_any_shape_moves_on_cooled_by_what_it_says(model, shape):
    """Whitespace in the object, Claude's event: error, Responses' error and response.failed, Gemini's array."""
    h = faults()
    first = MODELS[model][1]
    h.upstream.script(first, f"error-first:{shape}", "ok")
    fmt = MODELS[model][0]
    code, _, raw = ask(h, fmt, model, stream=True)
    assert code == 200
    assert_second_key_answered(h, fmt, model, raw)
    status, hint = SHAPES[shape]
    cooled = state(h, first, model)
    assert cooled.last_status == status
    now = h.clock.seconds()
    if hint is not None:
        assert cooled.next_retry_at == now + hint
    elif status == 429:
        assert cooled.quota_exceeded and cooled.next_retry_at == now + 1  # the first backoff step
    else:
        assert cooled.next_retry_at == now + TRANSIENT_COOLDOWN


@pytest.mark.parametrize("model", list(MODELS))
def test_an_overloaded_stream_cools_its_key_like_an_overloaded_answer(model):
    h = faults()
    first = MODELS[model][1]
    h.upstream.script(first, "overloaded")
    assert ask(h, MODELS[model][0], model, stream=True)[0] == 200
    stream_state = state(h, first, model)
    h2 = faults()
    h2.upstream.script(first, "overloaded")
    assert ask(h2, MODELS[model][0], model, stream=False)[0] == 200
    whole_state = state(h2, first, model)
    assert stream_state.last_status == whole_state.last_status in (503, 529)
    assert stream_state.next_retry_at == whole_state.next_retry_at == h.clock.seconds() + TRANSIENT_COOLDOWN


@pytest.mark.parametrize("client", CLIENTS)
def test_an_error_first_stream_with_no_other_key_is_the_upstreams_error(client):
    """Nothing was sent: the client gets the error as an answer, with the status its type stands for."""
    code, headers, raw = every_key_fails("via-gemini", "error-first:gemini", client, stream=True)
    assert code == 429
    assert headers.getRawHeaders("retry-after") == ["7"]
    assert b"simulated quota exhausted" in raw


def test_a_stream_of_keep_alives_only_moves_on_after_the_idle_timeout():
    """Pings are no content: the wait for the first generated event is bounded by stream-idle-seconds."""
    h = faults(timeouts={"stream-idle-seconds": 15})
    h.upstream.script("sk-c1", "keepalive:2")
    code, _, raw = ask(h, "claude", "via-claude", stream=True, advance=1)
    assert code == 200
    assert_second_key_answered(h, "claude", "via-claude", raw)
    assert 15 <= h.clock.seconds() < 17
    assert h.upstream.seen[0].disconnected
    assert raw.count(b"event: ping") <= 1  # the second key's own, if any; none of the first key's


def test_events_before_the_first_content_keep_a_slow_stream_alive():
    """Opening events are activity (only keep-alives are not): a slow, steady start is no idle one."""
    h = faults(timeouts={"stream-idle-seconds": 15})
    h.upstream.script("sk-x1", "slow:10")
    code, _, raw = ask(h, "responses", "via-codex", stream=True, advance=1)
    assert code == 200
    assert [s.key for s in h.upstream.seen] == ["sk-x1"]
    assert events(raw)[-1][1]["type"] == "response.completed"


# -- a stream that fails after content reached the client ------------------------------------


@pytest.mark.parametrize("behaviour, said", [("end-early:3", "ended before its final event"),
                                             ("end-early:3:close", "ended before its final event"),
                                             ("cut:3", "broke off")])
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("model", list(MODELS))
def test_a_stream_that_ends_before_its_final_event_is_an_error_never_a_stop(model, client, behaviour, said):
    h = faults()
    first = MODELS[model][1]
    h.upstream.script(first, behaviour)
    code, _, raw = ask(h, client, model, stream=True)
    assert code == 200
    assert [s.key for s in h.upstream.seen] == [first]  # content reached the client: no failover
    got = [data for _, data in events(raw)]
    assert text_of(client, raw)  # the partial text came through
    assert is_error(client, got[-1]), raw
    assert said in json.dumps(got[-1])
    assert not any(is_stop(client, data) for data in got if not is_error(client, data)), raw
    # A failure of that credential, cooled only briefly: a protocol fault.
    stats = h.state.stats(cred(h, first).id)
    assert (stats.failures, stats.successes) == (1, 0)
    cooled = state(h, first, model)
    assert cooled.reason == "protocol"
    assert cooled.next_retry_at == h.clock.seconds() + PROTOCOL_COOLDOWN


def test_protocol_faults_on_every_key_lock_the_model_out_for_seconds_only():
    h = faults()
    for key in MODELS["via-openai"][1:]:
        h.upstream.script(key, "end-early:3", "ok")
    ask(h, "openai", "via-openai", stream=True)
    h.clock.advance(1)
    h.upstream.seen.clear()
    ask(h, "openai", "via-openai", stream=True)  # the first key cools: the second one ends early too
    assert [s.key for s in h.upstream.seen] == ["sk-o2"]
    code, _, _ = ask(h, "openai", "via-openai", stream=True)
    assert code == 429  # both cooling, for seconds
    h.clock.advance(PROTOCOL_COOLDOWN)
    code, _, raw = ask(h, "openai", "via-openai", stream=True)
    assert code == 200 and events(raw)[-1][1] == "[DONE]"


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("model", list(MODELS))
def test_the_upstreams_error_after_content_reaches_the_client_once(model, client):
    h = faults()
    first = MODELS[model][1]
    h.upstream.script(first, "error-after:3")
    code, _, raw = ask(h, client, model, stream=True)
    assert code == 200
    got = [data for _, data in events(raw)]
    assert [is_error(client, data) for data in got].count(True) == 1, raw
    assert is_error(client, got[-1]) and "simulated error after content" in json.dumps(got[-1])
    assert state(h, first, model).last_status == 500  # the error's own status, not a protocol fault


def test_a_complete_stream_is_a_success():
    h = faults()
    for model, (fmt, first, _) in MODELS.items():
        code, _, raw = ask(h, fmt, model, stream=True)
        assert code == 200 and not any(is_error(fmt, d) for _, d in events(raw))
        stats = h.state.stats(cred(h, first).id)
        assert (stats.failures, stats.successes) == (0, 1), model


# -- a whole answer whose body is unusable ----------------------------------------------------


@pytest.mark.parametrize("kind", ["truncated", "empty", "html"])
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("model", list(MODELS))
def test_a_200_whose_body_is_no_json_object_moves_on(model, client, kind):
    h = faults()
    first, second = MODELS[model][1:]
    h.upstream.script(first, f"garbage:{kind}")
    code, _, raw = ask(h, client, model, stream=False)
    assert code == 200, raw
    assert [s.key for s in h.upstream.seen] == [first, second]
    assert f"(key ...{second[-6:]}).".encode() in raw
    cooled = state(h, first, model)
    assert cooled.reason == "protocol" and cooled.last_status == 502


@pytest.mark.parametrize("client", CLIENTS)
def test_when_every_key_answers_garbage_the_client_gets_a_502_in_its_format(client):
    code, _, raw = every_key_fails("via-openai", "garbage:truncated", client, stream=False)
    assert code == 502
    body = json.loads(raw)
    assert "not a JSON object" in json.dumps(body)
    if client == "claude":
        assert body["type"] == "error"


def test_an_error_object_inside_a_200_moves_on_with_its_status():
    h = faults()
    h.upstream.script("sk-g1", "error-first:gemini-array", "ok")  # streamed or not: the array is the body
    code, _, raw = ask(h, "openai", "via-gemini", stream=False)
    assert code == 200 and b"(key ...sk-g2)." in raw
    assert state(h, "sk-g1", "via-gemini").next_retry_at == h.clock.seconds() + 7
