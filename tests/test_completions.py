"""
C{POST /v1/completions}, in memory: legacy text completions served by chat,
through the real frontend, conductor and executors, against the simulated
upstream of every wire format (two keys each, the first tried first).

The prompt reaches the upstream as the one user turn; the answer comes back
as C{text_completion} objects (whole, or chunks ending with C{[DONE]});
what a chat model cannot serve is a 400 naming the field, with nothing
sent; a fault before any byte moves on to the next key unseen.
"""

from __future__ import annotations

import json

import pytest

from cliproxyd.formats import FORMATS
from tests.conftest import sse_payloads
from tests.test_stream_faults import MODELS, faults

PATH = "/v1/completions"
PROMPT = "Write a haiku about the sea"


def complete(h, model: str, stream: bool = False, **extra):
    body = {"model": model, "prompt": PROMPT, **extra}
    if stream:
        body["stream"] = True
    return h.request("POST", PATH, body)


def streamed_text(body: bytes) -> tuple[str, list[dict]]:
    """The text of a completions stream (which must end with [DONE]), and its chunks."""
    payloads = sse_payloads(body)
    assert payloads[-1] == "[DONE]", body
    chunks = payloads[:-1]
    assert all(c["object"] == "text_completion" for c in chunks), body
    return "".join(c["choices"][0]["text"] for c in chunks if c["choices"]), chunks


def prompt_seen(seen) -> list:
    """The conversation the upstream was asked, decoded from its own format: (role, text) per turn."""
    req = FORMATS[seen.format].request_to_canonical(seen.body)
    return [(m.role, "".join(getattr(p, "text", "") for p in m.parts)) for m in req.messages]


@pytest.mark.parametrize("model", list(MODELS))
def test_a_whole_completion_from_every_upstream_format(model):
    h = faults()
    code, headers, body = complete(h, model, max_tokens=40)
    assert code == 200, body
    answer = json.loads(body)
    assert answer["object"] == "text_completion"
    assert answer["id"].startswith("cmpl-") and answer["model"] == model
    [choice] = answer["choices"]
    first = MODELS[model][1]
    assert choice["text"] == f"Hello from the simulated upstream (key ...{first[-6:]})."
    assert choice["finish_reason"] == "stop" and choice["index"] == 0 and choice["logprobs"] is None
    usage = answer["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    [seen] = h.upstream.seen
    assert seen.format == MODELS[model][0] and seen.key == first
    assert prompt_seen(seen) == [("user", PROMPT)]


@pytest.mark.parametrize("model", list(MODELS))
def test_a_streamed_completion_from_every_upstream_format(model):
    h = faults()
    code, headers, body = complete(h, model, stream=True)
    assert code == 200, body
    assert headers.getRawHeaders(b"content-type")[0].startswith(b"text/event-stream")
    text, chunks = streamed_text(body)
    assert text == f"Hello from the simulated upstream (key ...{MODELS[model][1][-6:]})."
    finishes = [c["choices"][0]["finish_reason"] for c in chunks]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("cmpl-")
    assert not any("usage" in c for c in chunks)  # not asked for
    assert [s.stream for s in h.upstream.seen] == [True]


def test_streamed_usage_comes_last_when_asked_for():
    h = faults()
    code, _, body = complete(h, "via-openai", stream=True, stream_options={"include_usage": True})
    assert code == 200, body
    _, chunks = streamed_text(body)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert all("usage" not in c for c in chunks[:-1])


@pytest.mark.parametrize("stream", [False, True])
def test_echo_puts_the_prompt_before_the_completion(stream):
    h = faults()
    code, _, body = complete(h, "via-claude", stream=stream, echo=True)
    assert code == 200, body
    text = streamed_text(body)[0] if stream else json.loads(body)["choices"][0]["text"]
    assert text == PROMPT + "Hello from the simulated upstream (key ...sk-c1)."
    assert prompt_seen(h.upstream.seen[0]) == [("user", PROMPT)]  # the upstream is asked once, not echoed to


def test_a_prompt_list_of_one_and_the_sampling_fields_reach_the_upstream():
    h = faults()
    code, _, body = h.request("POST", PATH, {"model": "via-openai", "prompt": [PROMPT], "max_tokens": 33,
                                             "temperature": 0.25, "top_p": 0.5, "stop": ["\n\n", "END"]})
    assert code == 200, body
    sent = h.upstream.seen[0].body
    assert sent["messages"] == [{"role": "user", "content": PROMPT}]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["stop"]) == (33, 0.25, 0.5, ["\n\n", "END"])
    assert sent["model"] == "sim-small"  # the alias resolved as for chat


@pytest.mark.parametrize("extra, field", [
    ({"prompt": ["one", "two"]}, "prompt"),
    ({"prompt": [[1, 2, 3]]}, "prompt"),
    ({"prompt": [1, 2, 3]}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({"suffix": "tail"}, "suffix"),
    ({"logprobs": 2}, "logprobs"),
    ({"n": 2}, "n"),
    ({"best_of": 3}, "best_of"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"echo": "yes"}, "echo"),
    ({"stream": "yes"}, "stream"),
])
def test_what_chat_cannot_serve_is_a_400_naming_the_field(extra, field):
    h = faults()
    code, _, body = h.request("POST", PATH, {"model": "via-openai", "prompt": PROMPT, **extra})
    assert code == 400, body
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error"
    assert field in error["message"]
    assert h.upstream.seen == type(h.upstream.seen)()  # nothing was sent


def test_a_null_suffix_and_logprobs_and_n_of_one_are_served():
    h = faults()
    code, _, body = complete(h, "via-gemini", suffix=None, logprobs=None, n=1, best_of=1, echo=False)
    assert code == 200, body


def test_an_unknown_model_is_the_openai_404():
    h = faults()
    code, _, body = complete(h, "no-such-model")
    assert code == 404
    assert json.loads(body)["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fault", ["status:429", "status:500", "error-first", "overloaded"])
@pytest.mark.parametrize("model", list(MODELS))
def test_a_fault_before_any_byte_moves_on_to_the_next_key_unseen(model, fault, stream):
    h = faults()
    _, first, second = MODELS[model]
    h.upstream.script(first, fault)
    code, _, body = complete(h, model, stream=stream)
    assert code == 200, body
    text = streamed_text(body)[0] if stream else json.loads(body)["choices"][0]["text"]
    assert text == f"Hello from the simulated upstream (key ...{second[-6:]})."  # one answer, the second key's
    assert [s.key for s in h.upstream.seen] == [first, second]
    assert not any(word in body for word in (b"error", b"failure", b"overload", b"rate limit"))


@pytest.mark.parametrize("stream", [False, True])
def test_when_every_key_fails_the_client_gets_an_openai_error(stream):
    h = faults()
    for key in MODELS["via-claude"][1:]:
        h.upstream.script(key, "status:429:7")
    code, headers, body = complete(h, "via-claude", stream=stream)
    assert code == 429
    assert headers.getRawHeaders(b"retry-after") == [b"7"]
    error = json.loads(body)["error"]
    assert error["type"] == "rate_limit_error" and error["message"]


def test_a_stream_that_fails_after_content_ends_with_an_error_never_a_stop():
    h = faults()
    for key in MODELS["via-codex"][1:]:
        h.upstream.script(key, "error-after:4")
    code, _, body = complete(h, "via-codex", stream=True)
    assert code == 200
    payloads = sse_payloads(body)
    assert "[DONE]" not in payloads
    assert "error" in payloads[-1]
    texts = [p["choices"][0]["text"] for p in payloads[:-1] if p.get("choices")]
    assert texts and not any(p["choices"][0]["finish_reason"] for p in payloads[:-1] if p.get("choices"))


def test_a_client_key_scope_applies_to_completions():
    h = faults(**{"client-keys": [{"name": "ci", "key": "sk-client-ci-000000", "models": ["via-openai"]}]})
    auth = {"authorization": "Bearer sk-client-ci-000000"}
    code, _, body = h.request("POST", PATH, {"model": "via-claude", "prompt": PROMPT}, auth)
    assert code == 403, body
    assert json.loads(body)["error"]["code"] == "model_not_allowed"
    code, _, body = h.request("POST", PATH, {"model": "via-openai", "prompt": PROMPT}, auth)
    assert code == 200, body
    code, _, body = h.request("POST", PATH, {"model": "via-openai", "prompt": PROMPT})
    assert code == 401
    assert json.loads(body)["error"]["code"] == "invalid_api_key"
