"""
The client routes: OpenAI chat completions and Responses, Claude messages,
Gemini generateContent, their model lists and counts; health.

Routes are thin: check access, decode, hand the request to the conductor,
render what comes back in the client's format (passed through untouched
when the upstream spoke it too). Every error a client can see is rendered
here, in the client's own error shape; no traceback ever reaches a client.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any, Callable, Protocol
from urllib.parse import unquote_to_bytes

from attrs import evolve
from attrs import field as attrs_field
from attrs import frozen
from klein import Klein
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import MethodNotAllowed, NotFound

from cliproxyd.conductor.conductor import (
    NO_META,
    AllAttemptsFailed,
    AllCooling,
    Conductor,
    RequestInvalid,
    RequestMeta,
    UnknownModel,
)
from cliproxyd.conductor.budget import HEADER as BUDGET_HEADER
from cliproxyd.conductor.budget import SPENT_HEADER, RetryBudget, parse_budget
from cliproxyd.conductor.session import session_ids
from cliproxyd.formats import FORMATS, Origin, claude, completions, gemini, interactions, openai_chat, responses
from cliproxyd.formats.canonical import BadRequest
from cliproxyd.formats.openai_chat import is_error_body
from cliproxyd.formats.request import ClientRequest, dumps, loads
from cliproxyd.formats.translate import ModelNamingConsumer, TranslatingConsumer
from cliproxyd.conductor.keylimits import KeyLimited, KeyMeter, Refusal, Scope, estimate_tokens
from cliproxyd.config.model import ClientKey
from cliproxyd.frontend.access import AccessDenied, ClientAccess, RunInThread
from cliproxyd.frontend.images import ImageRoutes
from cliproxyd.conductor.images import image_providers
from cliproxyd.frontend.keys import KeyModels, Metering
from cliproxyd.frontend.routing import keep_routes
from cliproxyd.frontend import endpoints
from cliproxyd.assembly import providers_serving
from cliproxyd.formats.request import COMPACT
from cliproxyd.metrics import OTHER_MODEL, Metrics
from cliproxyd.modelnames import claude_listed_id, claude_listed_name, parse_model
from cliproxyd.frontend.wire import (
    JSON_KEEPALIVE,
    SSE_KEEPALIVE,
    EarlyAnswer,
    KeepAliveConsumer,
    error_headers,
    pass_headers,
)
from cliproxyd.replies import Reply, StreamReply, UpstreamError

JSON = b"application/json"


class ClientError(Exception):
    """An error answer: status, body and extra headers."""

    def __init__(self, status: int, body: bytes, headers: dict[bytes, bytes] | None = None,
                 message: str = "") -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}
        #: what went wrong, in words (for an error that can only be told in a stream's event)
        self.message = message


@frozen
class Problem:
    """What went wrong, before it is rendered in the client's format."""

    status: int
    message: str
    #: a machine-readable code for formats that carry one (the type follows from the status)
    code: str | None = None
    headers: dict[bytes, bytes] = attrs_field(factory=dict)
    #: an upstream error body a client of the same format may get as it is
    upstream_body: bytes | None = None
    upstream_fmt: str = ""
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
    return Problem(429, f"All credentials for model {e.model} are cooling down{via}",
                   "model_cooldown", headers, extra=extra)


def limit_problem(r: Refusal) -> Problem:
    """A client key over a limit: 429 with Retry-After until the window frees."""
    seconds = max(1, math.ceil(r.retry_after))
    return Problem(429, f"{r.message}; try again in {seconds}s", "client_key_limit",
                   {b"retry-after": str(seconds).encode()}, extra={"limit": r.limit})


def _upstream_body(e: UpstreamError) -> dict[str, Any]:
    """The upstream's own error body, when it is a JSON error object a same-format client can be given."""
    if e.fmt and is_error_body(e.body):
        return {"upstream_body": e.body, "upstream_fmt": e.fmt}
    return {}


def upstream_problem(last: UpstreamError) -> Problem:
    """What the client sees when no credential could serve its request."""
    headers = {}
    if last.retry_after is not None:
        headers[b"retry-after"] = str(max(1, math.ceil(last.retry_after))).encode()
    if last.status in (401, 407):
        # The upstream rejected *our* credential; a 401 would tell the client
        # its own key is wrong.
        return Problem(502, f"upstream rejected the credential: {last.message}",
                       "upstream_auth_failed", headers)
    if last.status:
        return Problem(last.status, last.message, None, headers, **_upstream_body(last))
    status = 504 if last.kind == "timeout" else 502
    code = "upstream_timeout" if status == 504 else "upstream_unavailable"
    return Problem(status, f"upstream {last.kind}: {last.message}", code, headers)


Render = Callable[[Problem], ClientError]


def renderer(fmt: ModuleType) -> Render:
    """How problems look to a client of format C{fmt}."""

    def render(p: Problem) -> ClientError:
        if p.upstream_body is not None and p.upstream_fmt == fmt.NAME:
            return ClientError(p.status, p.upstream_body, p.headers, p.message)
        extra: dict[str, Any] = {"code": p.code} if p.code else {}
        extra.update(p.extra)
        return ClientError(p.status, fmt.error_body(p.status, p.message, extra), p.headers, p.message)

    return render


#: Each format's renderer, made once.
RENDER = {name: renderer(fmt) for name, fmt in FORMATS.items()}
render_openai, render_claude, render_gemini, render_responses = (
    RENDER[f.NAME] for f in (openai_chat, claude, gemini, responses))
RENDER[completions.NAME] = render_openai  # /v1/completions is OpenAI's, errors and all


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


def _wants_claude_list(request: IRequest) -> bool:
    """Claude's clients get Claude's model list: they send anthropic-version, or are Claude Code."""
    agent = request.getHeader(b"user-agent") or b""
    return request.getHeader(b"anthropic-version") is not None or agent.startswith(b"claude-cli")


def _wants_gemini_shape(request: IRequest) -> bool:
    """A Gemini client asking under /v1 (as the google-genai SDK may): it sends its key its own way."""
    return request.getHeader(b"x-goog-api-key") is not None or b"key" in (request.args or {})


class _Served:
    """What the frontend serves from one generation, worked out once when it comes into service."""

    def __init__(self, gen: Any, created: int, run_in_thread: RunInThread = deferToThread) -> None:
        self.gen = gen
        self.conductor: Conductor = gen.conductor
        self.access = ClientAccess(gen.config.api_keys, gen.config.client_keys, run_in_thread)
        #: each client-keys entry's scope, by name
        self.scopes = {k.name: Scope(k) for k in gen.config.client_keys}
        self.session_affinity: bool = gen.config.routing.session_affinity
        self.max_body: int = gen.max_body
        config = gen.config
        self.passthrough_headers: bool = config.passthrough_headers
        #: metrics.overhead-header: answers tell cliproxyd's own time on them
        self.overhead_header: bool = config.metrics.enabled and config.metrics.overhead_header
        self.metrics_enabled: bool = config.metrics.enabled
        self.keepalive: float = config.streaming.keepalive_seconds
        self.nonstream_keepalive: float = config.nonstream_keepalive_interval
        models = gen.conductor.models()
        self.model_ids = {name for name, _ in models}
        #: what the config says of the models served (display names, limits, thinking, modalities)
        catalogue = gen.config.model_catalogue()
        self.facts = {name: catalogue[name] for name in self.model_ids if name in catalogue}
        self.models_openai = openai_chat.models_body(models, created, self.facts)
        # Claude clients see models that are not Claude's under a claude- id (as CLIProxyAPI lists
        # them) unless claude-code.disable-cloaking-model-list; requests name either.
        claude_ids = None if config.disable_cloaking_model_list else claude_listed_id
        self.models_claude = claude.models_body(models, created, self.facts, claude_ids)
        self.models_gemini = gemini.models_body(models, self.facts)
        self.key_models = KeyModels(models, self.conductor.providers, lambda allowed: (
            openai_chat.models_body(allowed, created, self.facts),
            claude.models_body(allowed, created, self.facts, claude_ids),
            gemini.models_body(allowed, self.facts)))
        #: force-mapping: the models whose passed-through answers name the model as the client asked
        self.force_mapped = frozenset(name for name, facts in self.facts.items() if facts.force_mapping)
        #: the providers that serve /v1/responses/compact (L{cliproxyd.frontend.endpoints.compact})
        self.compact_providers = providers_serving(config, gen.creds, COMPACT)
        #: each model that makes images -> the providers that make them (L{cliproxyd.frontend.images})
        self.image_providers = image_providers(config, gen.creds)

    def lists(self, grant: str | ClientKey | None) -> tuple[bytes, bytes, bytes]:
        """The OpenAI, Claude and Gemini model lists the caller sees."""
        if isinstance(grant, ClientKey):
            return self.key_models.lists(grant, self.scopes[grant.name])
        return self.models_openai, self.models_claude, self.models_gemini

    def may_use(self, key: ClientKey, model: str) -> bool:
        """Whether C{key}'s scope allows C{model} and a provider serving it."""
        scope = self.scopes[key.name]
        return scope.allows_model(model) and bool(scope.allowed_providers(self.conductor.providers(model)))

    def model_label(self, model: str) -> str:
        """How the metrics name a request for C{model}: the model served (no thinking suffix), or OTHER_MODEL."""
        if model in self.model_ids:
            return model
        base = parse_model(model).base
        return base if base in self.model_ids else OTHER_MODEL

    def force_mapping(self, model: str) -> bool:
        """Whether answers for C{model} (as the client asked, thinking suffix and all) are renamed."""
        return bool(self.force_mapped) and (model in self.force_mapped
                                            or parse_model(model).base in self.force_mapped)


def _renamed(result: Reply, fmt: ModuleType, model: str) -> bytes:
    """A passed-through answer naming C{model} (force-mapping); an answer that is not a JSON object, as it is."""
    try:
        data = result.data if result.data is not None else loads(result.body)
    except (ValueError, UnicodeDecodeError):
        return result.body
    if isinstance(data, dict):
        data = dict(data)  # the reply's own data stays as the upstream sent it
        if fmt.name_answer_model(data, model):
            return dumps(data)
    return result.body


#: The route label of Gemini's model methods (whichever of /v1beta and /v1 the client used).
GEMINI_ROUTES = {m: f"/v1beta/models/*:{m}" for m in ("generateContent", "streamGenerateContent", "countTokens")}

#: The answer header that tells cliproxyd's own time on a request (metrics.overhead-header).
OVERHEAD_HEADER = b"x-cliproxyd-overhead-ms"


class _Measure:
    """What the metrics learn of one request while it runs (L{Frontend._measured})."""

    __slots__ = ("started", "model", "waited", "answered", "translated", "header")

    def __init__(self, started: float, header: bool) -> None:
        self.started = started
        #: the model label: a model served, or OTHER_MODEL (set once the body is decoded)
        self.model = OTHER_MODEL
        #: seconds spent waiting for the conductor's answer, and when it came (0: not yet)
        self.waited = 0.0
        self.answered = 0.0
        self.translated = False
        #: whether the answer carries OVERHEAD_HEADER
        self.header = header

    def overhead(self, now: float) -> float:
        """The route's time so far without the wait for the upstream."""
        return max(0.0, now - self.started - self.waited)


class GenerationView(Protocol):
    """The running generation as the frontend reads it (L{cliproxyd.assembly.GenerationSource})."""

    current: Any


class Frontend:
    """
    The client routes. Each request is served by the generation current
    when it arrives (read from C{source}); one that is running when a
    reload swaps generations finishes on the one it started with.
    """

    app = keep_routes(Klein())  # each path matched once (see cliproxyd.frontend.routing)
    log = Logger()

    def __init__(self, source: GenerationView, clock: IReactorTime, management: IResource | None = None,
                 keys: KeyMeter | None = None, run_in_thread: RunInThread = deferToThread,
                 metrics: Metrics | None = None, metrics_page: Any = None) -> None:
        """
        @param keys: counts client keys' requests against their limits (its
            records in the daemon's StateStore); one of its own by default.
        @param run_in_thread: where bcrypt-hashed client keys are checked.
        @param metrics: the request path's figures (None: not counted); C{metrics_page} serves C{GET /metrics}.
        """
        self.clock = clock
        self.keys = keys if keys is not None else KeyMeter(clock)
        self._run_in_thread = run_in_thread
        self.metrics = metrics
        self.metrics_page = metrics_page
        #: requests being measured: what L{_measured} learns of each while it runs
        self._measures: dict[IRequest, _Measure] = {}
        self._origin = Origin(now=clock.seconds)  # translated answers are created at the reactor's time
        self.management = management
        self._source = source
        self._last: _Served | None = None
        #: requests waiting for the conductor's answer (nothing sent to their client yet)
        self._waiting: dict[IRequest, Deferred[Any]] = {}
        #: those of them ended by L{end}: their cancellation is answered with a 503
        self._ended: set[IRequest] = set()
        #: those of them whose keep-alives may have sent a 200 already
        self._early: dict[IRequest, EarlyAnswer] = {}
        #: the Responses websocket's connections (made on the first upgrade)
        self._websocket: Any = None
        #: /v1/images/generations and /v1/images/edits (cliproxyd.frontend.images)
        self._images = ImageRoutes(self)

    def served(self) -> _Served:
        """The current generation's view, made once per generation."""
        gen = self._source.current
        last = self._last
        if last is None or last.gen is not gen:
            last = self._last = _Served(gen, int(self.clock.seconds()), self._run_in_thread)
        return last

    def resource(self) -> IResource:
        return self.app.resource()

    def end(self, request: IRequest) -> bool:
        """
        End C{request} now, as shutdown does when C{shutdown-seconds} is up.
        A stream under way gets its format's error event (L{end_stream}); a
        request still waiting for its answer, with nothing sent yet, gets
        a 503 in its client's format with C{Retry-After}, and its upstream
        attempt is stopped as when a client leaves. Either way the
        connection closes once the answer is complete.

        @return: whether C{request} was ended so; if not (any other
            request), nothing was done and its connection may be dropped.
        """
        if end_stream(request) or (self._websocket is not None and self._websocket.end(request)):
            return True
        waiting = self._waiting.get(request)
        channel = getattr(request, "channel", None)
        if waiting is None or channel is None or (request.startedWriting and request not in self._early):
            return False
        channel.persistent = False
        self._ended.add(request)
        waiting.cancel()
        return True

    def drain(self, request: IRequest) -> None:
        """Shutdown has begun: a websocket upgraded from C{request} closes once its turn is done (at once if idle)."""
        if self._websocket is not None:
            self._websocket.drain(request)

    # -- routes ---------------------------------------------------------------

    @app.route("/healthz", methods=["GET", "HEAD"])
    def healthz(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", JSON)
        return b'{"status":"ok"}'

    @app.route("/v1/models", methods=["GET"])
    async def models(self, request: IRequest) -> bytes:
        served = self.served()
        if _wants_claude_list(request):
            body = served.lists(await self._check_access(served, request, render_claude))[1]
        else:
            body = served.lists(await self._check_access(served, request))[0]
        request.setHeader(b"content-type", JSON)
        return body

    @app.route("/v1/chat/completions", methods=["POST"])
    def chat_completions(self, request: IRequest) -> Any:
        return self._measured(request, "/v1/chat/completions", openai_chat, self._generate, request, openai_chat)

    @app.route("/v1/responses", methods=["POST"])
    def openai_responses(self, request: IRequest) -> Any:
        return self._measured(request, "/v1/responses", responses, self._generate, request, responses)

    @app.route("/v1/completions", methods=["POST"])
    def text_completions(self, request: IRequest) -> Any:
        return self._measured(request, "/v1/completions", completions, self._generate, request, completions,
                              endpoint=endpoints.text_completion)

    @app.route("/v1/responses/compact", methods=["POST"])
    @app.route("/backend-api/codex/responses/compact", methods=["POST"])  # Codex CLI's chatgpt_base_url form
    def responses_compact(self, request: IRequest) -> Any:
        return self._measured(request, "/v1/responses/compact", responses, self._generate, request, responses,
                              endpoint=endpoints.compact)

    @app.route("/v1/responses", methods=["GET"])
    def openai_responses_websocket(self, request: IRequest) -> Any:
        """The Responses API over a websocket (L{cliproxyd.frontend.websocket})."""
        return self.websocket.upgrade(request)

    @property
    def websocket(self) -> Any:
        if self._websocket is None:
            from cliproxyd.frontend.websocket import ResponsesWebsocket

            self._websocket = ResponsesWebsocket(self)
        return self._websocket

    @app.route("/v1/messages", methods=["POST"])
    def claude_messages(self, request: IRequest) -> Any:
        return self._measured(request, "/v1/messages", claude, self._generate, request, claude)

    @app.route("/v1/messages/count_tokens", methods=["POST"])
    def claude_count(self, request: IRequest) -> Any:
        return self._measured(request, "/v1/messages/count_tokens", claude, self._count, request, claude)

    @app.route("/v1/images/generations", methods=["POST"])
    def images_generations(self, request: IRequest) -> Any:
        return self._measured(request, "/v1/images/generations", openai_chat, self._images.serve, request,
                              "generations")

    @app.route("/v1/images/edits", methods=["POST"])
    def images_edits(self, request: IRequest) -> Any:
        return self._measured(request, "/v1/images/edits", openai_chat, self._images.serve, request, "edits")

    @app.route("/v1beta/interactions", methods=["POST"])
    @app.route("/v1/interactions", methods=["POST"])  # where Google's SDK sends it
    def interactions_create(self, request: IRequest) -> Any:
        return self._measured(request, "/v1beta/interactions", interactions, self._generate, request, interactions)

    @app.route("/v1beta/models", methods=["GET"])
    async def gemini_models(self, request: IRequest) -> bytes:
        served = self.served()
        body = served.lists(await self._check_access(served, request, render_gemini))[2]
        request.setHeader(b"content-type", JSON)
        return body

    @app.route("/v1beta/models/<path:target>", methods=["GET", "POST"])
    @app.route("/v1/models/<path:target>", methods=["GET", "POST"])
    def gemini_model(self, request: IRequest, target: str) -> Any:
        if request.method in (b"GET", b"HEAD"):  # HEAD (werkzeug routes it here): as GET
            return self._model(request, target)
        model, _, method = target.rpartition(":")
        model = model.removeprefix("models/")
        if method == "generateContent":
            return self._measured(request, GEMINI_ROUTES[method], gemini, self._generate, request, gemini, model,
                                  stream=False)
        if method == "streamGenerateContent":
            sse = request.args.get(b"alt", [b""])[0] == b"sse"
            return self._measured(request, GEMINI_ROUTES[method], gemini, self._generate, request, gemini, model,
                                  stream=True, sse=sse)
        if method == "countTokens":
            return self._measured(request, GEMINI_ROUTES[method], gemini, self._count, request, gemini, model)
        return self._no_method(request, model, method)

    async def _no_method(self, request: IRequest, model: str, method: str) -> bytes:
        await self._check_access(self.served(), request, render_gemini)
        raise render_gemini(Problem(404, f"Method {method!r} is not supported for models/{model}",
                                    "not_found"))

    async def _model(self, request: IRequest, target: str) -> bytes:
        model = target.removeprefix("models/")
        gemini_client = request.path.startswith(b"/v1beta/") or _wants_gemini_shape(request)
        render = render_gemini if gemini_client else render_openai
        served = self.served()
        grant = await self._check_access(served, request, render)
        if model not in served.model_ids or (isinstance(grant, ClientKey) and not served.may_use(grant, model)):
            raise render(Problem(404, f"The model {model!r} does not exist",
                                 "model_not_found"))
        request.setHeader(b"content-type", JSON)
        facts = served.facts.get(model)
        if gemini_client:
            return gemini.model_body(model, facts)
        return openai_chat.model_body(model, int(self.clock.seconds()), facts=facts)

    # -- the two paths: generate and count ---------------------------------------

    def _decode(self, served: _Served, request: IRequest, fmt: ModuleType, model: str | None = None,
                stream: bool | None = None) -> tuple[ClientRequest, Render]:
        render = RENDER[fmt.NAME]
        raw = request.content.read()
        if getattr(request, "body_too_large", False) or len(raw) > served.max_body:
            raise render(Problem(413, f"The request body is larger than {served.max_body} bytes (max-body-mb)",
                                 "request_too_large"))
        try:
            named = claude_listed_name if fmt is claude else None
            req = ClientRequest.decode(fmt, raw, model, stream, request.requestHeaders, named)
        except BadRequest as e:
            raise self._refused(render, e, request.path.decode("utf-8", "replace")) from None
        measure = self._measures.get(request)
        if measure is not None:
            measure.model = served.model_label(req.model)
        return req, render

    def _refused(self, render: Render, e: BadRequest, about: str) -> ClientError:
        """
        A client body we will not send (C{about}: its path, or its model):
        logged once, with no traceback, and the client's 400.
        """
        self.log.info("refused a request ({about}): {error}", about=about, error=str(e))
        return render(Problem(400, f"Invalid request: {e}"))

    async def _generate(self, request: IRequest, fmt: ModuleType, model: str | None = None,
                        stream: bool | None = None, sse: bool = True, endpoint: Any = None) -> bytes:
        """
        @param endpoint: for the endpoints of L{cliproxyd.frontend.endpoints}: the hook that says,
            from the decoded request, how its answers look, what the conductor runs and which
            providers may serve it.
        """
        served = self.served()
        grant = await self._check_access(served, request, RENDER[fmt.NAME])
        req, render = self._decode(served, request, fmt, model, stream)
        keyed = isinstance(grant, ClientKey)
        providers = self._scope(served, grant, req, render) if keyed else frozenset()
        if endpoint is not None:
            try:
                fmt, req, providers = endpoint(served, req, providers)
            except endpoints.Refused as e:
                self.log.info("refused a request ({about}): {error}", about=request.path, error=e.message)
                raise render(Problem(e.status, e.message, e.code)) from None
        if not keyed:
            return await self._serve(request, served, fmt, req, render, sse, providers)
        try:
            ticket = self.keys.admit(grant, estimate_tokens(len(req.raw)))
        except KeyLimited as e:
            raise render(limit_problem(e.refusal)) from None
        metering = Metering(self.keys, ticket)
        try:
            return await self._serve(request, served, fmt, req, render, sse, providers, metering)
        finally:
            metering.settle()

    def _scope(self, served: _Served, key: ClientKey, req: ClientRequest, render: Render) -> frozenset[str]:
        """
        A client key's request within its scope, or a 403 saying what is not
        allowed; the providers it may be served by (empty: any).
        """
        scope = served.scopes[key.name]
        if not scope.allows_model(req.model):
            raise render(Problem(403, f"client key {key.name!r} may not use the model {req.model!r}",
                                 "model_not_allowed"))
        if not scope.providers:
            return frozenset()
        serving = served.conductor.providers(req.model)
        if serving and not scope.allowed_providers(serving):
            raise render(Problem(
                403, f"client key {key.name!r} may not use {', '.join(serving)}, the providers serving "
                     f"{req.model!r} (it may use {', '.join(sorted(scope.providers))})", "provider_not_allowed"))
        return scope.providers

    async def _serve(self, request: IRequest, served: _Served, fmt: ModuleType, req: ClientRequest,
                     render: Render, sse: bool, providers: frozenset[str] = frozenset(),
                     metering: Metering | None = None) -> bytes:
        early = self._early_answer(served, request, fmt, req, sse)
        try:
            result = await self._conduct(request, served, served.conductor.execute, req, render, providers)
        except ClientError as e:
            if early is None or not early.committed:
                raise
            return self._late_error(request, fmt, req, e)
        finally:
            if early is not None:
                early.stop()
                del self._early[request]
        committed = early is not None and early.committed
        if not isinstance(result, StreamReply):
            if metering is not None:
                metering.answer(result)
            answer = self._answer(request, result, fmt, req, render, served.force_mapping(req.model))
            if served.passthrough_headers and not committed:
                pass_headers(request, result.headers)
            return answer
        if not committed:
            request.setResponseCode(result.status)
        inner = self._stream_headers(request)
        upstream = FORMATS[result.fmt]
        same = upstream is fmt and sse
        request.setHeader(b"content-type", result.content_type if same else b"text/event-stream" if sse else JSON)
        if served.passthrough_headers and not committed:
            pass_headers(request, result.headers)
        keepalive = KeepAliveConsumer(inner, self.clock, served.keepalive) if served.keepalive and sse else None
        out = inner if keepalive is None else keepalive
        try:
            if same:
                naming = ModelNamingConsumer(out, fmt, req.model) if served.force_mapping(req.model) else None
                relayed = naming or out
                error = await result.relay.attach(relayed if metering is None else metering.tap(relayed, result.fmt))
                if naming is not None:
                    naming.flush()
                if error is not None:
                    self._stream_failed(req, error)
                    if not error.relayed:  # else the upstream's own error event came through, as it was
                        inner.write(fmt.stream_error_event(error.message))
                return b""
            encoder = (fmt.StreamEncoder(req.model, origin=self._origin) if sse
                       else fmt.StreamEncoder(req.model, sse=False, origin=self._origin))
            consumer = TranslatingConsumer(out, upstream.StreamDecoder(origin=self._origin), encoder)
            error = await result.relay.attach(consumer if metering is None else metering.tap(consumer, result.fmt))
            if error is not None:
                self._stream_failed(req, error)
                consumer.fail(error.message)  # nothing, when the upstream's error event was translated already
            else:
                consumer.close()
            return b""
        finally:
            if keepalive is not None:
                keepalive.stop()

    def _early_answer(self, served: _Served, request: IRequest, fmt: ModuleType, req: ClientRequest,
                      sse: bool) -> EarlyAnswer | None:
        """
        Keep-alives while the client waits for its answer, when the config
        asks for them: C{streaming.keepalive-seconds} for an SSE stream,
        C{nonstream-keepalive-interval} for a JSON answer of the routes
        CLIProxyAPI sends them on (not Responses, not counts).
        """
        if req.stream:
            if not (served.keepalive and sse):
                return None
            early = EarlyAnswer(request, self.clock, served.keepalive, SSE_KEEPALIVE, (
                (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")))
        elif served.nonstream_keepalive and fmt is not responses:
            early = EarlyAnswer(request, self.clock, served.nonstream_keepalive, JSON_KEEPALIVE,
                                ((b"content-type", JSON),))
        else:
            return None
        self._early[request] = early
        return early

    def _late_error(self, request: IRequest, fmt: ModuleType, req: ClientRequest, e: ClientError) -> bytes:
        """
        A request that failed after keep-alives sent its 200: a stream ends
        with its format's error event, a JSON answer is the error body.
        """
        self.log.warn("request for {model} failed after keep-alives were sent ({status}): {error}",
                      model=req.model, status=e.status, error=e.message)
        if req.stream:
            request.write(fmt.stream_error_event(e.message))
            return b""
        return e.body

    def _stream_failed(self, req: ClientRequest, error: UpstreamError) -> None:
        """A stream that went wrong after it started: the client gets its format's error event, never a stop."""
        self.log.warn("stream for {model} failed after it started: {error}", model=req.model, error=error.message)

    def _answer(self, request: IRequest, result: Reply, fmt: ModuleType, req: ClientRequest,
                render: Render, rename: bool = False) -> bytes:
        request.setResponseCode(result.status)
        if result.fmt == fmt.NAME:
            request.setHeader(b"content-type", result.content_type)
            if rename:
                return _renamed(result, fmt, req.model)
            return result.body
        try:
            data = result.data if result.data is not None else loads(result.body)
            answer = FORMATS[result.fmt].response_to_canonical(data, origin=self._origin)
        except (ValueError, UnicodeDecodeError, AttributeError, TypeError, KeyError, IndexError):
            raise render(Problem(502, "the upstream answer is not valid JSON",
                                 "bad_upstream_answer")) from None
        request.setHeader(b"content-type", JSON)
        return dumps(fmt.response_from_canonical(answer, req.model, origin=self._origin))

    async def _count(self, request: IRequest, fmt: ModuleType, model: str | None = None) -> bytes:
        served = self.served()
        grant = await self._check_access(served, request, RENDER[fmt.NAME])
        req, render = self._decode(served, request, fmt, model, stream=False)
        providers = self._scope(served, grant, req, render) if isinstance(grant, ClientKey) else frozenset()
        result = await self._conduct(request, served, served.conductor.count, req, render, providers)
        request.setHeader(b"content-type", JSON)
        if result.fmt == fmt.NAME and not result.local:
            return result.body
        return dumps(fmt.count_body(result.tokens or 0))

    async def _conduct(self, request: IRequest, served: _Served, run: Callable[..., Any], req: ClientRequest,
                       render: Render, providers: frozenset[str] = frozenset(), execution: str = "") -> Any:
        meta = NO_META
        if served.session_affinity:
            # Once per request, from what is already decoded (C{execution}: a websocket connection's id).
            sessions = session_ids(request.getHeader, req.data, execution)
            if sessions:
                meta = RequestMeta(session=sessions)
        if providers:
            meta = evolve(meta, providers=providers)
        budget = parse_budget(request.getHeader(BUDGET_HEADER))
        if budget is not None:
            meta = evolve(meta, budget=budget)
            # Whatever the answer, a proxy in front learns what this request spent.
            render = _reporting_spent(render, budget)
        waiting = self._waiting[request] = ensureDeferred(run(req, meta))
        measure = self._measures.get(request)
        try:
            if measure is None:
                return await waiting
            asked = self.clock.seconds()
            result = await waiting
            measure.answered = now = self.clock.seconds()
            measure.waited = now - asked
            measure.translated = result.fmt != req.fmt.NAME
            if measure.header:  # a stream's head goes out before the route returns: its figure so far
                request.setHeader(OVERHEAD_HEADER, b"%.3f" % (measure.overhead(now) * 1000))
            return result
        except CancelledError:
            if request not in self._ended:
                raise  # the client went away
            raise render(Problem(503, SHUTDOWN_WAITING, "server_shutting_down",
                                 {b"retry-after": b"1", b"connection": b"close"})) from None
        except UnknownModel as e:
            raise render(Problem(404, f"The model {e.model!r} does not exist or no credential serves it",
                                 "model_not_found")) from None
        except AllAttemptsFailed as e:
            self.log.error(
                "all {attempts} credentials failed for {model}: {error}",
                attempts=e.attempts,
                model=e.model,
                error=str(e.last),
            )
            problem = upstream_problem(e.last)
            if served.passthrough_headers:
                problem = evolve(problem, headers=error_headers(e.last, problem.headers))
            raise render(problem) from None
        except AllCooling as e:
            raise render(cooling_problem(e)) from None
        except BadRequest as e:
            # Found while translating for the picked upstream; nothing was sent.
            raise self._refused(render, e, req.model) from None
        except RequestInvalid as e:
            err = e.error
            own = error_headers(err, {}) if served.passthrough_headers else {}
            raise render(Problem(err.status, err.message, headers=own, **_upstream_body(err))) from None
        finally:
            del self._waiting[request]
            self._ended.discard(request)

    def _stream_headers(self, request: IRequest) -> "_ClientConsumer":
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        return _ClientConsumer(request)

    def _measured(self, request: IRequest, route: str, fmt: ModuleType, serve: Callable[..., Any],
                  *args: Any, **kw: Any) -> Any:
        """
        Run a generate or count route, counted in the metrics when they are
        on (L{_metered}); with them off, the route as it is.
        """
        metrics = self.metrics
        if metrics is None:
            return serve(*args, **kw)
        served = self.served()
        if not served.metrics_enabled:
            return serve(*args, **kw)
        measure = self._measures[request] = _Measure(self.clock.seconds(), served.overhead_header)
        # A callback, not a coroutine around the route's: that would be one more frame every resume goes through.
        return ensureDeferred(serve(*args, **kw)).addBoth(self._metered, request, route, fmt, metrics, measure)

    def _metered(self, result: Any, request: IRequest, route: str, fmt: ModuleType, metrics: Metrics,
                 measure: _Measure) -> Any:
        """
        A route's answer (C{result}, or its failure, passed on as it is):
        count the request by route, client format, model and the status it
        was answered with, and cliproxyd's own time on it
        (L{_Measure.overhead}), in the C{x-cliproxyd-overhead-ms} header too
        when C{metrics.overhead-header} asks. A stream's own time ends when
        its head is sent.
        """
        if isinstance(result, Failure):
            error = result.value
            # 499: the client went away before its answer
            status = (error.status if isinstance(error, ClientError)
                      else 499 if isinstance(error, CancelledError) else 500)
        else:
            status = request.code
        del self._measures[request]
        answered = measure.answered
        overhead = measure.overhead(answered if answered and request.startedWriting else self.clock.seconds())
        if measure.header and not request.startedWriting:
            request.setHeader(OVERHEAD_HEADER, b"%.3f" % (overhead * 1000))
        metrics.request(route, fmt.NAME, measure.model, status)
        metrics.overhead(overhead, measure.translated)
        return result

    @app.route("/metrics", methods=["GET"])
    async def metrics_route(self, request: IRequest) -> bytes:
        """Prometheus's scrape (L{cliproxyd.management.metrics.MetricsPage}, which says who may read it)."""
        if self.metrics_page is None:
            raise NotFound()
        return await self.metrics_page.answer(request)

    @app.route("/v0/management", branch=True)
    def management_api(self, request: IRequest) -> Any:
        if self.management is None:
            raise NotFound()
        return self.management

    # -- errors ---------------------------------------------------------------

    async def _check_access(self, served: _Served, request: IRequest,
                            render: Render = render_openai) -> "str | ClientKey | None":
        """
        The caller's key: an C{api-keys} key, a C{client-keys} entry (not
        disabled, not expired) or C{None} (no keys configured); else a 401.
        """
        try:
            grant = served.access.check(request)
            if isinstance(grant, Deferred):
                grant = await grant
        except AccessDenied as e:
            raise render(Problem(401, str(e), "invalid_api_key")) from None
        if isinstance(grant, ClientKey):
            if grant.disabled:
                raise render(Problem(401, f"The client key {grant.name!r} is disabled", "invalid_api_key"))
            if grant.expires is not None and grant.expires <= self.clock.seconds():
                raise render(Problem(401, f"The client key {grant.name!r} has expired", "invalid_api_key"))
        return grant

    @app.handle_errors(ClientError)
    def _client_error(self, request: IRequest, failure: Failure) -> bytes:
        return _write(request, failure.value)

    @app.handle_errors(NotFound)
    def _not_found(self, request: IRequest, failure: Failure) -> bytes:
        path = request.path.decode("utf-8", "replace")
        problem = Problem(404, f"No route for {path}", "not_found")
        return _write(request, _path_renderer(request)(problem))

    @app.handle_errors(MethodNotAllowed)
    def _bad_method(self, request: IRequest, failure: Failure) -> bytes:
        method = request.method.decode("ascii", "replace")
        problem = Problem(405, f"{method} is not allowed here")
        return _write(request, _path_renderer(request)(problem))

    @app.handle_errors(Exception)
    def _internal(self, request: IRequest, failure: Failure) -> bytes:
        if failure.check(CancelledError):
            return b""  # the client went away; there is no one to answer
        self.log.failure("unhandled error on {path}", failure, path=request.path)
        problem = Problem(500, "internal error", "internal_server_error")
        return _write(request, _path_renderer(request)(problem))


def _reporting_spent(render: Render, budget: RetryBudget) -> Render:
    """C{render}, with C{x-cliproxyd-attempts} saying what the request's retry budget paid for."""

    def reporting(problem: Problem) -> ClientError:
        headers = {**problem.headers, SPENT_HEADER: str(budget.spent).encode()}
        return render(evolve(problem, headers=headers))

    return reporting


def _write(request: IRequest, e: ClientError) -> bytes:
    request.setResponseCode(e.status)
    request.setHeader(b"content-type", JSON)
    for name, value in e.headers.items():
        request.setHeader(name, value)
    return e.body


#: The error event a stream still running when shutdown-seconds is up ends with.
SHUTDOWN_MESSAGE = "cliproxyd is shutting down: the answer was cut short (timeouts.shutdown-seconds)"
#: The 503 of a request still waiting for its answer then.
SHUTDOWN_WAITING = ("cliproxyd is shutting down: no answer came within timeouts.shutdown-seconds; "
                    "nothing was generated, send the request again")

#: The streaming routes that have one path, and their client formats.
_STREAM_PATHS = {b"/v1/chat/completions": openai_chat, b"/v1/responses": responses, b"/v1/messages": claude,
                 b"/v1/completions": completions, b"/v1beta/interactions": interactions,
                 b"/v1/interactions": interactions}


def stream_format(path: bytes) -> ModuleType | None:
    """The client format of the streams served at C{path} (Gemini's C{:streamGenerateContent} too), if any."""
    path = unquote_to_bytes(path)
    fmt = _STREAM_PATHS.get(path)
    if fmt is None and path.startswith((b"/v1beta/models/", b"/v1/models/")) and \
            path.endswith(b":streamGenerateContent"):
        fmt = gemini
    return fmt


def end_stream(request: IRequest, message: str = SHUTDOWN_MESSAGE) -> bool:
    """
    End a stream that is still being relayed to its client, now: the client
    format's in-stream error event goes out, and the upstream relay is
    stopped as when a client leaves (nothing is held against the
    credential), so the route finishes the body as a complete one and the
    connection closes after it.

    @return: whether C{request} is such a stream (an SSE answer under way on
        a streaming route); if not, nothing was done.
    """
    producer = getattr(request, "producer", None)
    channel = getattr(request, "channel", None)  # None once the connection is gone
    if producer is None or channel is None or request.finished:
        return False
    content_type = (request.responseHeaders.getRawHeaders(b"content-type") or [b""])[0]
    fmt = stream_format(request.path)
    if fmt is None or not content_type.startswith(b"text/event-stream"):
        return False
    channel.persistent = False  # no next request on it: closed once the body is complete
    request.write(fmt.stream_error_event(message))
    producer.stopProducing()
    return True


def _path_renderer(request: IRequest) -> Render:
    """The error shape a path's clients expect, for answers no route made (or a route failed to)."""
    path = request.path
    if path in (b"/v1beta/interactions", b"/v1/interactions"):
        return RENDER[interactions.NAME]
    if path.startswith(b"/v1beta/") or (path.startswith(b"/v1/models/") and b":" in path):
        return render_gemini
    if path.startswith(b"/v1/messages"):
        return render_claude
    if path.startswith(b"/v1/responses"):
        return render_responses
    return render_openai
