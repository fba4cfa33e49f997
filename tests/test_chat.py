"""Chat completions through the whole in-memory path: answers, streams, errors."""

import json

from tests.conftest import Harness, config_data, sse_payloads


def test_non_stream_answer_comes_from_the_upstream(harness):
    status, headers, body = harness.chat()
    assert status == 200
    reply = json.loads(body)
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["content"].startswith("Hello from the simulated upstream")
    assert headers.getRawHeaders(b"content-type") == [b"application/json"]


def test_stream_is_relayed_as_sse_and_ends_with_done(harness):
    status, headers, body = harness.chat(stream=True)
    assert status == 200
    assert headers.getRawHeaders(b"content-type")[0].startswith(b"text/event-stream")
    payloads = sse_payloads(body)
    assert payloads[-1] == "[DONE]"
    text = "".join(p["choices"][0]["delta"].get("content", "") for p in payloads[:-1] if p["choices"])
    assert text.startswith("Hello from the simulated upstream")


def test_alias_is_renamed_to_the_upstream_model(harness):
    harness.chat(model="gpt-4o-mini")
    assert harness.upstream.seen[-1].model == "sim-small"


def test_unaliased_model_body_goes_upstream_byte_for_byte(harness):
    raw = b'{"model":"gpt-4o",  "messages":[{"role":"user","content":"hi"}], "x-extra": [1, 2]}'
    captured = []
    original = harness.up.request

    def spy(method, url, **kw):
        captured.append(kw["data"])
        return original(method, url, **kw)

    harness.up.request = spy
    status, _, _ = harness.request("POST", "/v1/chat/completions", raw)
    assert status == 200
    assert captured == [raw]


def test_prefixed_model_reaches_the_upstream_without_its_prefix():
    data = config_data()
    data["openai-compatibility"][0]["prefix"] = "team"
    h = Harness(data)
    status, _, _ = h.chat(model="team/gpt-4o-mini")
    assert status == 200
    assert h.upstream.seen[-1].model == "sim-small"
    # Without force-model-prefix the bare name still works.
    assert h.chat(model="gpt-4o-mini")[0] == 200


def test_force_model_prefix_hides_the_bare_name():
    data = config_data(**{"force-model-prefix": True})
    data["openai-compatibility"][0]["prefix"] = "team"
    h = Harness(data)
    assert h.chat(model="gpt-4o-mini")[0] == 404
    assert h.chat(model="team/gpt-4o-mini")[0] == 200


def test_unknown_model_is_a_404_in_openai_shape(harness):
    status, _, body = harness.chat(model="no-such-model")
    assert status == 404
    err = json.loads(body)["error"]
    assert err["code"] == "model_not_found"
    assert "no-such-model" in err["message"]
    assert len(harness.upstream.seen) == 0


def test_models_lists_every_route_name(harness):
    status, _, body = harness.request("GET", "/v1/models")
    assert status == 200
    listing = json.loads(body)
    assert listing["object"] == "list"
    assert sorted(m["id"] for m in listing["data"]) == ["gpt-4o", "gpt-4o-mini"]
    assert {m["owned_by"] for m in listing["data"]} == {"sim"}


def test_healthz_answers_without_a_key():
    h = Harness(config_data(**{"api-keys": ["client-key"]}))
    status, _, body = h.request("GET", "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})


def test_unknown_route_is_a_json_404(harness):
    status, _, body = harness.request("GET", "/v1/nothing-here")
    assert status == 404
    assert json.loads(body)["error"]["code"] == "not_found"


def test_wrong_method_is_a_json_405(harness):
    status, _, body = harness.request("GET", "/v1/chat/completions")
    assert status == 405
    assert "GET" in json.loads(body)["error"]["message"]


def test_malformed_bodies_are_400s_that_never_reach_an_upstream(harness):
    bad = [
        b"{not json",
        b"[1, 2]",
        json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(),
        json.dumps({"model": "", "messages": [{"role": "user", "content": "x"}]}).encode(),
        json.dumps({"model": "gpt-4o", "messages": "hi"}).encode(),
        json.dumps({"model": "gpt-4o", "messages": []}).encode(),
        json.dumps({"model": "gpt-4o", "messages": [{"role": "user"}], "stream": "yes"}).encode(),
        b"\xff\xfe",
    ]
    for raw in bad:
        status, _, body = harness.request("POST", "/v1/chat/completions", raw)
        assert status == 400, raw
        err = json.loads(body)["error"]
        assert err["type"] == "invalid_request_error"
        assert err["message"].startswith("Invalid request: ")
    assert len(harness.upstream.seen) == 0


def test_an_internal_error_is_a_json_500_without_a_traceback(harness):
    def explode(req):
        raise RuntimeError("secret internals")

    harness.conductor.execute = explode
    status, _, body = harness.chat()
    assert status == 500
    assert b"secret internals" not in body and b"Traceback" not in body
    assert json.loads(body)["error"]["type"] == "server_error"
