"""The official anthropic SDK against the daemon (twistd subprocess) and OpenAI-compatible upstreams."""

import pytest

from tests.test_e2e import CLIENT_KEY, stack  # noqa: F401  (the fixture)

TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


@pytest.fixture
def client(stack):  # noqa: F811
    import anthropic

    url, _, _ = stack
    return anthropic.Anthropic(base_url=url, api_key=CLIENT_KEY, max_retries=0, timeout=20)


def test_messages_create_and_stream(client):
    reply = client.messages.create(model="gpt-4o-mini", max_tokens=64,
                                   messages=[{"role": "user", "content": "hi"}])
    assert reply.content[0].text.startswith("Hello from the simulated upstream")
    assert reply.stop_reason == "end_turn"
    with client.messages.stream(model="gpt-4o-mini", max_tokens=64,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.startswith("Hello from the simulated upstream")
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


@pytest.mark.parametrize("streamed", [False, True])
def test_a_tool_call_round_trip(client, streamed):
    ask = [{"role": "user", "content": "weather in Paris?"}]
    if streamed:
        with client.messages.stream(model="gpt-4o-mini", max_tokens=64, tools=TOOLS, messages=ask) as stream:
            first = stream.get_final_message()
    else:
        first = client.messages.create(model="gpt-4o-mini", max_tokens=64, tools=TOOLS, messages=ask)
    assert first.stop_reason == "tool_use"
    [call] = [b for b in first.content if b.type == "tool_use"]
    assert (call.name, call.input) == ("get_weather", {"city": "Paris"})
    second = client.messages.create(model="gpt-4o-mini", max_tokens=64, tools=TOOLS, messages=[
        *ask,
        {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},
    ])
    assert second.content[0].text == "The tool said: sunny"


def test_errors_reach_the_sdk_as_its_own_exceptions(client, stack):  # noqa: F811
    import anthropic

    url, _, _ = stack
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=url, api_key="wrong", max_retries=0).messages.create(
            model="gpt-4o-mini", max_tokens=8, messages=[{"role": "user", "content": "x"}])
