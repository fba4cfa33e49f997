"""
C{POST /v1/responses/compact}: a Responses conversation compacted by an
upstream that has the endpoint (Codex accounts and codex-api-key), through
the same conductor as every request (picks, failover, cooldowns), and a
clear 400 in OpenAI's error shape for a model no such upstream serves.

In memory for the API keys (the simulated upstream of every format, two keys
each, the first tried first), on loopback for a Codex account.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import treq

from tests.test_oauth_accounts import ACCOUNTS, OAuthStack
from tests.test_stream_faults import MODELS, faults, fault_config
from tests.test_formats_frontend import HOST
from tests.conftest import Harness

PATH = "/v1/responses/compact"
INPUT = [{"role": "user", "content": "Plan a trip"},
         {"role": "assistant", "content": "Where to?"},
         {"role": "user", "content": "Lisbon"}]


def compact(h, model: str = "via-codex", headers=None, **extra):
    return h.request("POST", PATH, {"model": model, "input": INPUT, **extra}, headers)


def nothing_sent(h) -> bool:
    return len(h.upstream.seen) == 0


def test_a_codex_api_key_compacts_the_conversation():
    h = faults()
    code, headers, body = compact(h, instructions="be brief")
    assert code == 200, body
    answer = json.loads(body)
    assert answer["object"] == "response.compaction"
    output = answer["output"]
    assert [item["type"] for item in output] == ["message", "message", "compaction"]  # the user turns, then one
    assert output[-1]["encrypted_content"].startswith("sim-compaction:3:")
    assert answer["usage"]["input_tokens"] == 21
    [seen] = h.upstream.seen
    assert seen.path == "/v1/responses/compact" and seen.key == MODELS["via-codex"][1]
    assert seen.headers["authorization"] == f"Bearer {MODELS['via-codex'][1]}"
    assert seen.body["model"] == "codex-sim" and seen.body["instructions"] == "be brief"
    assert seen.body["input"] == INPUT  # the client's body, as it was
    assert "stream" not in seen.body


def test_codex_clis_own_path_is_the_same_route():
    h = faults()
    code, _, body = h.request("POST", "/backend-api/codex/responses/compact", {"model": "via-codex", "input": INPUT})
    assert code == 200, body
    assert json.loads(body)["object"] == "response.compaction"
    assert h.upstream.seen[0].path == PATH


def test_stream_false_is_left_out_and_stream_true_is_refused():
    h = faults()
    code, _, body = compact(h, stream=False)
    assert code == 200, body
    assert "stream" not in h.upstream.seen[0].body
    h = faults()
    code, _, body = compact(h, stream=True)
    assert code == 400, body
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and "stream" in error["message"]
    assert nothing_sent(h)


@pytest.mark.parametrize("model", ["via-openai", "via-claude", "via-gemini"])
def test_a_model_no_compacting_upstream_serves_is_a_clear_400(model):
    h = faults()
    code, _, body = compact(h, model)
    assert code == 400, body
    error = json.loads(body)["error"]
    assert error["code"] == "compact_not_supported" and error["type"] == "invalid_request_error"
    assert model in error["message"] and "/v1/responses/compact" in error["message"]
    assert nothing_sent(h)


def test_an_unknown_model_is_a_404():
    h = faults()
    code, _, body = compact(h, "no-such-model")
    assert code == 404
    assert json.loads(body)["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("fault", ["status:429", "status:500", "status:503", "garbage:html"])
def test_a_failed_first_key_moves_on_to_the_second(fault):
    h = faults()
    _, first, second = MODELS["via-codex"]
    h.upstream.script(first, fault)
    code, _, body = compact(h)
    assert code == 200, body
    answer = json.loads(body)
    assert answer["object"] == "response.compaction"
    assert [s.key for s in h.upstream.seen] == [first, second]
    assert [s.path for s in h.upstream.seen] == [PATH, PATH]


def test_the_failed_key_cools_and_the_next_request_goes_straight_to_the_second():
    h = faults()
    _, first, second = MODELS["via-codex"]
    h.upstream.script(first, "status:429:30", "ok")
    assert compact(h)[0] == 200
    assert compact(h)[0] == 200
    assert [s.key for s in h.upstream.seen] == [first, second, second]
    h.clock.advance(300)  # its cooldown long over: back to the first key, as for any request
    assert compact(h)[0] == 200
    assert h.upstream.seen[-1].key == first


def test_when_every_key_fails_the_client_gets_the_error_in_openai_shape():
    h = faults()
    for key in MODELS["via-codex"][1:]:
        h.upstream.script(key, "status:429:9")
    code, headers, body = compact(h)
    assert code == 429
    assert headers.getRawHeaders(b"retry-after") == [b"9"]
    error = json.loads(body)["error"]
    assert error["type"] == "rate_limit_error" and error["message"]


def both_serve(compacts: bool = False, **top) -> Harness:
    """
    via-codex served by an openai-compatibility provider (tried first) as
    well as by the codex keys; C{compacts}: the provider has responses-compact.
    """
    data = fault_config(HOST)
    data["openai-compatibility"].append({"name": "chatty", "base-url": HOST + "/v1", "priority": 5,
                                         "api-key-entries": [{"api-key": "sk-chatty"}],
                                         "models": [{"name": "chat-sim", "alias": "via-codex"}],
                                         **({"responses-compact": True} if compacts else {})})
    return Harness({**data, **top})


def test_only_the_compacting_providers_of_a_model_are_tried():
    h = both_serve()
    code, _, body = h.request("POST", "/v1/responses", {"model": "via-codex", "input": "hi"})
    assert code == 200, body
    assert h.upstream.seen[-1].key == "sk-chatty"  # its priority wins for generation
    code, _, body = compact(h)
    assert code == 200, body
    assert h.upstream.seen[-1].key == MODELS["via-codex"][1] and h.upstream.seen[-1].path == PATH


def test_a_client_key_that_may_use_no_compacting_provider_gets_a_400():
    keys = [{"name": "chat-only", "key": "sk-client-chat-only", "providers": ["chatty"]},
            {"name": "any", "key": "sk-client-any"}]
    h = both_serve(**{"client-keys": keys})
    code, _, body = compact(h, headers={"authorization": "Bearer sk-client-chat-only"})
    assert code == 400, body
    assert json.loads(body)["error"]["code"] == "compact_not_supported"
    assert nothing_sent(h)
    code, _, body = compact(h, headers={"authorization": "Bearer sk-client-any"})
    assert code == 200, body


def test_an_openai_compatibility_provider_with_responses_compact_gets_the_responses_body():
    h = both_serve(compacts=True)
    code, _, body = compact(h, instructions="be brief")
    assert code == 200, body
    assert json.loads(body)["object"] == "response.compaction"
    [seen] = h.upstream.seen
    assert (seen.key, seen.path, seen.format) == ("sk-chatty", PATH, "responses")
    assert seen.body["model"] == "chat-sim" and seen.body["input"] == INPUT
    assert seen.body["instructions"] == "be brief" and "messages" not in seen.body


def test_a_compacting_openai_compatibility_provider_fails_over_to_the_codex_keys():
    h = both_serve(compacts=True)
    h.upstream.script("sk-chatty", "status:500")
    code, _, body = compact(h)
    assert code == 200, body
    assert [s.key for s in h.upstream.seen] == ["sk-chatty", MODELS["via-codex"][1]]


def test_responses_compact_is_read_from_the_config_and_checked():
    from cliproxyd.config import parse_config
    from cliproxyd.config.load import ConfigError

    data = fault_config(HOST)
    data["openai-compatibility"][0]["responses-compact"] = True
    assert parse_config(data)[0].openai_compatibility[0].responses_compact is True
    data["openai-compatibility"][0]["responses-compact"] = "yes"
    with pytest.raises(ConfigError) as raised:
        parse_config(data)
    assert "openai-compatibility[0].responses-compact" in str(raised.value)


# -- a Codex account, on loopback --------------------------------------------------------


@pytest_twisted.async_yield_fixture
async def codex_stack(tmp_path):
    from twisted.internet import reactor

    s = OAuthStack(reactor, tmp_path, {"codex-b.json": ACCOUNTS["codex-b.json"]})
    yield s
    await s.close()


@pytest_twisted.ensureDeferred
async def test_a_codex_account_compacts_at_the_backend(codex_stack):
    body = {"model": "gpt-5-codex", "input": INPUT}
    response = await treq.post(codex_stack.url + PATH, json=body)
    content = await response.content()
    assert response.code == 200, content
    assert json.loads(content)["object"] == "response.compaction"
    [seen] = codex_stack.upstream.seen
    assert seen.path == "/backend-api/codex/responses/compact"
    assert seen.headers["authorization"] == "Bearer at-codex"
    assert seen.headers["chatgpt-account-id"] == "acct-7"
    assert seen.body["instructions"] == "" and "stream" not in seen.body and seen.stream is False
