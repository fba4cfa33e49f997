"""
The executors that serve Images API requests (L{cliproxyd.formats.images}),
each the chat executor of its kind with an C{images} method:

- an OpenAI-compatible provider (its model entries marked C{image: true})
  and a Codex API key: C{POST {base-url}/images/generations} or
  C{/images/edits}, the client's body (JSON or form) naming the upstream
  model, and the upstream's Images answer back as it is;
- a Codex account: the ChatGPT backend's C{/responses} stream with the
  C{image_generation} tool, run by C{gpt-image-2-base-model}, and the
  images of its C{response.completed} as the Images answer;
- an xAI account or key: xAI's C{/images/generations} or C{/images/edits}
  (JSON, with xAI's aspect ratio and resolution, uploads as data URLs), and
  its answer in OpenAI's shape.

A client that asks for a stream gets the answer as OpenAI's image events
(L{cliproxyd.formats.images.event_stream}), built from the whole answer.

A 2xx whose body is not an Images answer (no C{data} list, or no image in
it) is the attempt's failure, so the next credential is tried before the
client sees a byte; an error status fails over as any other does.
"""

from __future__ import annotations

from typing import Any

from cliproxyd.credentials import Credential
from cliproxyd.executors.accounts import XAIExecutor
from cliproxyd.executors.oauth import CodexOAuthExecutor
from cliproxyd.executors.stream import first_error, stream_error
from cliproxyd.executors.upstreams import CodexExecutor, HTTPExecutor, OpenAICompatExecutor
from cliproxyd.formats import images as I
from cliproxyd.formats.request import dumps
from cliproxyd.modelnames import parse_model
from cliproxyd.replies import Reply, UpstreamError

JSON = b"application/json"


def _no_images(what: str) -> UpstreamError:
    return UpstreamError("broken", f"the upstream answered without an image: {what}", status=502)


def _checked(answer: Any) -> dict[str, Any]:
    """An Images answer with at least one image (else the attempt's failure)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        raise _no_images("the answer has no data list")
    if not any(isinstance(d, dict) and (d.get("b64_json") or d.get("url")) for d in answer["data"]):
        raise _no_images("the data list is empty")
    return answer


def _reply(response: Any, req: I.ImageRequest, answer: dict[str, Any], body: bytes | None = None,
           partials: list[dict[str, Any]] | None = None) -> Reply:
    """The answer as the client asked for it: JSON (C{body}, when the upstream's passes as it is), or events."""
    if req.stream:
        return Reply(response.code, b"text/event-stream", I.event_stream(answer, req.endpoint, partials or ()),
                     fmt=I.NAME, data=answer, headers=response.headers)
    return Reply(response.code, JSON, dumps(answer) if body is None else body, fmt=I.NAME, data=answer,
                 headers=response.headers)


class _ImagesAPI(HTTPExecutor):
    """An upstream that speaks the Images API itself."""

    async def images(self, cred: Credential, req: I.ImageRequest, upstream: str) -> Reply:  # type: ignore[override]
        body, content_type = I.passthrough_body(req, parse_model(upstream).base)
        url = f"{cred.base_url}/images/{req.endpoint}"
        response = await self._send(cred, url, body, False, req, headers=((b"content-type", content_type),))
        answer = await self._read(response)
        return _reply(response, req, _checked(self._answer_object(cred, answer)), answer)


class CompatImagesExecutor(_ImagesAPI, OpenAICompatExecutor):
    """An OpenAI-compatible provider: chat completions, and the Images API for its image models."""


class CodexKeyImagesExecutor(_ImagesAPI, CodexExecutor):
    """A Codex API key: Responses, and the Images API (api.openai.com's) for gpt-image models."""


class CodexAccountImagesExecutor(CodexOAuthExecutor):
    """A Codex account: the backend's Responses stream, with the image_generation tool for images."""

    async def images(self, cred: Credential, req: I.ImageRequest, upstream: str) -> Reply:  # type: ignore[override]
        base_model = self._wire.image_base_model or I.DEFAULT_BASE_MODEL
        body = dumps(I.tool_request(req, parse_model(upstream).base, base_model))
        response = await self._send(cred, self.url(cred, base_model, True), body, True, req)
        whole = await self._read(response)
        partials: list[dict[str, Any]] = []
        answer = I.images_answer(whole, req.response_format, self._clock.seconds(), partials)
        if answer is None:
            error = first_error(whole, self.format)
            if error is not None:
                raise stream_error(*error, self.format.NAME, self._clock.seconds(), self.redact(cred))
            raise UpstreamError("broken", "the Codex stream ended without response.completed", status=502)
        return _reply(response, req, _checked(answer), partials=partials)


class XAIImagesExecutor(XAIExecutor):
    """An xAI account or key: Responses, and xAI's Images API for the grok-imagine models."""

    async def images(self, cred: Credential, req: I.ImageRequest, upstream: str) -> Reply:  # type: ignore[override]
        body = I.xai_body(req, parse_model(upstream).base)
        response = await self._send(cred, f"{cred.base_url}/images/{req.endpoint}", body, False, req)
        answer = await self._read(response)
        return _reply(response, req, _checked(I.xai_answer(self._answer_object(cred, answer), req.response_format,
                                                           self._clock.seconds())))
