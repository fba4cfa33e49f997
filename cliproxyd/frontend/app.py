"""
The client routes: OpenAI-compatible chat completions and models, health.

Routes are thin: check access, decode, hand the request to the conductor,
render what comes back. Every error a client can see is rendered here, in
OpenAI's error shape; no traceback ever reaches a client.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable

from attrs import field as attrs_field
from attrs import frozen
from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import MethodNotAllowed, NotFound

from cliproxyd.conductor.conductor import (
    AllAttemptsFailed,
    AllCooling,
    Conductor,
    RequestInvalid,
    RequestMeta,
    UnknownModel,
)
from cliproxyd.executors.base import StreamReply, UpstreamError
from cliproxyd.formats import claude, openai_chat
from cliproxyd.formats.canonical import BadRequest
from cliproxyd.formats.translate import TranslatingConsumer, TranslatedRequest
from cliproxyd.frontend.access import AccessDenied, ClientAccess
from cliproxyd.logging import fingerprint

JSON = b"application/json"


class ClientError(Exception):
    """An error answer: status, body and extra headers."""

    def __init__(self, status: int, body: bytes, headers: dict[bytes, bytes] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def _error_type(status: int) -> tuple[str, str | None]:
    if status == 429:
        return "rate_limit_error", "rate_limit_exceeded"
    if status == 403:
        return "permission_error", "insufficient_quota"
    if status == 404:
        return "invalid_request_error", "model_not_found"
    if status >= 500:
        return "server_error", "internal_server_error"
    return "invalid_request_error", None


@frozen
class Problem:
    """What went wrong, before it is rendered in the client's format."""

    status: int
    message: str
    kind: str
    code: str | None = None
    headers: dict[bytes, bytes] = attrs_field(factory=dict)
    #: an upstream OpenAI-shaped error body an OpenAI client may get as it is
    upstream_body: bytes | None = None
    #: more fields for the error object (model_cooldown's reset time)
    extra: dict[str, Any] = attrs_field(factory=dict)


def cooling_problem(e: AllCooling) -> Problem:
    """CLIProxyAPI's model_cooldown answer: 429, Retry-After, and when the first credential is back."""
    seconds = math.ceil(e.reset_seconds) if e.reset_seconds is not None else None
    via = f" via provider {e.providers[0]}" if len(e.providers) == 1 else ""
    extra: dict[str, Any] = {
        "model": e.model,
        "reset_seconds": seconds,
        "reset_time": f"{seconds}s" if seconds is not None else None,
    }
    if len(e.providers) == 1:
        extra["provider"] = e.providers[0]
    headers = {b"retry-after": str(max(1, seconds)).encode()} if seconds is not None else {}
    return Problem(429, f"All credentials for model {e.model} are cooling down{via}", "rate_limit_error",
                   "model_cooldown", headers, extra=extra)


def upstream_problem(last: UpstreamError) -> Problem:
    """What the client sees when no credential could serve its request."""
    headers = {}
    if last.retry_after is not None:
        headers[b"retry-after"] = str(max(1, math.ceil(last.retry_after))).encode()
    if last.status in (401, 407):
        # The upstream rejected *our* credential; a 401 would tell the client
        # its own key is wrong.
        return Problem(502, f"upstream rejected the credential: {last.message}", "server_error",
                       "upstream_auth_failed", headers)
    if last.status:
        kind, code = _error_type(last.status)
        body = last.body if openai_chat.is_error_body(last.body) else None
        return Problem(last.status, last.message, kind, code, headers, upstream_body=body)
    status = 504 if last.kind == "timeout" else 502
    code = "upstream_timeout" if status == 504 else "upstream_unavailable"
    return Problem(status, f"upstream {last.kind}: {last.message}", "server_error", code, headers)


def render_openai(p: Problem) -> ClientError:
    if p.upstream_body is not None:
        return ClientError(p.status, p.upstream_body, p.headers)
    body = openai_chat.error_body(p.message, p.kind, p.code)
    if p.extra:
        data = json.loads(body)
        data["error"].update(p.extra)
        body = json.dumps(data, ensure_ascii=False).encode("utf-8")
    return ClientError(p.status, body, p.headers)


def render_claude(p: Problem) -> ClientError:
    extra = dict(p.extra)
    if p.code:
        extra["code"] = p.code
    return ClientError(p.status, claude.error_body(p.status, p.message, extra or None), p.headers)


class _ClientConsumer:
    """The client request as a relay sees it: quiet once the client is gone."""

    def __init__(self, request: IRequest) -> None:
        self._request = request
        self.gone = False
        request.notifyFinish().addBoth(self._finished)

    def _finished(self, _: object) -> None:
        self.gone = True

    def write(self, data: bytes) -> None:
        if not self.gone:
            self._request.write(data)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        if not self.gone:
            self._request.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        if not self.gone:
            self._request.unregisterProducer()


class Frontend:
    app = Klein()
    log = Logger()

    def __init__(
        self,
        conductor: Conductor,
        access: ClientAccess,
        clock: IReactorTime,
        management: IResource | None = None,
        session_affinity: bool = False,
    ) -> None:
        self.conductor = conductor
        self.access = access
        self.clock = clock
        self.management = management
        self.session_affinity = session_affinity
        self._created = int(clock.seconds())
        self._models_body = openai_chat.models_body(conductor.models(), self._created)

    def resource(self) -> IResource:
        return self.app.resource()

    # -- routes ---------------------------------------------------------------

    @app.route("/healthz", methods=["GET", "HEAD"])
    def healthz(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", JSON)
        return b'{"status":"ok"}'

    @app.route("/v1/models", methods=["GET"])
    def models(self, request: IRequest) -> bytes:
        self._check_access(request)
        request.setHeader(b"content-type", JSON)
        return self._models_body

    @app.route("/v1/chat/completions", methods=["POST"])
    async def chat_completions(self, request: IRequest) -> bytes:
        client_key = self._check_access(request, render_openai)
        try:
            req = openai_chat.decode_request(request.content.read())
        except BadRequest as e:
            raise render_openai(Problem(400, f"Invalid request: {e}", "invalid_request_error")) from None
        result = await self._conduct(req, client_key, render_openai)
        request.setResponseCode(result.status)
        request.setHeader(b"content-type", result.content_type)
        if not isinstance(result, StreamReply):
            return result.body
        consumer = self._stream_headers(request)
        error = await result.relay.attach(consumer)
        if error is not None:
            self.log.warn("stream for {model} ended early: {error}", model=req.model, error=error)
            consumer.write(openai_chat.stream_error_event(error))
        return b""

    @app.route("/v1/messages", methods=["POST"])
    async def claude_messages(self, request: IRequest) -> bytes:
        """Anthropic Messages, served by OpenAI-compatible upstreams through the canonical model."""
        client_key = self._check_access(request, render_claude)
        try:
            canonical = claude.decode_request(request.content.read())
        except BadRequest as e:
            raise render_claude(Problem(400, f"Invalid request: {e}", "invalid_request_error")) from None
        result = await self._conduct(TranslatedRequest(canonical), client_key, render_claude)
        if not isinstance(result, StreamReply):
            try:
                answer = openai_chat.response_to_canonical(json.loads(result.body))
            except (ValueError, UnicodeDecodeError, AttributeError):
                raise render_claude(Problem(502, "the upstream answer is not valid JSON", "server_error")) from None
            request.setHeader(b"content-type", JSON)
            return claude.encode_response(answer, canonical.model)
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream")
        consumer = TranslatingConsumer(self._stream_headers(request), claude.StreamEncoder(canonical.model))
        error = await result.relay.attach(consumer)
        if error is not None:
            self.log.warn("stream for {model} ended early: {error}", model=canonical.model, error=error)
            consumer.fail(error)
        else:
            consumer.close()
        return b""

    async def _conduct(self, req: Any, client_key: str | None, render: Callable[[Problem], ClientError]):
        meta = RequestMeta()
        if self.session_affinity and client_key:
            meta = RequestMeta(affinity_key=fingerprint(client_key))
        try:
            return await self.conductor.execute(req, meta)
        except UnknownModel as e:
            raise render(Problem(404, f"The model {e.model!r} does not exist or no credential serves it",
                                 "invalid_request_error", "model_not_found")) from None
        except AllAttemptsFailed as e:
            self.log.error(
                "all {attempts} credentials failed for {model}: {error}",
                attempts=e.attempts,
                model=e.model,
                error=str(e.last),
            )
            raise render(upstream_problem(e.last)) from None
        except AllCooling as e:
            raise render(cooling_problem(e)) from None
        except RequestInvalid as e:
            err = e.error
            body = err.body if openai_chat.is_error_body(err.body) else None
            raise render(Problem(err.status, err.message, "invalid_request_error", upstream_body=body)) from None

    def _stream_headers(self, request: IRequest) -> "_ClientConsumer":
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        return _ClientConsumer(request)

    @app.route("/v0/management", branch=True)
    def management_api(self, request: IRequest) -> Any:
        if self.management is None:
            raise NotFound()
        return self.management

    # -- errors ---------------------------------------------------------------

    def _check_access(
        self, request: IRequest, render: Callable[[Problem], ClientError] = render_openai
    ) -> str | None:
        try:
            return self.access.check(request)
        except AccessDenied as e:
            raise render(Problem(401, str(e), "invalid_request_error", "invalid_api_key")) from None

    @app.handle_errors(ClientError)
    def _client_error(self, request: IRequest, failure: Failure) -> bytes:
        e: ClientError = failure.value
        request.setResponseCode(e.status)
        request.setHeader(b"content-type", JSON)
        for name, value in e.headers.items():
            request.setHeader(name, value)
        return e.body

    @app.handle_errors(NotFound)
    def _not_found(self, request: IRequest, failure: Failure) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"content-type", JSON)
        path = request.path.decode("utf-8", "replace")
        return openai_chat.error_body(f"No route for {path}", "invalid_request_error", "not_found")

    @app.handle_errors(MethodNotAllowed)
    def _bad_method(self, request: IRequest, failure: Failure) -> bytes:
        request.setResponseCode(405)
        request.setHeader(b"content-type", JSON)
        method = request.method.decode("ascii", "replace")
        return openai_chat.error_body(f"{method} is not allowed here", "invalid_request_error")

    @app.handle_errors(Exception)
    def _internal(self, request: IRequest, failure: Failure) -> bytes:
        if failure.check(CancelledError):
            return b""  # the client went away; there is no one to answer
        self.log.failure("unhandled error on {path}", failure, path=request.path)
        request.setResponseCode(500)
        request.setHeader(b"content-type", JSON)
        return openai_chat.error_body("internal error", "server_error", "internal_server_error")

