"""
/v1/images/generations and /v1/images/edits (issue 14), through the official
openai SDK on loopback: the frontend, conductor and executors in this
process over a simulated upstream, with an OpenAI-compatible provider whose
model entry says C{image: true} (the Images API passed through, forms and
all), a Codex API key (the same) and a Codex account (the backend's
image_generation tool, run by C{gpt-image-2-base-model}).
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
import pytest_twisted
import treq
from twisted.internet.threads import deferToThread

from cliproxyd.assembly import Assembly
from cliproxyd.config import parse_config
from cliproxyd.config.load import ConfigError
from cliproxyd.frontend import Frontend, InFlight, QuietSite, TrackingSite
from cliproxyd.outbound import make_http_client
from cliproxyd.runtime import Runtime
from cliproxyd.state import MemoryStateStore
from cliproxyd.testing.images import PICTURE, PICTURE_B64, USAGE, png
from cliproxyd.testing.upstream import SimulatedUpstream
from tests.test_oauth_accounts import write

CLIENT = "sk-images-client"
#: what the client uploads: a real PNG (its signature has \r\n and \n bytes in it) of another colour
PHOTO = png(3, 2, (10, 200, 90))
MASK = png(3, 2, (0, 0, 0))


#: client-keys entries: one that may only make pictures, one whose tokens are counted
SCOPED = "sk-images-scoped"
METERED = "sk-images-metered"


def config_for(base: str, auth_dir: str, **top) -> dict:
    return {
        "api-keys": [CLIENT],
        "client-keys": [{"name": "pictures-only", "key": SCOPED, "models": ["pictures"], "providers": ["xai"]},
                        {"name": "metered", "key": METERED, "tpm": 2000}],
        "auth-dir": auth_dir,
        "routing": {"strategy": "fill-first"},
        "openai-compatibility": [{
            "name": "pics",
            "base-url": base + "/v1",
            "api-key-entries": [{"api-key": "sk-pics-1"}, {"api-key": "sk-pics-2"}],
            "models": [{"name": "dall-e-3", "alias": "pictures", "image": True},
                       {"name": "sim-small", "alias": "chatty"}],
        }],
        "codex-api-key": [{"api-key": "sk-codex-key", "base-url": base + "/v1",
                           "models": [{"name": "gpt-image-1.5"}]}],
        "xai-api-key": [{"api-key": "sk-xai-key", "base-url": base + "/v1"}],
        **top,
    }


class ImageStack:
    def __init__(self, reactor, tmp_path, **top) -> None:
        self.upstream = SimulatedUpstream(reactor)
        self.upstream_port = reactor.listenTCP(0, QuietSite(self.upstream.resource()), interface="127.0.0.1")
        base = f"http://127.0.0.1:{self.upstream_port.getHost().port}"
        auth_dir = tmp_path / "auth"
        auth_dir.mkdir()
        write(auth_dir, "codex-a.json", {"type": "codex", "access_token": "at-codex-a", "refresh_token": "r",
                                         "account_id": "acct-a", "base_url": base + "/backend-api/codex"})
        self.config_data = config_for(base, str(auth_dir), **top)
        self.config_path = tmp_path / "config.yaml"
        self.write_config()
        self.pool, client = make_http_client(reactor, 5)
        runtime = self.runtime = Runtime(Assembly(client, reactor, MemoryStateStore()),
                                         config_path=str(self.config_path), poll=0)
        runtime.start()
        assert runtime.current.problems == {}
        self.conductor = runtime.current.conductor
        site = TrackingSite(Frontend(runtime.source, reactor).resource(), InFlight(reactor, 5), runtime.source)
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    def write_config(self) -> None:
        self.config_path.write_text(json.dumps(self.config_data))  # JSON is YAML

    def sdk(self, call, key: str = CLIENT):
        """Run a call of the (blocking) openai SDK off the reactor thread, which serves it."""
        import openai

        client = openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=20)
        return deferToThread(call, client)

    async def close(self) -> None:
        await self.port.stopListening()
        await self.upstream_port.stopListening()
        await self.pool.closeCachedConnections()


@pytest_twisted.async_yield_fixture
async def stack(tmp_path):
    from twisted.internet import reactor

    s = ImageStack(reactor, tmp_path)
    yield s
    await s.close()


def _generate(model: str, **kw):
    return lambda c: c.images.generate(model=model, prompt="a red square", **kw)


# -- an OpenAI-compatible provider's image model ------------------------------------------


@pytest_twisted.ensureDeferred
async def test_generations_pass_through_to_a_compat_image_model(stack):
    answer = await stack.sdk(_generate("pictures", n=2, size="1024x1024"))
    assert [base64.b64decode(d.b64_json) for d in answer.data] == [PICTURE, PICTURE]
    assert answer.usage.total_tokens == USAGE["total_tokens"]
    seen = stack.upstream.seen[-1]
    assert seen.path == "/v1/images/generations" and seen.key == "sk-pics-1"
    # The alias is the upstream's model name there; the rest as the client sent it.
    assert seen.body == {"model": "dall-e-3", "prompt": "a red square", "n": 2, "size": "1024x1024"}


@pytest_twisted.ensureDeferred
async def test_edits_pass_the_form_and_its_files_through_byte_for_byte(stack):
    answer = await stack.sdk(lambda c: c.images.edit(
        model="pictures", prompt="make it green", image=("photo.png", PHOTO, "image/png"),
        mask=("mask.png", MASK, "image/png"), size="1024x1024"))
    assert base64.b64decode(answer.data[0].b64_json) == PICTURE
    seen = stack.upstream.seen[-1]
    assert seen.path == "/v1/images/edits" and seen.body["_form"] is True
    assert seen.body["model"] == "dall-e-3" and seen.body["prompt"] == "make it green"
    assert seen.body["size"] == "1024x1024"
    files = {f["field"]: f for f in seen.body["_files"]}
    assert files["image"]["sha256"] == hashlib.sha256(PHOTO).hexdigest()
    assert files["image"]["filename"] == "photo.png" and files["image"]["content_type"] == "image/png"
    assert files["mask"]["sha256"] == hashlib.sha256(MASK).hexdigest()


@pytest_twisted.ensureDeferred
async def test_several_images_go_as_image_array(stack):
    await stack.sdk(lambda c: c.images.edit(
        model="pictures", prompt="merge", image=[("a.png", PHOTO, "image/png"), ("b.png", MASK, "image/png")]))
    files = stack.upstream.seen[-1].body["_files"]
    assert [(f["field"], f["filename"]) for f in files] == [("image[]", "a.png"), ("image[]", "b.png")]


@pytest_twisted.ensureDeferred
async def test_a_codex_key_passes_through_to_the_images_api(stack):
    answer = await stack.sdk(_generate("gpt-image-1.5", response_format="url"))
    assert answer.data[0].url == "data:image/png;base64," + PICTURE_B64
    seen = stack.upstream.seen[-1]
    # fill-first: the Codex key (config) before the Codex account (auth dir), both provider codex
    assert seen.path == "/v1/images/generations" and seen.key == "sk-codex-key"
    assert seen.body["model"] == "gpt-image-1.5"


# -- a Codex account: the backend's image_generation tool -----------------------------------


@pytest_twisted.ensureDeferred
async def test_a_codex_account_makes_images_with_the_image_tool(stack):
    answer = await stack.sdk(_generate("gpt-image-2", size="1536x1024", quality="high", output_compression=80))
    assert base64.b64decode(answer.data[0].b64_json) == PICTURE
    assert answer.data[0].revised_prompt == "a picture of a red square"
    assert answer.size == "1536x1024" and answer.usage.total_tokens == USAGE["total_tokens"]
    seen = stack.upstream.seen[-1]
    assert seen.path == "/backend-api/codex/responses"
    assert seen.headers["authorization"] == "Bearer at-codex-a" and seen.headers["chatgpt-account-id"] == "acct-a"
    body = seen.body
    assert body["model"] == "gpt-5.4-mini" and body["stream"] is True and body["store"] is False
    assert body["tool_choice"] == {"type": "image_generation"}
    assert body["tools"] == [{"type": "image_generation", "action": "generate", "model": "gpt-image-2",
                              "size": "1536x1024", "quality": "high", "output_compression": 80}]
    assert body["input"][0]["content"] == [{"type": "input_text", "text": "a red square"}]


@pytest_twisted.ensureDeferred
async def test_a_codex_account_edits_with_the_uploads_as_data_urls(stack):
    await stack.sdk(lambda c: c.images.edit(
        model="gpt-image-2", prompt="make it green", image=("photo.png", PHOTO, "image/png"),
        mask=("mask.png", MASK, "image/png"), input_fidelity="high"))
    body = stack.upstream.seen[-1].body
    tool = body["tools"][0]
    assert tool["action"] == "edit" and tool["input_fidelity"] == "high"
    assert tool["input_image_mask"] == {"image_url": "data:image/png;base64," + base64.b64encode(MASK).decode()}
    content = body["input"][0]["content"]
    assert content[1] == {"type": "input_image", "image_url": "data:image/png;base64," +
                          base64.b64encode(PHOTO).decode()}


@pytest.mark.parametrize("plan, serves", [("free", False), ("plus", True), ("team", True), (None, True)])
def test_a_free_codex_account_makes_no_images(tmp_path, plan, serves):
    from tests.test_identity import codex_account

    assert ("gpt-image-2" in codex_account(tmp_path, plan)) is serves


@pytest_twisted.ensureDeferred
async def test_gpt_image_2_base_model_runs_the_tool(tmp_path):
    from twisted.internet import reactor

    s = ImageStack(reactor, tmp_path, **{"gpt-image-2-base-model": "gpt-5.5"})
    try:
        await s.sdk(_generate("gpt-image-2"))
        assert s.upstream.seen[-1].body["model"] == "gpt-5.5"
    finally:
        await s.close()


# -- xAI: its own Images API --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_xai_key_makes_images_with_xais_aspect_ratio_and_resolution(stack):
    answer = await stack.sdk(_generate("grok-imagine-image", size="1792x1024", n=2))
    assert [base64.b64decode(d.b64_json) for d in answer.data] == [PICTURE, PICTURE]
    assert answer.usage.total_tokens == USAGE["total_tokens"]
    seen = stack.upstream.seen[-1]
    assert seen.path == "/v1/images/generations" and seen.key == "sk-xai-key"
    assert seen.body == {"model": "grok-imagine-image", "prompt": "a red square", "response_format": "b64_json",
                         "aspect_ratio": "16:9", "resolution": "1k", "n": 2}


@pytest_twisted.ensureDeferred
async def test_an_xai_edit_sends_the_upload_as_an_image_url(stack):
    answer = await stack.sdk(lambda c: c.images.edit(
        model="grok-imagine-image-quality", prompt="make it green", image=("photo.png", PHOTO, "image/png"),
        response_format="url"))
    assert answer.data[0].url == "data:image/png;base64," + PICTURE_B64
    seen = stack.upstream.seen[-1]
    assert seen.path == "/v1/images/edits"
    assert seen.body == {"model": "grok-imagine-image-quality", "prompt": "make it green", "response_format": "url",
                         "image": {"type": "image_url",
                                   "url": "data:image/png;base64," + base64.b64encode(PHOTO).decode()}}


# -- failover before a byte, and errors in OpenAI's shape ------------------------------------


@pytest.mark.parametrize("fault", ["status:429:30", "status:503", "status:500", "garbage:empty"])
@pytest_twisted.ensureDeferred
async def test_a_failing_key_fails_over_before_the_client_sees_a_byte(stack, fault):
    stack.upstream.script("sk-pics-1", fault)
    answer = await stack.sdk(_generate("pictures"))
    assert base64.b64decode(answer.data[0].b64_json) == PICTURE
    assert [r.key for r in stack.upstream.seen] == ["sk-pics-1", "sk-pics-2"]


@pytest_twisted.ensureDeferred
async def test_a_rate_limited_key_cools_and_the_next_request_skips_it(stack):
    stack.upstream.script("sk-pics-1", "status:429:30", "ok")
    await stack.sdk(_generate("pictures"))
    await stack.sdk(_generate("pictures"))
    assert [r.key for r in stack.upstream.seen] == ["sk-pics-1", "sk-pics-2", "sk-pics-2"]


@pytest_twisted.ensureDeferred
async def test_when_every_key_fails_the_client_gets_the_openai_error(stack):
    import openai

    stack.upstream.script("sk-pics-1", "status:429:30")
    stack.upstream.script("sk-pics-2", "status:429:30")
    with pytest.raises(openai.RateLimitError) as caught:
        await stack.sdk(_generate("pictures"))
    assert caught.value.status_code == 429
    assert "error" in caught.value.response.json()


@pytest_twisted.ensureDeferred
async def test_a_codex_stream_that_opens_with_an_error_is_that_error(stack):
    import openai

    stack.upstream.script("at-codex-a", "error-first")
    with pytest.raises(openai.APIStatusError) as caught:
        await stack.sdk(_generate("gpt-image-2"))
    assert caught.value.status_code >= 500


@pytest_twisted.ensureDeferred
async def test_an_upstream_refusal_of_the_request_is_answered_at_once(stack):
    import openai

    stack.upstream.script("sk-pics-1", "status:400")
    with pytest.raises(openai.BadRequestError) as caught:
        await stack.sdk(_generate("pictures"))
    # the upstream's own OpenAI error body, as it sent it
    assert caught.value.response.json()["error"]["message"] == "simulated failure 400"
    assert [r.key for r in stack.upstream.seen] == ["sk-pics-1"]


@pytest_twisted.ensureDeferred
async def test_a_key_that_does_not_serve_the_model_moves_on(stack):
    stack.upstream.script("sk-pics-1", "unsupported")
    answer = await stack.sdk(_generate("pictures"))
    assert answer.data
    assert [r.key for r in stack.upstream.seen] == ["sk-pics-1", "sk-pics-2"]


@pytest.mark.parametrize("model, code", [("gpt-image-2", "model_not_allowed"), ("pictures", "provider_not_allowed")])
@pytest_twisted.ensureDeferred
async def test_a_client_keys_scope_holds_on_the_image_routes(stack, model, code):
    import openai

    with pytest.raises(openai.PermissionDeniedError) as caught:
        await stack.sdk(_generate(model), key=SCOPED)
    assert caught.value.response.json()["error"]["code"] == code
    assert not stack.upstream.seen


@pytest_twisted.ensureDeferred
async def test_a_client_keys_tokens_count_the_images_usage(stack):
    import openai

    for _ in range(2):  # 1068 tokens each, by the upstream's usage: the second ends over 2000
        await stack.sdk(_generate("pictures"), key=METERED)
    with pytest.raises(openai.RateLimitError) as caught:
        await stack.sdk(_generate("pictures"), key=METERED)
    assert caught.value.response.json()["error"]["code"] == "client_key_limit"
    assert len(stack.upstream.seen) == 2


@pytest.mark.parametrize("model, status, words", [
    ("chatty", 400, "makes no images"),
    ("no-such-model", 404, "does not exist"),
])
@pytest_twisted.ensureDeferred
async def test_a_model_that_makes_no_images_is_a_4xx_naming_it(stack, model, status, words):
    import openai

    with pytest.raises(openai.APIStatusError) as caught:
        await stack.sdk(_generate(model))
    assert caught.value.status_code == status
    message = caught.value.response.json()["error"]["message"]
    assert model in message and words in message and "pictures" in message
    assert not stack.upstream.seen


@pytest_twisted.ensureDeferred
async def test_missing_prompts_and_images_are_refused(stack):
    response = await treq.post(stack.url + "/v1/images/generations", json={"model": "pictures"},
                               headers={"authorization": f"Bearer {CLIENT}"})
    assert response.code == 400 and b"prompt is required" in await response.content()
    response = await treq.post(stack.url + "/v1/images/edits", json={"model": "pictures", "prompt": "x"},
                               headers={"authorization": f"Bearer {CLIENT}"})
    assert response.code == 400 and b"image is required" in await response.content()
    assert not stack.upstream.seen


BOUNDARY = "b0undary"
FORM = "multipart/form-data; boundary=" + BOUNDARY


def form(*parts: str, end: bool = True) -> bytes:
    body = "".join(f"--{BOUNDARY}\r\n{p}\r\n" for p in parts) + (f"--{BOUNDARY}--\r\n" if end else "")
    return body.encode()


PROMPT = 'Content-Disposition: form-data; name="prompt"\r\n\r\nx'
IMAGE = 'Content-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\nPNG'


@pytest.mark.parametrize("path, body, content_type, words", [
    ("generations", b"", "application/json", b"not valid JSON"),
    ("generations", b"[1]", "application/json", b"JSON object"),
    ("generations", b'{"prompt": "x"}', "text/plain", b"unsupported Content-Type"),
    ("edits", form(PROMPT, IMAGE, end=False), FORM, b"cut short"),
    ("edits", form(PROMPT), FORM, b"image is required"),
    ("edits", form(IMAGE), FORM, b"prompt is required"),
    ("edits", form(PROMPT, IMAGE), "multipart/form-data", b"boundary"),
    ("edits", form('Content-Disposition: form-data\r\n\r\nx', IMAGE), FORM, b"no field name"),
])
@pytest_twisted.ensureDeferred
async def test_a_malformed_request_is_a_400_and_nothing_is_sent(stack, path, body, content_type, words):
    response = await treq.post(stack.url + "/v1/images/" + path, data=body,
                               headers={"authorization": f"Bearer {CLIENT}", "content-type": content_type})
    answer = await response.content()
    assert response.code == 400, answer
    assert words in answer and json.loads(answer)["error"]["type"] == "invalid_request_error"
    assert not stack.upstream.seen


@pytest_twisted.ensureDeferred
async def test_a_body_over_max_body_mb_is_a_413(tmp_path):
    from twisted.internet import reactor

    s = ImageStack(reactor, tmp_path, **{"max-body-mb": 0.01})
    try:
        response = await treq.post(s.url + "/v1/images/edits", data=form(PROMPT, IMAGE + "x" * 20_000),
                                   headers={"authorization": f"Bearer {CLIENT}", "content-type": FORM})
        assert response.code == 413 and b"max-body-mb" in await response.content()
        assert not s.upstream.seen
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_the_routes_check_the_client_key(stack):
    response = await treq.post(stack.url + "/v1/images/generations", json={"model": "pictures", "prompt": "x"})
    assert response.code == 401
    assert not stack.upstream.seen


@pytest.mark.parametrize("mode", [True, "true"])
@pytest_twisted.ensureDeferred
async def test_disable_image_generation_answers_404(tmp_path, mode):
    import openai
    from twisted.internet import reactor

    s = ImageStack(reactor, tmp_path, **{"disable-image-generation": mode})
    try:
        with pytest.raises(openai.NotFoundError) as caught:
            await s.sdk(_generate("pictures"))
        assert "disable-image-generation" in caught.value.response.json()["error"]["message"]
        with pytest.raises(openai.NotFoundError):
            await s.sdk(lambda c: c.images.edit(model="pictures", prompt="x", image=("p.png", PHOTO, "image/png")))
        assert not s.upstream.seen
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_the_routes_follow_a_reload(stack):
    import openai

    assert (await stack.sdk(_generate("pictures"))).data
    stack.config_data["disable-image-generation"] = True
    stack.write_config()
    assert await stack.runtime.reload()
    with pytest.raises(openai.NotFoundError):
        await stack.sdk(_generate("pictures"))
    stack.config_data["disable-image-generation"] = False
    stack.config_data["openai-compatibility"][0]["models"][0]["alias"] = "drawings"
    stack.write_config()
    assert await stack.runtime.reload()
    assert (await stack.sdk(_generate("drawings"))).data
    with pytest.raises(openai.NotFoundError):
        await stack.sdk(_generate("pictures"))


@pytest.mark.parametrize("mode", ["chat", "passthrough", False])
@pytest_twisted.ensureDeferred
async def test_the_other_modes_keep_the_routes(tmp_path, mode):
    from twisted.internet import reactor

    s = ImageStack(reactor, tmp_path, **{"disable-image-generation": mode})
    try:
        answer = await s.sdk(_generate("pictures"))
        assert answer.data
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_a_slow_image_gets_json_keepalives_then_its_answer(tmp_path):
    from twisted.internet import reactor

    s = ImageStack(reactor, tmp_path, **{"nonstream-keepalive-interval": 0.05})
    try:
        s.upstream.script("sk-pics-1", "slow:0.3")
        response = await treq.post(s.url + "/v1/images/generations", json={"model": "pictures", "prompt": "x"},
                                   headers={"authorization": f"Bearer {CLIENT}"})
        body = await response.content()
        assert response.code == 200 and body.startswith(b"\n")  # blank lines while the picture was drawn
        assert base64.b64decode(json.loads(body)["data"][0]["b64_json"]) == PICTURE
    finally:
        await s.close()


# -- image events (stream: true) ---------------------------------------------------------


def _events(stream) -> list:
    return [(e.type, e) for e in stream]


@pytest_twisted.ensureDeferred
async def test_a_streamed_generation_gets_openais_completed_event(stack):
    events = await stack.sdk(lambda c: _events(c.images.generate(model="pictures", prompt="x", stream=True)))
    [(kind, event)] = events
    assert kind == "image_generation.completed" and base64.b64decode(event.b64_json) == PICTURE
    assert event.usage.total_tokens == USAGE["total_tokens"]
    assert "stream" not in stack.upstream.seen[-1].body  # the upstream is asked for a whole answer


@pytest_twisted.ensureDeferred
async def test_a_codex_account_streams_its_partial_images_then_the_image(stack):
    events = await stack.sdk(lambda c: _events(c.images.generate(model="gpt-image-2", prompt="x", stream=True,
                                                                 partial_images=1, size="1024x1024")))
    assert [k for k, _ in events] == ["image_generation.partial_image", "image_generation.completed"]
    partial, done = events[0][1], events[1][1]
    assert partial.partial_image_index == 0 and base64.b64decode(partial.b64_json) == PICTURE
    assert done.size == "1024x1024" and done.usage.total_tokens == USAGE["total_tokens"]
    assert stack.upstream.seen[-1].body["tools"][0]["partial_images"] == 1


@pytest_twisted.ensureDeferred
async def test_a_streamed_edit_gets_image_edit_events(stack):
    events = await stack.sdk(lambda c: _events(c.images.edit(
        model="grok-imagine-image", prompt="x", image=("p.png", PHOTO, "image/png"), stream=True)))
    assert [k for k, _ in events] == ["image_edit.completed"]


@pytest_twisted.ensureDeferred
async def test_a_streamed_request_fails_over_and_its_failure_is_an_openai_error(stack):
    import openai

    stack.upstream.script("sk-pics-1", "status:503")
    events = await stack.sdk(lambda c: _events(c.images.generate(model="pictures", prompt="x", stream=True)))
    assert [k for k, _ in events] == ["image_generation.completed"]
    stack.upstream.script("sk-pics-2", "status:429:30")
    with pytest.raises(openai.RateLimitError):
        await stack.sdk(lambda c: _events(c.images.generate(model="pictures", prompt="x", stream=True)))


@pytest_twisted.ensureDeferred
async def test_a_stream_whose_keepalives_went_out_ends_with_an_error_event(tmp_path):
    import openai
    from twisted.internet import reactor

    s = ImageStack(reactor, tmp_path, streaming={"keepalive-seconds": 0.05}, timeouts={"response-seconds": 0.3})
    try:
        s.upstream.script("sk-pics-1", "hang")
        s.upstream.script("sk-pics-2", "hang")
        with pytest.raises(openai.APIError, match="no response within") as caught:
            await s.sdk(lambda c: _events(c.images.generate(model="pictures", prompt="x", stream=True)))
        # a 200 went out with the keep-alives: the failure came as the stream's error event
        assert not isinstance(caught.value, openai.APIStatusError)
    finally:
        await s.close()


# -- config ------------------------------------------------------------------------------


@pytest.mark.parametrize("top, path", [
    ({"disable-image-generation": "sometimes"}, "disable-image-generation"),
    ({"disable-image-generation": 3}, "disable-image-generation"),
    ({"gpt-image-2-base-model": "claude-opus-4-5"}, "gpt-image-2-base-model"),
    ({"openai-compatibility": [{"name": "p", "base-url": "http://x", "api-key-entries": [{"api-key": "k"}],
                                "models": [{"name": "m", "image": "yes"}]}]},
     "openai-compatibility[0].models[0].image"),
])
def test_bad_image_settings_name_their_yaml_path(top, path):
    with pytest.raises(ConfigError) as caught:
        parse_config(top)
    assert caught.value.path == path


def test_image_settings_load():
    config, warnings = parse_config({"disable-image-generation": "chat", "gpt-image-2-base-model": "gpt-5.5",
                                     "openai-compatibility": [{"name": "p", "base-url": "http://x",
                                                               "api-key-entries": [{"api-key": "k"}],
                                                               "models": [{"name": "m", "image": True}]}]})
    assert config.disable_image_generation == "chat" and config.gpt_image_2_base_model == "gpt-5.5"
    assert config.openai_compatibility[0].models[0].info.image is True
    assert warnings == []


def test_image_is_only_an_openai_compatibility_model_setting():
    _, warnings = parse_config({"claude-api-key": [{"api-key": "k", "models": [{"name": "m", "image": True}]}]})
    assert any("claude-api-key[0].models[0].image" in w and "unknown" in w for w in warnings)
