"""
A simulated upstream with scriptable faults per API key, speaking all four
wire formats: OpenAI chat completions (C{/v1/chat/completions}), OpenAI
Responses (C{/v1/responses}), Anthropic Messages (C{/v1/messages} and its
count; an OAuth bearer there must come with Claude Code's identity, its
OAuth beta, user agent and system prompt, as Anthropic's does) and Gemini
(C{/v1beta/models/M:generateContent}, C{:streamGenerateContent?alt=sse},
C{:countTokens}; Google's Interactions API, C{/v1beta/interactions}; Vertex AI's paths for the same,
C{/v1/projects/P/locations/L/publishers/google/models/M:...} with a bearer and
C{/v1/publishers/google/models/M:...} with a key; and Code Assist's
C{v1internal} with its accounts' projects, L{CodeAssistAccounts}), each with
its own key header, stream framing and error bodies; and image models
(C{/v1/images/generations}, C{/v1/images/edits}, the Codex backend's
image_generation tool: L{cliproxyd.testing.images}).

It also serves the usage endpoints reset probes read, in their real shapes
(L{cliproxyd.testing.quota.AccountQuota}): Claude OAuth's
C{GET /api/oauth/usage} (with the OAuth beta), Codex's
C{GET /backend-api/wham/usage}, and Code Assist's C{retrieveUserQuota}
(Gemini CLI) and C{fetchAvailableModels} (Antigravity); L{set_quota} sets
what an account's report says, L{usage_seen} records what was asked.

Used by the tests, the benchmarks and C{twistd cliproxyd --demo}. Each key
has a script: a list of behaviours, one consumed per request, the last one
repeating. A behaviour is one of::

    ok                 answer (JSON, or SSE when the request streams)
    status:CODE[:S]    fail with HTTP CODE and an error body of the format; S adds Retry-After: S
    unsupported[:CODE] a 400 (or CODE) saying the model is not supported for this key
    hang               never answer (until the client goes away)
    cut:N              stream N events (the opening one is the first), then drop
                       the connection (without streaming: drop it before answering)
    stall:N            stream N events, then go silent
    slow:S             wait S seconds before each chunk (or before the answer)
    error-event        open a 200 stream whose first event is an error
    error-first[:F]    a 200 stream whose first event is an error, the body
                       ended in the same write (without streaming: a 200 whose
                       body is that error object); F picks the error's shape,
                       whatever the route (default: the route format's own):
                       openai, openai-spaced (whitespace inside the object),
                       claude (overloaded_error), responses (a rate-limit
                       error event), responses-failed (response.failed),
                       gemini (RESOURCE_EXHAUSTED with a retryDelay of 7s),
                       gemini-array (that error as a JSON array, no SSE)
    preamble-error[:F] the same error after the events a stream opens with
                       before any content (Claude message_start and a ping,
                       OpenAI's role-only chunk, Responses' response.created
                       and response.in_progress)
    overloaded         the provider is overloaded: a stream opens with the
                       preamble and the format's overload error event; a
                       whole answer is a 529 (Claude) or 503 overload error
    keepalive:S        a stream that sends its preamble, then a keep-alive
                       (a Claude ping, an SSE comment otherwise) every S
                       seconds, and never any content
    error-after:N      stream N events, then the format's own error event, and
                       end the body (an error after content)
    end-early:N[:close] stream N events, then end the body cleanly
                       without the format's final event; with close, the
                       answer has neither a length nor chunking and the
                       connection is closed (a close-delimited body)
    garbage:K          a 200 whose body is unusable, streamed or not: K is
                       truncated (half of the JSON answer), empty, or html
    bytes:N            stream about N bytes of content as fast as the client
                       reads (it honours backpressure)

Run it alone with C{python -m cliproxyd.testing.upstream --port 18080
--script sk-bad=status:429:5 --script sk-good=ok}. Control routes, for tests
that drive it from outside: C{POST /_sim/script} with C{{"KEY": ["spec",
...]}}, C{GET /_sim/requests} (what it was asked), C{POST /_sim/reset}.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from types import ModuleType
from typing import Any

from attrs import define, field, frozen
from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.task import deferLater
from twisted.web.iweb import IRequest
from zope.interface import implementer

from cliproxyd import jsontext
from cliproxyd.formats import canonical as C
from cliproxyd.formats import claude, common, gemini, interactions, openai_chat, responses
from cliproxyd.formats.translate import SSEParser
from cliproxyd.testing import images
from cliproxyd.testing.codeassist import CodeAssistAccounts
from cliproxyd.testing.quota import AccountQuota

JSON = b"application/json"

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "sim-small")
#: The models Code Assist's quota answers list (with C{models}).
GOOGLE_MODELS = ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-3-pro-preview", "gemini-3-flash-preview")


#: The shapes of an in-stream error that C{error-first:F} and C{preamble-error:F} can send.
ERROR_SHAPES = ("openai", "openai-spaced", "claude", "responses", "responses-failed", "gemini", "gemini-array")
#: The unusable bodies of C{garbage:K}.
GARBAGE = ("truncated", "empty", "html")

#: behaviour -> (what each of its arguments is, in order: C{float}, or the
#: words it may be; how many of them must be given)
_ARGS: dict[str, tuple[tuple[Any, ...], int]] = {
    "ok": ((), 0), "status": ((float, float), 1), "hang": ((), 0), "cut": ((float,), 1),
    "stall": ((float,), 1), "slow": ((float,), 1), "error-event": ((), 0), "bytes": ((float,), 1),
    "unsupported": ((float,), 0), "error-first": ((ERROR_SHAPES,), 0), "preamble-error": ((ERROR_SHAPES,), 0),
    "overloaded": ((), 0), "keepalive": ((float,), 1), "error-after": ((float,), 1),
    "end-early": ((float, ("close",)), 1), "garbage": ((GARBAGE,), 1),
}


@frozen
class Behaviour:
    name: str
    args: tuple[Any, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> "Behaviour":
        name, *rest = spec.strip().split(":")
        if name not in _ARGS:
            raise ValueError(f"unknown behaviour {spec!r}; one of: {', '.join(_ARGS)}")
        kinds, required = _ARGS[name]
        if not required <= len(rest) <= len(kinds):
            raise ValueError(f"behaviour {spec!r} takes {required}..{len(kinds)} arguments")
        args: list[Any] = []
        for kind, arg in zip(kinds, rest):
            if kind is float:
                try:
                    args.append(float(arg))
                except ValueError:
                    raise ValueError(f"behaviour {spec!r}: {arg!r} is not a number") from None
            elif arg in kind:
                args.append(arg)
            else:
                raise ValueError(f"behaviour {spec!r}: {arg!r} is not one of {', '.join(kind)}")
        return cls(name, tuple(args))


@define
class SeenRequest:
    key: str
    model: str
    stream: bool
    behaviour: str
    disconnected: bool = False
    bytes_sent: int = 0
    #: the wire format asked in, and the body as it arrived
    format: str = "openai"
    body: Any = field(default=None, repr=False)
    #: the request's headers (lower-case names, first values) and, for v1internal, its envelope
    headers: dict[str, str] = field(factory=dict, repr=False)
    envelope: dict[str, Any] = field(factory=dict, repr=False)
    path: str = ""
    #: the address the request came from (a proxy's, when one carried it)
    peer: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "model": self.model,
            "stream": self.stream,
            "behaviour": self.behaviour,
            "disconnected": self.disconnected,
            "bytes_sent": self.bytes_sent,
            "format": self.format,
            "peer": self.peer,
            "path": self.path,
        }


@implementer(IPushProducer)
class _Flood:
    """Writes SSE content chunks while the client keeps up; pauses when it does not."""

    def __init__(self, request: IRequest, chunk: bytes, total: int, seen: SeenRequest) -> None:
        self._request = request
        self._chunk = chunk
        self._total = total
        self._seen = seen
        self._paused = False
        self.stopped = False
        self.done: Deferred[None] = Deferred()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        while not self._paused and not self.done.called and self._seen.bytes_sent < self._total:
            self._seen.bytes_sent += len(self._chunk)
            self._request.write(self._chunk)
        if self._seen.bytes_sent >= self._total and not self.done.called:
            self._request.unregisterProducer()
            self.done.callback(None)

    def stopProducing(self) -> None:
        # The connection is closing: unregister now, while the request still
        # has its channel, and tell the route not to write any more.
        self.stopped = True
        self._seen.disconnected = True
        self._request.unregisterProducer()
        if not self.done.called:
            self.done.callback(None)


#: How many requests C{seen} remembers (it runs under load in benchmarks).
SEEN_LIMIT = 1000


@define(slots=False)
class SimulatedUpstream:
    clock: IReactorTime
    scripts: dict[str, list[Behaviour]] = field(factory=dict)
    #: when set, keys not in it get a 401, like a real provider
    known_keys: frozenset[str] | None = None
    models: tuple[str, ...] = DEFAULT_MODELS
    seen: deque[SeenRequest] = field(factory=lambda: deque(maxlen=SEEN_LIMIT))
    #: Code Assist's accounts and their projects (loadCodeAssist, onboardUser)
    code_assist_accounts: CodeAssistAccounts = field(factory=CodeAssistAccounts)
    #: key -> the rate-limit headers its answers carry (see L{ratelimit_headers})
    ratelimits: dict[str, dict[bytes, bytes]] = field(factory=dict)
    #: token -> its quota as the usage endpoints report it (see L{set_quota}); full when not set
    quotas: dict[str, AccountQuota] = field(factory=dict)
    #: the usage endpoints' requests: (path, token, headers)
    usage_seen: list[tuple[str, str, dict[str, str]]] = field(factory=list)
    _counter: int = 0

    app = Klein()

    def resource(self):
        return self.app.resource()

    def script(self, key: str, *specs: str) -> None:
        """Set the behaviours of C{key}: one per request, the last one repeating."""
        self.scripts[key] = [Behaviour.parse(s) for s in specs]

    def limit(self, key: str, family: str, left: float, reset_seconds: float = 60.0) -> None:
        """Answers for C{key} report C{left} (0 to 1) of its limit, in C{family}'s real header shape."""
        self.ratelimits[key] = ratelimit_headers(family, left, reset_seconds, self.clock.seconds())

    def set_quota(self, token: str, left: float, reset_seconds: float = 3600.0) -> None:
        """The usage endpoints report C{left} (0 to 1) of C{token}'s window, resetting in C{reset_seconds}."""
        self.quotas[token] = AccountQuota(left, self.clock.seconds() + reset_seconds)

    def _quota(self, request: IRequest, token: str) -> AccountQuota | None:
        """Record a usage request; its account's quota, or None (a 401 set) for a key not known."""
        headers = {k.decode("latin-1").lower(): v[0].decode("latin-1")
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        self.usage_seen.append((request.path.decode(), token, headers))
        request.setHeader(b"content-type", JSON)
        if not token or (self.known_keys is not None and token not in self.known_keys):
            request.setResponseCode(401)
            return None
        return self.quotas.get(token) or AccountQuota(1.0, self.clock.seconds() + 18000)

    # -- the providers' usage endpoints (reset probes read them) ---------------------

    @app.route("/api/oauth/usage", methods=["GET"])
    def claude_usage(self, request: IRequest) -> bytes:
        """Claude OAuth's usage; Anthropic serves it only with the OAuth beta."""
        token = _bearer(request)
        if "oauth-2025-04-20" not in _header(request, b"anthropic-beta"):
            token = ""
        quota = self._quota(request, token)
        if quota is None:
            return claude.error_body(401, "OAuth authentication is currently not supported.")
        return json.dumps(quota.claude()).encode()

    @app.route("/backend-api/wham/usage", methods=["GET"])
    def codex_usage(self, request: IRequest) -> bytes:
        quota = self._quota(request, _bearer(request))
        if quota is None:
            return json.dumps({"detail": "Unauthorized"}).encode()
        return json.dumps(quota.codex(self.clock.seconds())).encode()

    def _next(self, key: str) -> Behaviour:
        script = self.scripts.get(key)
        if not script:
            return Behaviour("ok")
        return script.pop(0) if len(script) > 1 else script[0]

    # -- the four wire formats ------------------------------------------------

    @app.route("/v1/models", methods=["GET"])
    def list_models(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", JSON)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "simulated"} for m in self.models]
        return json.dumps({"object": "list", "data": data}).encode()

    @app.route("/v1/chat/completions", methods=["POST"])
    def chat(self, request: IRequest) -> Any:
        return self._serve(request, openai_chat, _bearer(request))

    @app.route("/v1/responses", methods=["POST"])
    def responses_api(self, request: IRequest) -> Any:
        return self._serve(request, responses, _bearer(request))

    @app.route("/v1/responses/compact", methods=["POST"])
    def responses_compact(self, request: IRequest) -> Any:
        """OpenAI's compaction of a Responses conversation: one C{response.compaction} object, never a stream."""
        return self._serve(request, responses, _bearer(request), compact=True)

    @app.route("/v1/messages", methods=["POST"])
    def claude_api(self, request: IRequest) -> Any:
        if not _header(request, b"x-api-key"):
            # An OAuth bearer: Anthropic serves it only to what looks like Claude Code.
            problem = _claude_code_identity_problem(request)
            if problem is not None:
                request.setHeader(b"content-type", JSON)
                return self._error(request, claude, problem[0], problem[1], problem[2])
        return self._serve(request, claude, _claude_key(request))

    @app.route("/v1/messages/count_tokens", methods=["POST"])
    def messages_count(self, request: IRequest) -> Any:
        return self._serve(request, claude, _claude_key(request), count=True)

    @app.route("/backend-api/codex/responses", methods=["POST"])
    def codex_backend(self, request: IRequest) -> Any:
        """The ChatGPT Codex backend: Responses, but only as a stream (its image tool: L{images})."""
        raw = request.content.read()
        request.content.seek(0)
        try:
            body = jsontext.loads(raw)
        except ValueError:
            body = None
        tool = images.image_tool(body) if isinstance(body, dict) else None
        if tool is not None:
            return self._image_tool(request, body, tool)
        return self._serve(request, responses, _bearer(request), stream_only=True)

    @app.route("/backend-api/codex/responses/compact", methods=["POST"])
    def codex_backend_compact(self, request: IRequest) -> Any:
        """The ChatGPT Codex backend's compaction: answered whole, like OpenAI's."""
        return self._serve(request, responses, _bearer(request), compact=True)

    # -- image models (cliproxyd.testing.images) ---------------------------------------

    @app.route("/v1/images/generations", methods=["POST"])
    def images_generations(self, request: IRequest) -> Any:
        return self._images(request, "generations")

    @app.route("/v1/images/edits", methods=["POST"])
    def images_edits(self, request: IRequest) -> Any:
        return self._images(request, "edits")

    def _seen_image(self, request: IRequest, key: str, model: str, fmt: str, body: Any) -> Behaviour:
        behaviour = self._next(key)
        self.seen.append(SeenRequest(key=key, model=model, stream=False, behaviour=behaviour.name, format=fmt,
                                     body=body, headers=_headers_of(request),
                                     path=request.path.decode("latin-1")))
        self._counter += 1
        return behaviour

    async def _refused(self, request: IRequest, fmt: ModuleType, b: Behaviour, model: str) -> bytes | None:
        """The answer of a behaviour that refuses or never answers; None for one that answers (slow: later)."""
        if b.name == "status":
            if len(b.args) > 1:
                request.setHeader(b"retry-after", b"%d" % int(b.args[1]))
            code = int(b.args[0])
            return self._error(request, fmt, code, f"simulated failure {code}", _error_kind(code))
        if b.name == "unsupported":
            return self._error(request, fmt, int(b.args[0]) if b.args else 400,
                               f"The requested model is not supported: {model}", "invalid_request_error",
                               "model_not_supported")
        if b.name == "hang":
            await Deferred()
        if b.name == "slow":
            await deferLater(self.clock, b.args[0])
        return None

    async def _images(self, request: IRequest, endpoint: str) -> bytes:
        request.setHeader(b"content-type", JSON)
        key = _bearer(request)
        try:
            body = images.read_images_request(endpoint, request.content.read(),
                                              request.getHeader(b"content-type") or b"")
        except (ValueError, C.BadRequest, UnicodeDecodeError) as e:
            return self._error(request, openai_chat, 400, f"invalid request: {e}", "invalid_request_error")
        if self.known_keys is not None and key not in self.known_keys:
            return self._error(request, openai_chat, 401, "Incorrect API key provided", "authentication_error",
                               "invalid_api_key")
        model = str(body.get("model", ""))
        b = self._seen_image(request, key, model, "images", body)
        refused = await self._refused(request, openai_chat, b, model)
        if refused is not None:
            return refused
        if b.name == "garbage":
            return b'{"created":1,"data":[]}'
        return json.dumps(images.images_answer(body, int(self.clock.seconds()))).encode()

    async def _image_tool(self, request: IRequest, body: dict[str, Any], tool: dict[str, Any]) -> bytes:
        request.setHeader(b"content-type", JSON)
        key = _bearer(request)
        model = str(body.get("model", ""))
        b = self._seen_image(request, key, model, "responses", body)
        refused = await self._refused(request, responses, b, model)
        if refused is not None:
            return refused
        request.setHeader(b"content-type", b"text/event-stream")
        if b.name == "error-first":
            return _stream_error(responses, b.args[0] if b.args else None)
        return images.tool_stream(body, tool, int(self.clock.seconds()), f"resp_sim{self._counter}")

    @app.route("/v1internal:<method>", methods=["POST"])
    def code_assist(self, request: IRequest, method: str) -> Any:
        """Google Code Assist (Gemini CLI, Antigravity): Gemini bodies inside a C{model}/C{project} envelope."""
        key = _bearer(request)
        if method == "countTokens":
            return self._serve(request, gemini, key, count=True, envelope=True)
        if method in ("retrieveUserQuota", "fetchAvailableModels"):
            quota = self._quota(request, key)
            if quota is None:
                return gemini.error_body(401, "Request had invalid authentication credentials.")
            models = GOOGLE_MODELS + self.models
            return json.dumps(quota.gemini_cli(models) if method == "retrieveUserQuota"
                              else quota.antigravity(models)).encode()
        if method in ("loadCodeAssist", "onboardUser"):
            request.setHeader(b"content-type", JSON)
            try:
                body = jsontext.loads(request.content.read())
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return self._error(request, gemini, 400, "invalid request", "INVALID_ARGUMENT")
            accounts = self.code_assist_accounts
            return json.dumps(accounts.load(key, body) if method == "loadCodeAssist"
                              else accounts.onboard(key, body)).encode()
        if method in ("generateContent", "streamGenerateContent"):
            if not _enveloped_project(request):
                request.setHeader(b"content-type", JSON)
                return self._error(request, gemini, 400, "Invalid project resource name: projects/",
                                   "INVALID_ARGUMENT")
            return self._serve(request, gemini, key, stream=method == "streamGenerateContent", envelope=True)
        request.setResponseCode(404)
        return gemini.error_body(404, f"unknown method {method}")

    @app.route("/v1beta/models/<path:target>", methods=["POST"])
    def gemini_api(self, request: IRequest, target: str) -> Any:
        return self._gemini(request, target, _header(request, b"x-goog-api-key"))

    @app.route("/v1/projects/<project>/locations/<location>/publishers/google/models/<path:target>",
               methods=["POST"])
    def vertex_api(self, request: IRequest, project: str, location: str, target: str) -> Any:
        """Vertex AI for a service account: Gemini bodies, the project and location in the path, a bearer."""
        return self._gemini(request, target, _bearer(request))

    @app.route("/v1/publishers/google/models/<path:target>", methods=["POST"])
    def vertex_express(self, request: IRequest, target: str) -> Any:
        """Vertex AI with an API key (express mode): C{x-goog-api-key}, no project."""
        return self._gemini(request, target, _header(request, b"x-goog-api-key"))

    @app.route("/v1beta/interactions", methods=["POST"])
    def interactions_api(self, request: IRequest) -> Any:
        """Google's Interactions API: C{x-goog-api-key}, the model and the stream flag in the body."""
        return self._serve(request, interactions, _header(request, b"x-goog-api-key"))

    def _gemini(self, request: IRequest, target: str, key: str) -> Any:
        model, _, method = target.rpartition(":")
        if method == "countTokens":
            return self._serve(request, gemini, key, model, count=True)
        if method in ("generateContent", "streamGenerateContent"):
            return self._serve(request, gemini, key, model, stream=method == "streamGenerateContent")
        request.setResponseCode(404)
        return gemini.error_body(404, f"unknown method {method}")

    async def _serve(self, request: IRequest, fmt: ModuleType, key: str, model: str | None = None,
                     stream: bool | None = None, count: bool = False, envelope: bool = False,
                     stream_only: bool = False, compact: bool = False) -> bytes:
        request.setHeader(b"content-type", JSON)
        # Headers a real provider answers with: one a client may want (passthrough-headers), and
        # one a gateway in front of it adds (never passed on).
        request.setHeader(b"x-ratelimit-remaining-requests", b"%d" % (999 - self._counter))
        request.setHeader(b"x-litellm-model-id", b"sim")
        for name, value in self.ratelimits.get(key, {}).items():
            request.setHeader(name, value)
        outer: dict[str, Any] = {}
        try:
            data = jsontext.loads(request.content.read())  # strictly, and without recursion, as the daemon reads
            if envelope:
                outer, data = data, data["request"]
                if count:
                    data = {"contents": data.get("contents", [])}
                model = str(outer.get("model") or data.get("model") or "").removeprefix("models/")
            if not count:
                body_model, body_stream = fmt.validate(data)
            else:
                body_model, body_stream = model or str(data.get("model", "")), False
            req = fmt.request_to_canonical(data)
        except (ValueError, KeyError, TypeError, C.BadRequest, AttributeError) as e:
            return self._error(request, fmt, 400, f"invalid request: {e}", "invalid_request_error")
        model = body_model if model is None else model
        stream = body_stream if stream is None else stream
        if stream_only and not stream:
            return self._error(request, fmt, 400, "Stream must be set to true", "invalid_request_error")
        if compact and "stream" in data:
            return self._error(request, fmt, 400, "Unsupported parameter: 'stream'", "invalid_request_error")
        if self.known_keys is not None and key not in self.known_keys:
            return self._error(request, fmt, 401, "Incorrect API key provided", "authentication_error",
                               "invalid_api_key")
        behaviour = self._next(key)
        seen = SeenRequest(key=key, model=model, stream=stream, behaviour=behaviour.name, format=fmt.NAME,
                           body=data, envelope={k: v for k, v in outer.items() if k != "request"},
                           headers=_headers_of(request),
                           path=request.path.decode("latin-1"),
                           peer=getattr(request.getClientAddress(), "host", ""))
        self.seen.append(seen)
        request.notifyFinish().addErrback(lambda _: setattr(seen, "disconnected", True))
        self._counter += 1
        b = behaviour
        if b.name == "status":
            code = int(b.args[0])
            if len(b.args) > 1:
                request.setHeader(b"retry-after", b"%d" % int(b.args[1]))
            return self._error(request, fmt, code, f"simulated failure {code}", _error_kind(code))
        if b.name == "unsupported":
            code = int(b.args[0]) if b.args else 400
            return self._error(request, fmt, code, f"The requested model is not supported: {model}",
                               "invalid_request_error", "model_not_supported")
        if b.name == "hang":
            await Deferred()
        if b.name == "cut" and not stream:
            request.channel.transport.abortConnection()
            return b""
        if b.name == "slow" and not stream:
            await deferLater(self.clock, b.args[0])
        if count:
            return json.dumps(fmt.count_body(5 + len(json.dumps(data)) // 40)).encode()
        answer = self._answer(req, model, key)
        if b.name == "garbage":
            return _garbage(request, b.args[0], fmt.response_from_canonical(answer, model))
        if compact:
            return json.dumps(_compaction(answer, req)).encode()
        if b.name == "error-first" and not stream:
            return _error_object(fmt, b.args[0] if b.args else None)
        if b.name == "overloaded" and not stream:
            status = 529 if fmt is claude else 503
            return self._error(request, fmt, status, "simulated overload", *_OVERLOAD_KINDS[fmt.NAME])
        if not stream:
            body = fmt.response_from_canonical(answer, model)
            return json.dumps({"response": body, "traceId": "sim"} if envelope else body).encode()
        return await self._stream(request, fmt, b, answer, seen, envelope)

    def _answer(self, req: C.Request, model: str, key: str) -> C.Response:
        """What the simulated model says: a greeting, a call of the first tool, or what a tool said."""
        reply_id = f"sim-{self._counter}"
        last = req.messages[-1].parts if req.messages else ()
        results = [p for p in last if isinstance(p, C.ToolResult)]
        if results:
            return _response(reply_id, model, f"The tool said: {results[-1].content}")
        if req.tools and req.tool_choice != "none":
            call = C.ToolCall(f"call_sim_{self._counter}", req.tools[0].name, '{"city": "Paris"}')
            return C.Response(reply_id, model, (call,), C.TOOL_CALLS, C.Usage(5, 3))
        return _response(reply_id, model, f"Hello from the simulated upstream (key ...{key[-6:]}).")

    async def _stream(self, request: IRequest, fmt: ModuleType, b: Behaviour, answer: C.Response,
                      seen: SeenRequest, envelope: bool = False) -> bytes:
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-cache")
        encoder = fmt.StreamEncoder(answer.model)
        wrap = _enveloped if envelope else (lambda data: data)
        if b.name == "end-early" and b.args[1:] == ("close",):
            # Neither a length nor chunking: the body is what comes before the close.
            await _close_delimited(request, wrap(_content_events(encoder, answer, int(b.args[0]))))
        request.write(b"")  # send the headers now, whatever follows
        if b.name == "error-event":
            request.write(fmt.stream_error_event("simulated in-stream error"))
            return b""
        if b.name in ("error-first", "preamble-error", "overloaded"):
            shape = b.args[0] if b.args else None
            if shape == "gemini-array":
                error = b"[" + _GEMINI_QUOTA + b"]"
            else:
                error = wrap(_stream_error(fmt, shape, overloaded=b.name == "overloaded"))
            head = b"" if b.name == "error-first" else wrap(_preamble(fmt, encoder, answer))
            # Returning at once: the end of the body goes out in the same write.
            request.write(head + error)
            return b""
        if b.name == "keepalive":
            request.write(wrap(_preamble(fmt, encoder, answer)))
            while True:  # until the client goes away (the route is cancelled)
                await deferLater(self.clock, b.args[0])
                request.write(_KEEPALIVE[fmt is claude])
        if b.name in ("end-early", "error-after"):
            events = _content_events(encoder, answer, int(b.args[0]))
            if b.name == "error-after":
                events += fmt.stream_error_event("simulated error after content")
            request.write(wrap(events))
            return b""
        if b.name == "bytes":
            request.write(encoder.feed(C.Start(answer.id, answer.model)) + encoder.feed(C.TextDelta("")))
            flood = _Flood(request, encoder.feed(C.TextDelta("x" * 4000)), int(b.args[0]), seen)
            request.registerProducer(flood, True)
            flood.resumeProducing()
            await flood.done
            if not flood.stopped:
                request.write(encoder.feed(C.Finish(C.STOP)) + encoder.close())
            return b""
        limit = int(b.args[0]) if b.name in ("cut", "stall") else None
        written = 0
        for event in _events(answer):
            data = encoder.feed(event)
            if not data:
                continue
            if envelope:
                data = _enveloped(data)
            if limit is not None and written >= limit:
                if b.name == "cut":
                    request.channel.transport.abortConnection()
                    return b""
                await Deferred()  # stall: silent until the client goes away
            if b.name == "slow":
                await deferLater(self.clock, b.args[0])
            seen.bytes_sent += len(data)
            request.write(data)
            written += 1
        tail = encoder.close()
        request.write(_enveloped(tail) if envelope else tail)
        return b""

    def _error(self, request: IRequest, fmt: ModuleType, status: int, message: str, kind: str,
               code: str | None = None) -> bytes:
        request.setResponseCode(status)
        extra: dict[str, Any] = {"type": kind}
        if code:
            extra["code"] = code
        return fmt.error_body(status, message, extra)

    # -- control routes -------------------------------------------------------

    @app.route("/_sim/script", methods=["POST"])
    def set_script(self, request: IRequest) -> bytes:
        for key, specs in json.loads(request.content.read()).items():
            self.script(key, *specs)
        request.setHeader(b"content-type", JSON)
        return b'{"ok":true}'

    @app.route("/_sim/requests", methods=["GET"])
    def requests(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", JSON)
        return json.dumps([s.as_json() for s in self.seen]).encode()

    @app.route("/_sim/reset", methods=["POST"])
    def reset(self, request: IRequest) -> bytes:
        self.seen.clear()
        self.scripts.clear()
        request.setHeader(b"content-type", JSON)
        return b'{"ok":true}'


#: The Gemini error of C{error-first:gemini}: a quota refusal with a retry hint.
_GEMINI_QUOTA = (b'{"error": {"code": 429, "message": "simulated quota exhausted", "status": "RESOURCE_EXHAUSTED",'
                 b' "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]}}')

#: The in-stream errors of C{error-first:F}, by shape.
_ERROR_EVENTS = {
    "openai": b'data: {"error":{"message":"simulated in-stream error","type":"server_error","code":null}}\n\n',
    "openai-spaced": b'data: { "error" : { "message" : "simulated rate limit", "type" : "rate_limit_error",'
                     b' "code" : "rate_limit_exceeded" } }\n\n',
    "claude": b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
              b"\n\n",
    "responses": b'event: error\ndata: {"type":"error","code":"rate_limit_exceeded","message":"simulated rate limit",'
                 b'"param":null,"sequence_number":0}\n\n',
    "responses-failed": b'event: response.failed\ndata: {"type":"response.failed","sequence_number":2,"response":'
                        b'{"id":"resp_sim","object":"response","status":"failed","output":[],'
                        b'"error":{"code":"server_error","message":"simulated failure"}}}\n\n',
    "gemini": b"data: " + _GEMINI_QUOTA + b"\r\n\r\n",
}

#: The overload error a stream of each format opens with (C{overloaded}).
_OVERLOAD_EVENTS = {
    "openai": b'data: {"error":{"message":"simulated overload","type":"server_error","code":"server_is_overloaded"}}'
              b"\n\n",
    "claude": _ERROR_EVENTS["claude"],
    "responses": b'event: error\ndata: {"type":"error","code":"server_is_overloaded","message":"simulated overload",'
                 b'"param":null,"sequence_number":0}\n\n',
    "gemini": b'data: {"error": {"code": 503, "message": "simulated overload", "status": "UNAVAILABLE"}}\r\n\r\n',
    "interactions": b'event: error\ndata: {"event_type":"error","error":{"code":"503","message":"simulated overload"}}'
                    b"\n\n",
}
#: The error type (and code) of a whole answer refused by C{overloaded}.
_OVERLOAD_KINDS = {"openai": ("server_error", "server_is_overloaded"), "claude": ("overloaded_error",),
                   "responses": ("server_error", "server_is_overloaded"), "gemini": ("UNAVAILABLE",),
                   "interactions": ("UNAVAILABLE",)}

#: A keep-alive: Claude's ping event, or an SSE comment (index: is the format Claude's).
_KEEPALIVE = (b": keep-alive\n\n", b'event: ping\ndata: {"type": "ping"}\n\n')


#: The rate-limit header families L{ratelimit_headers} speaks.
RATELIMIT_FAMILIES = ("openai", "anthropic", "unified", "codex")


def ratelimit_headers(family: str, left: float, reset_seconds: float, now: float) -> dict[bytes, bytes]:
    """
    The headers a real provider sends with C{left} (0 to 1) of its limit
    remaining and a reset in C{reset_seconds}: OpenAI's C{x-ratelimit-*}
    (resets as C{"6m0s"}), Anthropic's C{anthropic-ratelimit-*} (RFC 3339
    resets), Claude subscriptions' unified utilisation (epoch resets) or
    Codex's used percentages.
    """
    from datetime import datetime, timezone

    limit = 1000
    remaining = int(round(left * limit))
    if family == "openai":
        minutes, seconds = divmod(int(reset_seconds), 60)
        reset = f"{minutes}m{seconds}s" if minutes else f"{seconds}s"
        return {b"x-ratelimit-limit-requests": b"%d" % limit, b"x-ratelimit-remaining-requests": b"%d" % remaining,
                b"x-ratelimit-reset-requests": reset.encode(),
                b"x-ratelimit-limit-tokens": b"200000", b"x-ratelimit-remaining-tokens": b"199000",
                b"x-ratelimit-reset-tokens": b"20ms"}
    if family == "anthropic":
        at = datetime.fromtimestamp(now + reset_seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ").encode()
        return {b"anthropic-ratelimit-requests-limit": b"%d" % limit,
                b"anthropic-ratelimit-requests-remaining": b"%d" % remaining,
                b"anthropic-ratelimit-requests-reset": at}
    if family == "unified":
        status = b"rejected" if left <= 0 else (b"allowed_warning" if left < 0.2 else b"allowed")
        return {b"anthropic-ratelimit-unified-status": status,
                b"anthropic-ratelimit-unified-5h-utilization": b"%.2f" % (1 - left),
                b"anthropic-ratelimit-unified-5h-reset": b"%d" % int(now + reset_seconds),
                b"anthropic-ratelimit-unified-reset": b"%d" % int(now + reset_seconds)}
    if family == "codex":
        return {b"x-codex-primary-used-percent": b"%d" % int(round((1 - left) * 100)),
                b"x-codex-primary-window-minutes": b"300",
                b"x-codex-primary-reset-after-seconds": b"%d" % int(reset_seconds)}
    raise ValueError(f"unknown rate-limit family {family!r}; one of {', '.join(RATELIMIT_FAMILIES)}")


def _stream_error(fmt: ModuleType, shape: str | None, overloaded: bool = False) -> bytes:
    if overloaded:
        return _OVERLOAD_EVENTS[fmt.NAME]
    if shape is None:
        return fmt.stream_error_event("simulated in-stream error")
    return _ERROR_EVENTS[shape]


def _error_object(fmt: ModuleType, shape: str | None) -> bytes:
    """The error of C{error-first:F} as a whole body: the payload of its event, or the array."""
    if shape == "gemini-array":
        return b"[" + _GEMINI_QUOTA + b"]"
    [payload] = SSEParser().feed(_stream_error(fmt, shape))
    return payload


def _preamble(fmt: ModuleType, encoder: Any, answer: C.Response) -> bytes:
    """What a stream sends before any content: the opening events, and Claude's first ping."""
    return encoder.feed(C.Start(answer.id, answer.model)) + (_KEEPALIVE[1] if fmt is claude else b"")


def _content_events(encoder: Any, answer: C.Response, limit: int) -> bytes:
    """The first C{limit} events of the answer's stream (the opening one included), never its final one."""
    out = []
    for event in _events(answer):
        if len(out) >= limit or isinstance(event, (C.Finish, C.UsageEvent)):
            break
        if data := encoder.feed(event):
            out.append(data)
    return b"".join(out)


async def _close_delimited(request: IRequest, body: bytes) -> None:
    """Answer 200 with C{body} and no length or chunking, written on the connection itself, then close it."""
    transport = request.channel.transport
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n" + body)
    transport.loseConnection()
    await Deferred()  # the route ends when the connection does


def _garbage(request: IRequest, kind: str, answer: dict[str, Any]) -> bytes:
    """A 200 whose body no client can use: half of the JSON answer, nothing, or an HTML page."""
    if kind == "html":
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Please sign in.</body></html>"
    request.setHeader(b"content-type", JSON)
    if kind == "empty":
        return b""
    whole = json.dumps(answer).encode()
    return whole[: len(whole) // 2]


def _error_kind(code: int) -> str:
    if code == 429:
        return "rate_limit_error"
    if code >= 500:
        return "server_error"
    return "invalid_request_error"


def _compaction(answer: C.Response, req: C.Request) -> dict[str, Any]:
    """
    What a compact endpoint answers: the conversation's user turns kept as
    they were, and the rest as one opaque C{compaction} item (here: how many
    turns it stands for).
    """
    kept = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": common.joined_text(m.parts)}]}
            for m in req.messages if m.role == "user"]
    summary = f"sim-compaction:{len(req.messages)}:{answer.id}"
    return {"id": f"cmp_{answer.id}", "object": "response.compaction", "created_at": 0,
            "output": [*kept, {"type": "compaction", "id": f"cmpitem_{answer.id}", "encrypted_content": summary}],
            "usage": {"input_tokens": 7 * len(req.messages), "output_tokens": 11,
                      "total_tokens": 7 * len(req.messages) + 11, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}}}


def _response(reply_id: str, model: str, text: str) -> C.Response:
    return C.Response(reply_id, model, (C.Text(text),), C.STOP, C.Usage(5, len(text.split())))


def _events(answer: C.Response) -> list[C.Event]:
    """An answer as the stream a model would send: word by word, a tool call's arguments in halves."""
    events: list[C.Event] = [C.Start(answer.id, answer.model)]
    for part in answer.parts:
        if isinstance(part, C.Text):
            words = part.text.split(" ")
            events.extend(C.TextDelta(w if i == 0 else " " + w) for i, w in enumerate(words))
        elif isinstance(part, C.ToolCall):
            half = len(part.arguments) // 2
            events.append(C.ToolCallStart(0, part.id, part.name))
            events.extend(C.ToolCallDelta(0, a) for a in (part.arguments[:half], part.arguments[half:]))
    words = sum(1 for e in events if isinstance(e, C.TextDelta))
    events.append(C.Finish(answer.stop_reason))
    events.append(C.UsageEvent(C.Usage(5, words or answer.usage.output_tokens)))
    return events


def _enveloped(sse: bytes) -> bytes:
    """Gemini SSE as Code Assist sends it: every event inside C{{"response": ...}}."""
    return b"\n".join(b'data: {"response": ' + line[5:].strip() + b"}" if line.startswith(b"data:") else line
                      for line in sse.split(b"\n"))


def _enveloped_project(request: IRequest) -> str:
    """The C{project} a Code Assist request's envelope names ("" for none; a broken body is the route's)."""
    body = request.content.read()
    request.content.seek(0)
    try:
        data = jsontext.loads(body)
    except ValueError:
        return "?"
    return str(data.get("project") or "") if isinstance(data, dict) else "?"


#: The sentence Claude Code's system prompt opens with.
CLAUDE_CODE_IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."


def _claude_code_identity_problem(request: IRequest) -> tuple[int, str, str] | None:
    """
    What Anthropic's Messages endpoint holds against an OAuth request (status,
    message, error type): no OAuth beta, or not Claude Code's user agent and
    system prompt. None for a request it serves.
    """
    betas = ",".join(v.decode("latin-1") for v in request.requestHeaders.getRawHeaders(b"anthropic-beta", []))
    if "oauth-2025-04-20" not in betas:
        return 401, "OAuth authentication is currently not supported.", "authentication_error"
    body = request.content.read()
    request.content.seek(0)
    try:
        system = jsontext.loads(body).get("system")
    except (ValueError, AttributeError):
        return None  # the route's own checks answer a broken body
    texts = [b.get("text") for b in system[:2] if isinstance(b, dict)] if isinstance(system, list) else []
    if CLAUDE_CODE_IDENTITY not in texts or not _header(request, b"user-agent").startswith("claude-cli/"):
        return 400, ("This credential is only authorized for use with Claude Code and cannot be used for "
                     "other API requests."), "invalid_request_error"
    return None


def _claude_key(request: IRequest) -> str:
    """An API key (C{x-api-key}) or an OAuth access token (a bearer)."""
    return _header(request, b"x-api-key") or _bearer(request)


def _headers_of(request: IRequest) -> dict[str, str]:
    """A request's headers as C{seen} keeps them: lower-case names, first values."""
    return {k.decode().lower(): v[0].decode("latin-1") for k, v in request.requestHeaders.getAllRawHeaders()}


def _header(request: IRequest, name: bytes) -> str:
    return (request.getHeader(name) or b"").decode("latin-1")


def _bearer(request: IRequest) -> str:
    auth = _header(request, b"authorization")
    return auth[7:] if auth.lower().startswith("bearer ") else auth


def main(argv: list[str] | None = None) -> None:
    import argparse

    from twisted.internet import reactor

    from cliproxyd.frontend.site import QuietSite

    parser = argparse.ArgumentParser(
        prog="python -m cliproxyd.testing.upstream",
        description="A simulated OpenAI-compatible upstream with scriptable faults.",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--script", action="append", default=[], metavar="KEY=SPEC[,SPEC...]",
        help="behaviours of one key, e.g. sk-1=status:429:5,ok",
    )
    parser.add_argument("--keys", help="comma-separated keys to accept (others get 401); default: any")
    args = parser.parse_args(argv)
    upstream = SimulatedUpstream(reactor)
    if args.keys:
        upstream.known_keys = frozenset(k for k in args.keys.split(",") if k)
    for item in args.script:
        key, sep, specs = item.partition("=")
        if not sep:
            parser.error(f"--script {item!r}: expected KEY=SPEC[,SPEC...]")
        try:
            upstream.script(key, *specs.split(","))
        except ValueError as e:
            parser.error(f"--script {item!r}: {e}")
    port = reactor.listenTCP(args.port, QuietSite(upstream.resource()), interface=args.host)
    print(f"simulated upstream on http://{args.host}:{port.getHost().port}/v1", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
