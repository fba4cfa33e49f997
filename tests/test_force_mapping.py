"""
force-mapping (models[] and oauth-model-alias): an answer passed through
from an upstream of the client's own format names the model as the client
asked for it (the alias), not the upstream's name, in whole answers and in
every stream event that names a model. Without it the upstream's answer
goes through byte for byte. (Translated answers always name the client's
model.)
"""

from __future__ import annotations

import json

import pytest

from cliproxyd.formats import claude, gemini, openai_chat, responses
from cliproxyd.formats.translate import ModelNamingConsumer
from tests.conftest import UPSTREAM, Harness, sse_payloads

BASE = UPSTREAM.removesuffix("/v1")


def compat() -> Harness:
    return Harness({"openai-compatibility": [{
        "name": "sim", "base-url": UPSTREAM, "prefix": "team", "api-key-entries": [{"api-key": "sk-up-1"}],
        "models": [{"name": "moonshot/kimi-k2", "alias": "kimi", "force-mapping": True},
                   {"name": "glm-5", "alias": "glm"}]}]})


def test_a_whole_openai_answer_names_the_alias_with_force_mapping_and_the_upstream_model_without():
    h = compat()
    code, _, body = h.chat("kimi")
    assert code == 200 and json.loads(body)["model"] == "kimi"
    assert h.upstream.seen[-1].model == "moonshot/kimi-k2"  # the upstream was still asked for its own name
    code, _, body = h.chat("team/kimi")
    assert json.loads(body)["model"] == "team/kimi"  # as the client asked
    code, _, body = h.chat("glm")
    assert json.loads(body)["model"] == "glm-5"


def test_every_chunk_of_an_openai_stream_names_the_alias_and_the_content_is_intact():
    h = compat()
    _, _, mapped = h.chat("kimi", stream=True)
    _, _, plain = h.chat("glm", stream=True)
    chunks = [c for c in sse_payloads(mapped) if isinstance(c, dict)]
    assert chunks and {c["model"] for c in chunks} == {"kimi"}
    assert {c["model"] for c in sse_payloads(plain) if isinstance(c, dict)} == {"glm-5"}
    def text(body):
        return "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in sse_payloads(body) if isinstance(c, dict) and c.get("choices"))

    assert text(mapped) == text(plain) != ""
    assert mapped.rstrip().endswith(b"data: [DONE]")


def claude_request(h: Harness, model: str, stream: bool = False) -> bytes:
    body = {"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    code, _, answer = h.request("POST", "/v1/messages", body, {"anthropic-version": "2023-06-01"})
    assert code == 200, answer
    return answer


def test_claude_answers_and_the_message_start_event_name_the_alias():
    h = Harness({"claude-api-key": [{"api-key": "sk-c", "base-url": BASE, "models": [
        {"name": "claude-sonnet-4-5", "alias": "sonnet", "force-mapping": True}]}]})
    assert json.loads(claude_request(h, "sonnet"))["model"] == "sonnet"
    events = [e for e in sse_payloads(claude_request(h, "sonnet", stream=True)) if isinstance(e, dict)]
    start = [e for e in events if e.get("type") == "message_start"]
    assert start and start[0]["message"]["model"] == "sonnet"
    assert "claude-sonnet-4-5" not in json.dumps(events)


def test_gemini_answers_name_the_alias_in_model_version():
    h = Harness({"gemini-api-key": [{"api-key": "g", "base-url": BASE, "models": [
        {"name": "gemini-2.5-flash", "alias": "flash", "force-mapping": True}]}]})
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    code, _, answer = h.request("POST", "/v1beta/models/flash:generateContent", body, {"x-goog-api-key": "x"})
    assert code == 200 and json.loads(answer)["modelVersion"] == "flash"
    code, _, answer = h.request("POST", "/v1beta/models/flash:streamGenerateContent?alt=sse", body,
                                {"x-goog-api-key": "x"})
    versions = {c.get("modelVersion") for c in sse_payloads(answer) if isinstance(c, dict)}
    assert code == 200 and versions == {"flash"}


def test_oauth_model_alias_force_mapping_renames_an_oauth_account_s_answers(tmp_path):
    auth = tmp_path / "auth"
    auth.mkdir()
    (auth / "a.json").write_text(json.dumps({"type": "claude", "access_token": "t", "refresh_token": "r",
                                             "expired": "2099-01-01T00:00:00Z", "base_url": BASE}))
    aliases = [{"name": "claude-sonnet-4-5", "alias": "sonnet", "force-mapping": True},
               {"name": "claude-haiku-4-5", "alias": "haiku"}]
    h = Harness({"auth-dir": str(auth), "oauth-model-alias": {"claude": aliases}})
    assert json.loads(claude_request(h, "sonnet"))["model"] == "sonnet"
    assert json.loads(claude_request(h, "haiku"))["model"] == "claude-haiku-4-5"


class Sink:
    def __init__(self):
        self.data = b""

    def write(self, data):
        self.data += data


def test_the_renaming_consumer_keeps_framing_comments_and_other_events_as_they_came():
    sink = Sink()
    c = ModelNamingConsumer(sink, openai_chat, "alias")
    stream = (b": keepalive\r\n\r\n"
              b"event: x\r\ndata: {\"model\":\"up\",\"n\":1}\r\n\r\n"
              b"data: [DONE]\n\n"
              b"data: not json\n\n"
              b"data: {\"model\":\"up\"}")
    for i in range(0, len(stream), 7):  # events split across writes anywhere
        c.write(stream[i:i + 7])
    assert sink.data == (b": keepalive\r\n\r\n"
                         b"event: x\r\ndata: {\"model\":\"alias\",\"n\":1}\r\n\r\n"
                         b"data: [DONE]\n\ndata: not json\n\n")
    c.flush()  # a stream cut before its blank line: the rest as it came
    assert sink.data.endswith(b"data: {\"model\":\"up\"}")


def test_the_renaming_consumer_touches_only_events_that_name_a_model():
    sink = Sink()
    c = ModelNamingConsumer(sink, claude, "alias")
    delta = b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"model"}}\n\n'
    c.write(delta)
    assert sink.data == delta


@pytest.mark.parametrize("fmt, data, where", [
    (openai_chat, {"model": "up", "choices": []}, ("model",)),
    (claude, {"type": "message", "model": "up"}, ("model",)),
    (claude, {"type": "message_start", "message": {"model": "up"}}, ("message", "model")),
    (responses, {"object": "response", "model": "up"}, ("model",)),
    (responses, {"type": "response.created", "response": {"model": "up"}}, ("response", "model")),
    (gemini, {"candidates": [], "modelVersion": "up"}, ("modelVersion",)),
])
def test_each_format_names_the_model_where_its_answers_and_events_do(fmt, data, where):
    assert fmt.name_answer_model(data, "alias") is True
    node = data
    for key in where:
        node = node[key]
    assert node == "alias"
    assert fmt.name_answer_model({"type": "ping"}, "alias") is False


def test_responses_answers_and_stream_events_name_the_alias():
    h = Harness({"codex-api-key": [{"api-key": "sk-x", "base-url": UPSTREAM, "models": [
        {"name": "gpt-5-codex", "alias": "coder", "force-mapping": True}]}]})
    body = {"model": "coder", "input": "hi"}
    code, _, answer = h.request("POST", "/v1/responses", body)
    assert code == 200 and json.loads(answer)["model"] == "coder"
    code, _, answer = h.request("POST", "/v1/responses", {**body, "stream": True})
    events = [e for e in sse_payloads(answer) if isinstance(e, dict)]
    named = [e["response"]["model"] for e in events if isinstance(e.get("response"), dict)]
    assert code == 200 and named and set(named) == {"coder"}
    assert "gpt-5-codex" not in answer.decode()
