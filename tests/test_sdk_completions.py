"""
The official openai SDK against C{/v1/completions} and
C{/v1/responses/compact} on loopback: one daemon (twistd) and one simulated
upstream (both subprocesses), two keys for each upstream wire format, the
first one always tried first.

A fault of the first key before any byte reaches the client moves on to the
second unseen; when every key fails the SDK raises its own error. Over a
run of faults, no answer is lost, none is duplicated, and none is a made-up
success.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.test_e2e import http_get, processes
from tests.test_stream_faults import MODELS, fault_config

KEY = "sk-completions-client"
PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    def config(up: str) -> dict:
        return {**fault_config(up), "api-keys": [KEY], "disable-cooling": True}

    with processes(tmp_path_factory.mktemp("completions"), config) as (url, up, _):
        yield url, up


@pytest.fixture(scope="module")
def client(daemon):
    import openai

    return openai.OpenAI(base_url=daemon[0] + "/v1", api_key=KEY, max_retries=0, timeout=20)


def script(daemon, scripts: dict[str, list[str]]) -> None:
    """Set the upstream keys' behaviours (every other key answers)."""
    body = json.dumps(scripts).encode()
    request = urllib.request.Request(daemon[1] + "/_sim/reset", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    request = urllib.request.Request(daemon[1] + "/_sim/script", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def seen(daemon) -> list[dict]:
    return json.loads(http_get(daemon[1] + "/_sim/requests")[1])


def hello(key: str) -> str:
    return f"Hello from the simulated upstream (key ...{key[-6:]})."


def complete(client, model: str, stream: bool) -> tuple[str, str | None]:
    """The completion's text and finish reason, streamed or whole."""
    if not stream:
        answer = client.completions.create(model=model, prompt=PROMPT, max_tokens=50)
        assert answer.object == "text_completion"
        [choice] = answer.choices
        return choice.text, choice.finish_reason
    text, finish = "", None
    for chunk in client.completions.create(model=model, prompt=PROMPT, max_tokens=50, stream=True):
        assert chunk.object == "text_completion"
        for choice in chunk.choices:
            text += choice.text
            finish = choice.finish_reason or finish
    return text, finish


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("model", list(MODELS))
def test_the_sdk_completes_on_every_upstream_format(daemon, client, model, stream):
    script(daemon, {})
    assert complete(client, model, stream) == (hello(MODELS[model][1]), "stop")
    [asked] = seen(daemon)
    assert asked["format"] == MODELS[model][0] and asked["stream"] is stream


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("fault", ["status:429", "status:500"])
@pytest.mark.parametrize("model", list(MODELS))
def test_a_first_key_failing_before_any_byte_is_never_seen(daemon, client, model, fault, stream):
    _, first, second = MODELS[model]
    script(daemon, {first: [fault, "ok"]})
    assert complete(client, model, stream) == (hello(second), "stop")
    assert [r["key"] for r in seen(daemon)] == [first, second]


def test_a_run_of_faults_loses_duplicates_and_fakes_nothing(daemon, client):
    import openai

    outcomes = {"answered": 0, "raised": 0, "lost": 0, "duplicated": 0, "fake": 0}
    cases = [(model, fault, stream) for model in MODELS for stream in (False, True)
             for fault in ("status:429", "status:500", "error-first", "overloaded", "all:status:503")]
    for model, fault, stream in cases:
        _, first, second = MODELS[model]
        every = fault.startswith("all:")
        behaviour = fault.removeprefix("all:")
        script(daemon, {first: [behaviour, "ok"], **({second: [behaviour, "ok"]} if every else {})})
        try:
            text, finish = complete(client, model, stream)
        except openai.APIError:
            outcomes["raised" if every else "lost"] += 1
            continue
        outcomes["answered"] += 1
        if every or finish != "stop":
            outcomes["fake"] += 1
        elif text != hello(second):
            outcomes["duplicated" if hello(second) in text else "fake"] += 1
    per_fault = len(MODELS) * 2
    assert outcomes == {"answered": 4 * per_fault, "raised": per_fault, "lost": 0, "duplicated": 0, "fake": 0}


def test_the_sdk_gets_a_bad_request_naming_what_is_not_supported(daemon, client):
    import openai

    script(daemon, {})
    for extra, field in (({"n": 2}, "n"), ({"suffix": "The end."}, "suffix"), ({"logprobs": 1}, "logprobs")):
        with pytest.raises(openai.BadRequestError) as raised:
            client.completions.create(model="via-openai", prompt=PROMPT, **extra)
        assert field in raised.value.message
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model="via-openai", prompt=["one", "two"])
    assert "prompt" in raised.value.message
    assert seen(daemon) == []


def test_the_sdk_echoes_the_prompt(daemon, client):
    script(daemon, {})
    answer = client.completions.create(model="via-gemini", prompt=PROMPT, echo=True)
    assert answer.choices[0].text == PROMPT + hello(MODELS["via-gemini"][1])


# -- /v1/responses/compact ------------------------------------------------------------------


def test_the_sdk_compacts_through_a_codex_key_after_the_first_fails(daemon, client):
    _, first, second = MODELS["via-codex"]
    script(daemon, {first: ["status:500", "ok"]})
    compacted = client.responses.compact(model="via-codex", input=[
        {"role": "user", "content": "Plan a trip"}, {"role": "assistant", "content": "Where to?"},
        {"role": "user", "content": "Lisbon"}])
    assert compacted.object == "response.compaction"
    assert [item.type for item in compacted.output] == ["message", "message", "compaction"]
    assert compacted.usage.input_tokens == 21
    assert [(r["key"], r["path"]) for r in seen(daemon)] == [(first, "/v1/responses/compact"),
                                                             (second, "/v1/responses/compact")]


def test_the_sdk_is_told_no_upstream_compacts_a_chat_model(daemon, client):
    import openai

    script(daemon, {})
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.compact(model="via-claude", input="hi")
    assert raised.value.code == "compact_not_supported"
    assert "via-claude" in raised.value.message
    assert seen(daemon) == []
