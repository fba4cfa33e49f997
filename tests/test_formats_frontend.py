"""
The four client formats against the four upstream formats, in memory: what
goes upstream (passthrough or translation), what comes back, and how every
kind of failure looks to each client.
"""

from __future__ import annotations

import json

import pytest

from cliproxyd.formats.translate import SSEParser
from tests.conftest import Harness

HOST = "http://upstream.test"

#: client format -> (path, body builder, how to read an error's message)
ASK = {
    "openai": ("/v1/chat/completions", lambda model, **kw: {
        "model": model, "messages": [{"role": "user", "content": "hi"}], **kw}),
    "responses": ("/v1/responses", lambda model, **kw: {"model": model, "input": "hi", **kw}),
    "claude": ("/v1/messages", lambda model, **kw: {
        "model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], **kw}),
    "gemini": (None, lambda model, **kw: {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], **kw}),
}
UPSTREAMS = {"via-openai": "openai", "via-claude": "claude", "via-gemini": "gemini", "via-codex": "responses"}


def matrix(**top) -> Harness:
    return Harness({
        "openai-compatibility": [{"name": "sim", "base-url": HOST + "/v1", "api-key-entries": [{"api-key": "sk-o"}],
                                  "models": [{"name": "sim-small", "alias": "via-openai"}]}],
        "claude-api-key": [{"api-key": "sk-c", "base-url": HOST, "models": [{"name": "claude-sim", "alias": "via-claude"}]}],
        "gemini-api-key": [{"api-key": "sk-g", "base-url": HOST,
                            "models": [{"name": "gemini-2.5-sim", "alias": "via-gemini"}]}],
        "codex-api-key": [{"api-key": "sk-x", "base-url": HOST + "/v1", "models": [{"name": "codex-sim", "alias": "via-codex"}]}],
        **top,
    })


def ask(h: Harness, client: str, model: str, stream: bool = False, headers=None, **kw):
    path, build = ASK[client]
    body = build(model, **kw)
    if client == "gemini":
        path = f"/v1beta/models/{model}:" + ("streamGenerateContent?alt=sse" if stream else "generateContent")
    elif stream:
        body["stream"] = True
    return h.request("POST", path, body, headers)


def error_of(client: str, raw: bytes) -> dict:
    data = json.loads(raw)
    if client == "claude":
        assert data["type"] == "error"
    return data["error"]


def payloads(raw: bytes) -> list:
    return [json.loads(p) for p in SSEParser().feed(raw) if p != b"[DONE]"]


# -- passthrough ----------------------------------------------------------------------------


@pytest.mark.parametrize("client, model", [("openai", "via-openai"), ("claude", "via-claude"),
                                           ("gemini", "via-gemini"), ("responses", "via-codex")])
def test_same_format_bodies_pass_through_with_only_the_model_renamed(client, model):
    """Fields no translation carries (metadata, vendor extensions) reach a same-format upstream."""
    h = matrix()
    code, _, raw = ask(h, client, model, x_vendor_extension={"keep": [1, "two"]})
    assert code == 200, raw
    seen = h.upstream.seen[-1]
    assert seen.format == client
    assert seen.body["x_vendor_extension"] == {"keep": [1, "two"]}
    if client != "gemini":
        assert seen.body["model"] == seen.model != model  # the alias became the upstream name


@pytest.mark.parametrize("client, model", [("openai", "via-claude"), ("claude", "via-gemini"),
                                           ("gemini", "via-codex"), ("responses", "via-openai")])
def test_across_formats_only_what_the_target_speaks_goes_up(client, model):
    h = matrix()
    code, _, raw = ask(h, client, model, x_vendor_extension=1)
    assert code == 200, raw
    seen = h.upstream.seen[-1]
    assert seen.format == UPSTREAMS[model] and "x_vendor_extension" not in seen.body


def test_a_same_format_answer_comes_back_byte_for_byte():
    h = matrix()
    _, _, raw = ask(h, "claude", "via-claude")
    # The simulated upstream names the upstream model; a translated answer
    # would name the model the client asked for.
    assert json.loads(raw)["model"] == "claude-sim"
    _, _, raw = ask(h, "claude", "via-openai")
    assert json.loads(raw)["model"] == "via-openai"


@pytest.mark.parametrize("client, model, check", [
    ("openai", "via-claude(high)", lambda b: b["thinking"] == {"type": "enabled", "budget_tokens": 24576}),
    ("claude", "via-codex(low)", lambda b: b["reasoning"]["effort"] == "low"),
    ("claude", "via-gemini(2048)", lambda b: b["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 2048),
    ("openai", "via-openai(none)", lambda b: b["reasoning_effort"] == "none"),
    ("claude", "via-claude(8192)", lambda b: b["thinking"]["budget_tokens"] == 8192),
    ("gemini", "via-gemini(high)", lambda b: b["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 24576),
])
def test_the_thinking_suffix_becomes_the_targets_own_field(client, model, check):
    h = matrix()
    code, _, raw = ask(h, client, model)
    assert code == 200, raw
    assert check(h.upstream.seen[-1].body), h.upstream.seen[-1].body


# -- streams and their failures ------------------------------------------------------------


@pytest.mark.parametrize("client", ["openai", "claude", "gemini", "responses"])
@pytest.mark.parametrize("model", ["via-openai", "via-claude"])
def test_a_stream_cut_after_its_first_bytes_ends_with_the_clients_own_error(client, model):
    h = matrix()
    h.upstream.script({"via-openai": "sk-o", "via-claude": "sk-c"}[model], "cut:3")
    code, headers, raw = ask(h, client, model, stream=True)
    assert code == 200
    last = payloads(raw)[-1]
    if client == "openai":
        assert set(last) == {"error"} and last["error"]["type"] == "server_error"
        assert b"[DONE]" not in raw
    elif client == "claude":
        assert last["type"] == "error" and raw.rstrip().split(b"\n")[-2] == b"event: error"
    elif client == "responses":
        assert last["type"] == "error" and "message" in last
    else:
        assert last["error"]["status"] == "INTERNAL" and last["error"]["code"] == 500


def test_gemini_streams_as_a_json_array_without_alt_sse():
    h = matrix()
    for model in ("via-gemini", "via-openai"):
        code, headers, raw = h.request("POST", f"/v1beta/models/{model}:streamGenerateContent",
                                       ASK["gemini"][1](model))
        assert code == 200 and headers.getRawHeaders(b"content-type") == [b"application/json"]
        chunks = json.loads(raw)
        text = "".join(p.get("text", "") for c in chunks for p in c["candidates"][0]["content"]["parts"])
        assert text.startswith("Hello from the simulated upstream")
        assert chunks[-1]["candidates"][0]["finishReason"] == "STOP" and chunks[-1]["usageMetadata"]


# -- errors in each client's shape ----------------------------------------------------------


@pytest.mark.parametrize("client", ["openai", "claude", "gemini", "responses"])
def test_malformed_bodies_are_400s_in_the_clients_shape_and_never_go_up(client):
    """
    Bad JSON, a missing model, top-level fields of the wrong type: 400 at the
    door. Deeper wrong types: 400 when the body is translated, before it is
    sent (a same-format upstream gets the body as it is and judges it).
    """
    h = matrix()
    path = ASK[client][0] or "/v1beta/models/via-openai:generateContent"
    bad_types = {
        "openai": {"model": "via-claude", "messages": [{"role": "user", "content": 5}]},
        "claude": {"model": "via-openai", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
        "gemini": {"contents": [{"role": "user", "parts": "hi"}]},
        "responses": {"model": "via-openai", "input": [{"type": "message", "role": "user", "content": 7}]},
    }[client]
    cases = [b"{not json", bad_types, [1, 2]]
    if client != "gemini":  # Gemini's model and stream flag are in its URL
        cases.append(ASK[client][1]("via-openai", stream="yes"))
        cases.append({k: v for k, v in ASK[client][1]("x").items() if k != "model"})
        cases.append(ASK[client][1]("via-openai", messages="hi", input=5))
    for body in cases:
        code, _, raw = h.request("POST", path, body)
        assert code == 400, (body, raw)
        err = error_of(client, raw)
        assert "Invalid request" in err["message"]
        if client == "gemini":
            assert err["status"] == "INVALID_ARGUMENT"
        elif client == "claude":
            assert err["type"] == "invalid_request_error"
        else:
            assert err["type"] == "invalid_request_error"
    assert h.upstream.seen == type(h.upstream.seen)()


@pytest.mark.parametrize("client", ["openai", "claude", "gemini", "responses"])
def test_a_body_over_max_body_mb_is_a_413_in_the_clients_shape(client):
    h = matrix(**{"max-body-mb": 1})
    path = ASK[client][0] or "/v1beta/models/via-openai:generateContent"
    big = ASK[client][1]("via-openai", padding="x" * (10 << 20))
    code, _, raw = h.request("POST", path, big)
    assert code == 413
    assert "max-body-mb" in error_of(client, raw)["message"]
    assert len(h.upstream.seen) == 0
    assert ask(h, client, "via-openai")[0] == 200  # a body under the limit still goes through


@pytest.mark.parametrize("client", ["openai", "claude", "gemini", "responses"])
def test_when_every_credential_is_rate_limited_the_client_gets_its_own_429(client):
    h = matrix()
    h.upstream.script("sk-c", "status:429:30")
    code, headers, raw = ask(h, client, "via-claude")
    assert code == 429 and headers.getRawHeaders(b"retry-after") == [b"30"]
    err = error_of(client, raw)
    if client == "gemini":
        assert (err["code"], err["status"]) == (429, "RESOURCE_EXHAUSTED")
    elif client == "claude":
        # Claude's own error body, passed on to a Claude client as it is.
        assert err["type"] == "rate_limit_error" and err["message"] == "simulated failure 429"
    else:
        assert err["type"] == "rate_limit_error"


def test_unknown_gemini_methods_and_models_are_404s_in_geminis_shape():
    h = matrix()
    code, _, raw = h.request("POST", "/v1beta/models/via-gemini:embedContent", {"content": {}})
    assert code == 404 and json.loads(raw)["error"]["status"] == "NOT_FOUND"
    code, _, raw = h.request("GET", "/v1beta/models/no-such-model")
    assert code == 404 and json.loads(raw)["error"]["status"] == "NOT_FOUND"
    code, _, raw = ask(h, "gemini", "no-such-model")
    assert code == 404 and json.loads(raw)["error"]["code"] == 404
    code, _, raw = h.request("GET", "/v1beta/nothing-here")
    assert code == 404 and json.loads(raw)["error"]["status"] == "NOT_FOUND"


def test_model_lists_in_each_clients_shape():
    h = matrix()
    openai = json.loads(h.request("GET", "/v1/models")[2])
    assert sorted(m["id"] for m in openai["data"]) == sorted(UPSTREAMS)
    claude = json.loads(h.request("GET", "/v1/models", headers={"anthropic-version": "2023-06-01"})[2])
    assert claude["has_more"] is False and {m["type"] for m in claude["data"]} == {"model"}
    agent = json.loads(h.request("GET", "/v1/models", headers={"User-Agent": "claude-cli/2.0.1"})[2])
    assert agent == claude
    gemini = json.loads(h.request("GET", "/v1beta/models")[2])
    assert sorted(m["name"] for m in gemini["models"]) == sorted(f"models/{m}" for m in UPSTREAMS)
    one = json.loads(h.request("GET", "/v1beta/models/via-codex")[2])
    assert one["name"] == "models/via-codex"
    assert json.loads(h.request("GET", "/v1/models/via-codex")[2])["id"] == "via-codex"
    # HEAD is the GET without its body, not a generation request with no body
    assert h.request("HEAD", "/v1beta/models/via-codex")[0] == 200
    assert h.request("HEAD", "/v1beta/models/nope")[0] == 404
    assert not h.upstream.seen


# -- counts ------------------------------------------------------------------------------


def test_counts_go_to_the_upstreams_count_endpoint_or_are_estimated_locally():
    h = matrix()
    code, _, raw = h.request("POST", "/v1/messages/count_tokens",
                             {"model": "via-gemini", "messages": [{"role": "user", "content": "hi"}]})
    assert code == 200 and json.loads(raw)["input_tokens"] > 0
    seen = h.upstream.seen[-1]
    assert seen.format == "gemini" and seen.body["generateContentRequest"]["model"] == "models/gemini-2.5-sim"
    before = len(h.upstream.seen)
    code, _, raw = h.request("POST", "/v1beta/models/via-openai:countTokens",
                             {"contents": [{"role": "user", "parts": [{"text": "x" * 400}]}]})
    assert code == 200 and json.loads(raw) == {"totalTokens": 100}
    assert len(h.upstream.seen) == before  # estimated here, nothing sent


def test_a_wrapped_gemini_count_is_not_wrapped_twice():
    h = matrix()
    body = {"generateContentRequest": {"model": "models/via-gemini",
                                       "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}}
    code, _, raw = h.request("POST", "/v1beta/models/via-gemini:countTokens", body)
    assert code == 200 and json.loads(raw)["totalTokens"] > 0
    sent = h.upstream.seen[-1].body
    assert sent["generateContentRequest"]["model"] == "models/gemini-2.5-sim"
    assert "generateContentRequest" not in sent["generateContentRequest"]
