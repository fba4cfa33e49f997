"""
The OpenAI Responses API over a websocket, where CLIProxyAPI serves it:
C{GET /v1/responses} with C{Upgrade: websocket}.

The upgrade is a route of the frontend's klein app: the client's key is
checked on the upgrade request, as on any HTTP route (a bad key is a 401
before any upgrade), and only then does autobahn take the connection over.
Nothing of this is on the path of the HTTP routes.

On the open connection the client sends C{response.create} (and
C{response.append}) messages. Each is one turn: it becomes a streamed
Responses request (L{cliproxyd.formats.responses_turns.Turns}, which keeps
the conversation between turns) and goes through the conductor exactly as
a streamed C{POST /v1/responses}: failover before the first event,
cooldowns, session affinity, client-key scopes and limits. Its events go
back one per websocket text message; an error before the first event is
one C{{"type": "error", "status": N, "error": {...}}} message, as
CLIProxyAPI sends it. Turns run one after another in the order they came;
the connection stays open for the next one, after an error too.

A client that closes (or loses) the connection mid-turn cancels the turn:
the upstream request is aborted, as when an HTTP client leaves.
"""

from __future__ import annotations

import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from cliproxyd.conductor.keylimits import KeyLimited, estimate_tokens
from cliproxyd.config.model import ClientKey
from cliproxyd.formats import FORMATS, canonical as C, responses
from cliproxyd.formats.canonical import BadRequest
from cliproxyd.formats.request import ClientRequest, dumps, loads
from cliproxyd.formats.responses_turns import OutputCollector, TurnRefused, Turns
from cliproxyd.formats.translate import ModelNamingConsumer, SSEParser, TranslatingConsumer
from cliproxyd.frontend.keys import Metering
from cliproxyd.replies import Reply

if TYPE_CHECKING:
    from cliproxyd.frontend.app import ClientError, Frontend

#: The route label of a websocket turn in the metrics.
ROUTE = "/v1/responses (websocket)"
#: Messages a connection may have waiting while a turn runs; more are refused (each with an error event).
MAX_WAITING = 8
#: Seconds between the pings that find a client gone without a word, and how long its pong may take.
PING_INTERVAL = 30.0
PING_TIMEOUT = 30.0
#: The header a Codex client keeps its turn state in; echoed on the upgrade, as CLIProxyAPI does.
TURN_STATE = "x-codex-turn-state"
#: What a client told to close at shutdown reads.
SHUTDOWN_REASON = "cliproxyd is shutting down"


def is_upgrade(request: IRequest) -> bool:
    """Whether C{request} asks for a websocket (C{Upgrade: websocket}, C{Connection: upgrade})."""
    upgrade = (request.getHeader(b"upgrade") or b"").lower()
    connection = (request.getHeader(b"connection") or b"").lower()
    return upgrade == b"websocket" and b"upgrade" in connection


def error_event(status: int, error: dict[str, Any], headers: dict[bytes, bytes] | None = None) -> bytes:
    """CLIProxyAPI's websocket error message: C{type}, C{status}, the OpenAI error object, and headers (Retry-After)."""
    event: dict[str, Any] = {"type": "error", "status": status, "error": error}
    if headers:
        event["headers"] = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}
    return dumps(event)


def client_error_event(e: "ClientError") -> bytes:
    """A rendered error answer (L{ClientError}, in the Responses shape) as a websocket error message."""
    try:
        body = loads(e.body)
    except (ValueError, UnicodeDecodeError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"type": "server_error", "code": None, "message": e.message, "param": None}
    return error_event(e.status, error, {k: v for k, v in e.headers.items() if k == b"retry-after"})


def answer_events(answer: C.Response) -> list[C.Event]:
    """A whole answer as the stream events that would have told it."""
    events: list[C.Event] = [C.Start(answer.id, answer.model)]
    calls = 0
    for part in answer.parts:
        if isinstance(part, C.Text):
            events.append(C.TextDelta(part.text))
        elif isinstance(part, C.Thinking):
            events.append(C.ThinkingDelta(part.text))
        elif isinstance(part, C.ToolCall):
            events += [C.ToolCallStart(calls, part.id, part.name), C.ToolCallDelta(calls, part.arguments)]
            calls += 1
    return events + [C.Finish(answer.stop_reason), C.UsageEvent(answer.usage)]


class _EventSink:
    """
    Where a turn's stream goes: SSE bytes in (passed through, or
    translated), one websocket text message per event out. The events
    that carry the answer's output are read on the way (L{OutputCollector}).
    """

    def __init__(self, socket: "ResponsesSocket", collector: OutputCollector) -> None:
        self._socket = socket
        self._collector = collector
        self._parser = SSEParser()
        self._registered = False
        #: whether an event has gone to the client
        self.sent = False

    def write(self, data: bytes) -> None:
        for payload in self._parser.feed(data):
            if payload[:1] != b"{":
                continue  # [DONE], or something that is no event
            if (b'output_item.done"' in payload or b'"response.completed"' in payload
                    or b'"response.incomplete"' in payload):
                try:
                    event = loads(payload)
                except (ValueError, UnicodeDecodeError):
                    continue
                if isinstance(event, dict):
                    self._collector.event(event)
            self.sent = True
            self._socket.send(payload)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        transport = self._socket.transport
        if not self._socket.gone and transport is not None:
            self._registered = True
            transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        if self._registered:
            self._registered = False
            if self._socket.transport is not None:
                self._socket.transport.unregisterProducer()


class ResponsesSocket(WebSocketServerProtocol):
    """One client connection: its turns, in order, through the frontend's request path."""

    log = Logger()

    def __init__(self, front: "Frontend", request: IRequest, max_payload: int) -> None:
        super().__init__()
        self.front = front
        self.request = request
        #: autobahn closes the connection (1009) on a bigger message
        self.maxMessagePayloadSize = max_payload
        self.turns = Turns()
        self.gone = False
        #: shutdown has begun: no new turn, and a close once the one under way is done
        self.draining = False
        self._waiting: deque[bytes] = deque()
        self._running: Deferred[None] | None = None
        #: the turn under way has sent an event (its stream is relayed)
        self._sink: _EventSink | None = None
        self._turn_state: str | None = None
        #: the connection's id: its turns' session for affinity, when they name no session of their own
        self.execution = uuid.uuid4().hex

    # -- autobahn's callbacks -------------------------------------------------------

    def connectionMade(self) -> None:
        # The HTTP channel this connection came through registered itself as the
        # transport's producer; a turn's upstream relay is the producer from now on.
        self.transport.unregisterProducer()
        super().connectionMade()

    def onOpen(self) -> None:
        self.front.websocket.opened(self)

    def onConnect(self, request: Any) -> Any:
        turn_state = (request.headers.get(TURN_STATE) or "").strip()
        return (None, {TURN_STATE: turn_state}) if turn_state else None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.gone or self.draining:
            return
        if len(self._waiting) >= MAX_WAITING:
            self.send(error_event(429, {
                "type": "rate_limit_error", "code": "too_many_waiting", "param": None,
                "message": f"{MAX_WAITING} messages are already waiting for the response under way; "
                           "this one was not sent"}))
            return
        self._waiting.append(payload)
        if self._running is None:
            # The turn runs at once up to its first wait (a turn refused on sight finishes right here).
            running = self._running = ensureDeferred(self._pump())
            running.addErrback(self._failed)
            running.addBoth(self._idle, running)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.gone:
            return
        self.gone = True
        self._waiting.clear()
        running, self._running = self._running, None
        if running is not None:
            running.cancel()  # the upstream request, waited for or relayed, is aborted
        self.front.websocket.closed(self)
        request = self.request
        if getattr(request, "channel", None) is not None:
            # The upgrade request ends with its connection (what tracks requests in flight learns so).
            request.connectionLost(Failure(ConnectionDone("websocket closed")))

    # -- sending ----------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        """One text message, if the connection is still open."""
        if not self.gone and self.state == WebSocketProtocol.STATE_OPEN:
            self.sendMessage(payload, isBinary=False)

    def end(self) -> None:
        """
        Close now, as shutdown does when C{timeouts.shutdown-seconds} is up:
        a turn under way ends with an error event and its upstream request
        is aborted; then the close (1001).
        """
        from cliproxyd.frontend.app import SHUTDOWN_MESSAGE, SHUTDOWN_WAITING

        if self._running is not None:
            sink = self._sink
            if sink is not None and sink.sent:
                self.send(dumps({"type": "error", "code": "server_error", "message": SHUTDOWN_MESSAGE,
                                 "param": None, "sequence_number": 0}))
            else:
                self.send(error_event(503, {"type": "server_error", "code": "server_shutting_down",
                                            "message": SHUTDOWN_WAITING, "param": None},
                                      {b"retry-after": b"1"}))
            self._waiting.clear()
            running, self._running = self._running, None
            running.cancel()
        self.close(WebSocketProtocol.CLOSE_STATUS_CODE_GOING_AWAY, SHUTDOWN_REASON)

    def drain(self) -> None:
        """Shutdown has begun: close (1001) now if idle, else once the turn under way is done; take no new turn."""
        self.draining = True
        if self._running is None:
            self.close(WebSocketProtocol.CLOSE_STATUS_CODE_GOING_AWAY, SHUTDOWN_REASON)

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake with C{code} (autobahn's sendClose takes only 1000 and 3000-4999)."""
        if not self.gone and self.state == WebSocketProtocol.STATE_OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123], isReply=False)

    # -- the turns --------------------------------------------------------------------

    async def _pump(self) -> None:
        while self._waiting and not self.gone and not self.draining:
            await self._turn(self._waiting.popleft())

    def _idle(self, _: object, running: Deferred[None]) -> None:
        if self._running is running:
            self._running = None
            if self.draining:
                self.close(WebSocketProtocol.CLOSE_STATUS_CODE_GOING_AWAY, SHUTDOWN_REASON)

    def _failed(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return
        self.log.failure("responses websocket turn failed", failure)
        self.send(error_event(500, {"type": "server_error", "code": "internal_server_error",
                                    "message": "internal error", "param": None}))

    def _count(self, served: Any, model: str, status: int) -> None:
        metrics = self.front.metrics
        if metrics is not None and served.metrics_enabled:
            metrics.request(ROUTE, responses.NAME, served.model_label(model), status)

    async def _turn(self, raw: bytes) -> None:
        from cliproxyd.frontend.app import ClientError, limit_problem, render_responses

        front, request = self.front, self.request
        served = front.served()
        try:
            message = loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            self.send(error_event(400, _invalid(f"The message is not valid JSON: {e}")))
            return
        if not isinstance(message, dict):
            self.send(error_event(400, _invalid("The message must be a JSON object")))
            return
        try:
            body = self.turns.request(message)
        except TurnRefused as e:
            self.send(error_event(e.status, _invalid(e.message, e.code, e.param)))
            return
        model = body["model"]
        metering: Metering | None = None
        try:
            # The key again: a reload may have removed it, or it may have expired since the upgrade.
            try:
                grant = await front._check_access(served, request, render_responses)
            except ClientError as e:
                self.send(client_error_event(e))
                self.close(WebSocketProtocol.CLOSE_STATUS_CODE_POLICY_VIOLATION, "the API key is no longer accepted")
                return
            raw_body = dumps(body)
            if len(raw_body) > served.max_body:
                self.send(error_event(413, _invalid(
                    f"The request is larger than {served.max_body} bytes (max-body-mb)", "request_too_large")))
                return
            try:
                req = ClientRequest.decode(responses, raw_body, None, True, request.requestHeaders)
            except BadRequest as e:
                raise front._refused(render_responses, e, ROUTE) from None
            providers: frozenset[str] = frozenset()
            if isinstance(grant, ClientKey):
                providers = front._scope(served, grant, req, render_responses)
                try:
                    ticket = front.keys.admit(grant, estimate_tokens(len(raw_body)))
                except KeyLimited as e:
                    raise render_responses(limit_problem(e.refusal)) from None
                metering = Metering(front.keys, ticket)
            result = await front._conduct(request, served, served.conductor.execute, req, render_responses,
                                          providers, execution=self.execution)
            collector = OutputCollector()
            ok = await self._relay(served, req, result, collector, metering)
            if ok and collector.done:
                self.turns.completed(body, collector.output or [], collector.response_id)
            self._count(served, model, 200 if ok else 502)
        except ClientError as e:
            self._count(served, model, e.status)
            self.send(client_error_event(e))
        except CancelledError:
            self._count(served, model, 499)
            raise
        finally:
            self._sink = None
            if metering is not None:
                metering.settle()

    async def _relay(self, served: Any, req: ClientRequest, result: Any, collector: OutputCollector,
                     metering: Metering | None) -> bool:
        """The turn's answer to the client, event by event; whether it ended complete."""
        origin = self.front._origin
        sink = self._sink = _EventSink(self, collector)
        if isinstance(result, Reply):  # an upstream that answered a stream with a whole answer
            if metering is not None:
                metering.answer(result)
            data = result.data if result.data is not None else loads(result.body)
            answer = FORMATS[result.fmt].response_to_canonical(data, origin=origin)
            encoder = responses.StreamEncoder(req.model, origin=origin)
            sink.write(b"".join(encoder.feed(e) for e in answer_events(answer)) + encoder.close())
            return True
        upstream = FORMATS[result.fmt]
        if upstream is responses:
            naming = ModelNamingConsumer(sink, responses, req.model) if served.force_mapping(req.model) else None
            relayed: Any = naming or sink
            error = await result.relay.attach(relayed if metering is None else metering.tap(relayed, result.fmt))
            if naming is not None:
                naming.flush()
            if error is not None and not error.relayed:
                sink.write(responses.stream_error_event(error.message))
        else:
            consumer = TranslatingConsumer(sink, upstream.StreamDecoder(origin=origin),
                                           responses.StreamEncoder(req.model, origin=origin))
            error = await result.relay.attach(consumer if metering is None else metering.tap(consumer, result.fmt))
            if error is not None:
                consumer.fail(error.message)
            else:
                consumer.close()
        if error is not None:
            self.log.warn("responses websocket stream for {model} failed after it started: {error}",
                          model=req.model, error=error.message)
        return error is None


def _invalid(message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"type": "invalid_request_error", "code": code, "message": message, "param": param}


class _Factory(WebSocketServerFactory):
    """Builds the connection of the upgrade being rendered (L{ResponsesWebsocket._render})."""

    def __init__(self, front: "Frontend") -> None:
        super().__init__()
        self.front = front
        # failByDrop off: a protocol failure (a message too big: 1009) is told in a close frame before the drop.
        self.setProtocolOptions(autoPingInterval=PING_INTERVAL, autoPingTimeout=PING_TIMEOUT, failByDrop=False)
        #: (request, largest message) of the upgrade being rendered, for buildProtocol
        self.pending: tuple[IRequest, int] | None = None

    def buildProtocol(self, addr: Any) -> ResponsesSocket | None:
        if self.pending is None:
            return None
        request, max_payload = self.pending
        protocol = ResponsesSocket(self.front, request, max_payload)
        protocol.factory = self
        return protocol


class _Upgrade(Resource):
    isLeaf = True

    def __init__(self, owner: "ResponsesWebsocket", max_payload: int) -> None:
        super().__init__()
        self._owner = owner
        self._max_payload = max_payload

    def render(self, request: IRequest) -> Any:
        return self._owner._render(request, self._max_payload)


class ResponsesWebsocket:
    """The frontend's websocket connections: their upgrade, and their end at shutdown."""

    def __init__(self, front: "Frontend") -> None:
        self._factory = _Factory(front)
        self._resource = WebSocketResource(self._factory)
        self._front = front
        #: open connections, by their upgrade request
        self.sockets: dict[IRequest, ResponsesSocket] = {}

    async def upgrade(self, request: IRequest) -> IResource:
        """The upgrade of C{request} (once its key is good), or an error answer in the Responses shape."""
        from cliproxyd.frontend.app import Problem, render_responses

        front = self._front
        served = front.served()
        await front._check_access(served, request, render_responses)
        if not is_upgrade(request):
            raise render_responses(Problem(
                426, "GET /v1/responses is the Responses API over a websocket: connect with "
                     "Upgrade: websocket (or POST /v1/responses over HTTP)", "upgrade_required",
                {b"upgrade": b"websocket"}))
        return _Upgrade(self, served.max_body)

    def _render(self, request: IRequest, max_payload: int) -> Any:
        self._factory.pending = (request, max_payload)
        try:
            return self._resource.render(request)
        finally:
            self._factory.pending = None

    def opened(self, socket: ResponsesSocket) -> None:
        self.sockets[socket.request] = socket

    def closed(self, socket: ResponsesSocket) -> None:
        if self.sockets.get(socket.request) is socket:
            del self.sockets[socket.request]

    def drain(self, request: IRequest) -> None:
        socket = self.sockets.get(request)
        if socket is not None:
            socket.drain()

    def end(self, request: IRequest) -> bool:
        """End the connection upgraded from C{request} (shutdown), if it is one."""
        socket = self.sockets.get(request)
        if socket is None:
            return False
        socket.end()
        return True
