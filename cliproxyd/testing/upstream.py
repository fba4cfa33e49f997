"""
A simulated OpenAI-compatible upstream with scriptable faults per API key.

Used by the tests, the benchmarks and C{twistd cliproxyd --demo}. Each key
has a script: a list of behaviours, one consumed per request, the last one
repeating. A behaviour is one of::

    ok                 answer (JSON, or SSE when the request streams)
    status:CODE[:S]    fail with HTTP CODE and an OpenAI error body; S adds Retry-After: S
    unsupported[:CODE] a 400 (or CODE) saying the model is not supported for this key
    hang               never answer (until the client goes away)
    cut:N              stream N events (the role chunk is the first), then drop
                       the connection (without streaming: drop it before answering)
    stall:N            stream N events, then go silent
    slow:S             wait S seconds before each chunk (or before the answer)
    error-event        open a 200 stream whose first event is an error
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
from typing import Any

from attrs import define, field, frozen
from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.task import deferLater
from twisted.web.iweb import IRequest
from zope.interface import implementer

JSON = b"application/json"

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "sim-small")


@frozen
class Behaviour:
    name: str
    args: tuple[float, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> "Behaviour":
        name, *rest = spec.strip().split(":")
        arity = {"ok": (0, 0), "status": (1, 2), "hang": (0, 0), "cut": (1, 1), "stall": (1, 1),
                 "slow": (1, 1), "error-event": (0, 0), "bytes": (1, 1),
                 "unsupported": (0, 1)}
        if name not in arity:
            raise ValueError(f"unknown behaviour {spec!r}; one of: {', '.join(arity)}")
        low, high = arity[name]
        if not low <= len(rest) <= high:
            raise ValueError(f"behaviour {spec!r} takes {low}..{high} arguments")
        try:
            args = tuple(float(a) for a in rest)
        except ValueError:
            raise ValueError(f"behaviour {spec!r}: arguments must be numbers") from None
        return cls(name, args)


@define
class SeenRequest:
    key: str
    model: str
    stream: bool
    behaviour: str
    disconnected: bool = False
    bytes_sent: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "model": self.model,
            "stream": self.stream,
            "behaviour": self.behaviour,
            "disconnected": self.disconnected,
            "bytes_sent": self.bytes_sent,
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
    _counter: int = 0

    app = Klein()

    def resource(self):
        return self.app.resource()

    def script(self, key: str, *specs: str) -> None:
        """Set the behaviours of C{key}: one per request, the last one repeating."""
        self.scripts[key] = [Behaviour.parse(s) for s in specs]

    def _next(self, key: str) -> Behaviour:
        script = self.scripts.get(key)
        if not script:
            return Behaviour("ok")
        return script.pop(0) if len(script) > 1 else script[0]

    # -- the OpenAI-compatible surface ----------------------------------------

    @app.route("/v1/models", methods=["GET"])
    def list_models(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", JSON)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "simulated"} for m in self.models]
        return json.dumps({"object": "list", "data": data}).encode()

    @app.route("/v1/chat/completions", methods=["POST"])
    async def chat(self, request: IRequest) -> bytes:
        auth = (request.getHeader(b"authorization") or b"").decode("latin-1")
        key = auth[7:] if auth.lower().startswith("bearer ") else auth
        try:
            body = json.loads(request.content.read())
            model = str(body["model"])
            stream = bool(body.get("stream", False))
        except (ValueError, KeyError, TypeError):
            return self._error(request, 400, "invalid JSON body or no model", "invalid_request_error")
        if self.known_keys is not None and key not in self.known_keys:
            return self._error(request, 401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key")
        behaviour = self._next(key)
        seen = SeenRequest(key=key, model=model, stream=stream, behaviour=behaviour.name)
        self.seen.append(seen)
        request.notifyFinish().addErrback(lambda _: setattr(seen, "disconnected", True))
        self._counter += 1
        reply_id = f"chatcmpl-sim-{self._counter}"
        text = f"Hello from the simulated upstream (key ...{key[-6:]})."
        tool_call = None
        messages = body.get("messages") or []
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        if last.get("role") == "tool":
            text = f"The tool said: {last.get('content')}"
        elif body.get("tools"):
            # Asked with tools: call the first one, as a model would.
            name = body["tools"][0].get("function", {}).get("name", "tool")
            tool_call = {"id": f"call_sim_{self._counter}", "name": name, "arguments": '{"city": "Paris"}'}
        b = behaviour
        if b.name == "status":
            code = int(b.args[0])
            if len(b.args) > 1:
                request.setHeader(b"retry-after", b"%d" % int(b.args[1]))
            return self._error(request, code, f"simulated failure {code}", _error_kind(code), None)
        if b.name == "unsupported":
            code = int(b.args[0]) if b.args else 400
            return self._error(request, code, f"The requested model is not supported: {model}",
                               "invalid_request_error", "model_not_supported")
        if b.name == "hang":
            await Deferred()
        if b.name == "cut" and not stream:
            request.channel.transport.abortConnection()
            return b""
        if b.name == "slow" and not stream:
            await deferLater(self.clock, b.args[0])
        if not stream:
            request.setHeader(b"content-type", JSON)
            return json.dumps(_completion(reply_id, model, text, tool_call)).encode()
        return await self._stream(request, b, reply_id, model, text, seen, tool_call)

    async def _stream(
        self, request: IRequest, b: Behaviour, reply_id: str, model: str, text: str, seen: SeenRequest,
        tool_call: dict[str, str] | None = None,
    ) -> bytes:
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-cache")
        request.write(b"")  # send the headers now, whatever follows
        if b.name == "error-event":
            err = {"error": {"message": "simulated in-stream error", "type": "server_error", "code": None}}
            request.write(b"data: " + json.dumps(err).encode() + b"\n\n")
            return b""
        if b.name == "bytes":
            request.write(_event(_chunk(reply_id, model, {"role": "assistant", "content": ""})))
            flood = _Flood(request, _event(_chunk(reply_id, model, {"content": "x" * 4000})), int(b.args[0]), seen)
            request.registerProducer(flood, True)
            flood.resumeProducing()
            await flood.done
            if not flood.stopped:
                request.write(b"data: [DONE]\n\n")
            return b""
        words = text.split(" ")
        deltas = [{"role": "assistant", "content": ""}] + [
            {"content": w if i == 0 else " " + w} for i, w in enumerate(words)
        ]
        finish = "stop"
        if tool_call is not None:
            half = len(tool_call["arguments"]) // 2
            deltas = [{"role": "assistant", "content": None, "tool_calls": [{"index": 0, "id": tool_call["id"],
                       "type": "function", "function": {"name": tool_call["name"], "arguments": ""}}]}] + [
                {"tool_calls": [{"index": 0, "function": {"arguments": part}}]}
                for part in (tool_call["arguments"][:half], tool_call["arguments"][half:])
            ]
            finish = "tool_calls"
        limit = int(b.args[0]) if b.name in ("cut", "stall") else None
        for i, delta in enumerate(deltas):
            if limit is not None and i >= limit:
                if b.name == "cut":
                    request.channel.transport.abortConnection()
                    return b""
                await Deferred()  # stall: silent until the client goes away
            if b.name == "slow":
                await deferLater(self.clock, b.args[0])
            data = _event(_chunk(reply_id, model, delta))
            seen.bytes_sent += len(data)
            request.write(data)
        request.write(_event(_chunk(reply_id, model, {}, finish=finish)))
        usage = {"prompt_tokens": 5, "completion_tokens": len(deltas) - 1, "total_tokens": 4 + len(deltas)}
        request.write(_event({"id": reply_id, "object": "chat.completion.chunk", "created": 0, "model": model,
                              "choices": [], "usage": usage}))
        request.write(b"data: [DONE]\n\n")
        return b""

    def _error(self, request: IRequest, status: int, message: str, kind: str, code: str | None = None) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", JSON)
        return json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()

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


def _error_kind(code: int) -> str:
    if code == 429:
        return "rate_limit_error"
    if code >= 500:
        return "server_error"
    return "invalid_request_error"


def _completion(reply_id: str, model: str, text: str, tool_call: dict[str, str] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    finish = "stop"
    if tool_call is not None:
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": tool_call["id"], "type": "function",
             "function": {"name": tool_call["name"], "arguments": tool_call["arguments"]}}]}
        finish = "tool_calls"
    return {
        "id": reply_id,
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 5, "completion_tokens": len(text.split()), "total_tokens": 5 + len(text.split())},
    }


def _chunk(reply_id: str, model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": reply_id,
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


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
