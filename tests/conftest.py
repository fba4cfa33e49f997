"""Shared fixtures: the reactor for loopback tests, and an in-memory harness."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from cliproxyd.conductor.conductor import Conductor
from cliproxyd.config import parse_config
from cliproxyd.credentials.providers import PROVIDERS
from cliproxyd.formats import openai_chat
from cliproxyd.formats.request import ClientRequest
from cliproxyd.daemon import build_daemon
from cliproxyd.frontend import QuietSite
from cliproxyd.outbound import make_http_client
from cliproxyd.testing.authserver import SimulatedAuthServer
from cliproxyd.testing.upstream import SimulatedUpstream

UPSTREAM = "http://upstream.test/v1"


@pytest.fixture(scope="session")
def reactor():
    """The real reactor, for the few loopback tests (pytest-twisted runs it)."""
    from twisted.internet import reactor as _reactor

    return _reactor


def decode_request(raw: bytes) -> ClientRequest:
    """An OpenAI chat request as the frontend hands it to the conductor."""
    return ClientRequest.decode(openai_chat, raw)


def config_data(keys=("sk-up-1", "sk-up-2"), models=None, **top: Any) -> dict:
    """A config.yaml (as data) with one openai-compatibility provider."""
    provider = {
        "name": "sim",
        "base-url": UPSTREAM,
        "api-key-entries": [{"api-key": k} for k in keys],
        "models": models if models is not None else [{"name": "sim-small", "alias": "gpt-4o-mini"}, {"name": "gpt-4o"}],
    }
    data = {"openai-compatibility": [provider]}
    data.update(top)
    # Most tests time cooldowns to the second: slow start (issue 16, on by
    # default in production) would pass a recovered key over for its ramp.
    # Its own tests set routing.slow-start-seconds.
    routing = data.setdefault("routing", {})
    if isinstance(routing, dict):
        data["routing"] = {"slow-start-seconds": 0, **routing}
    return data


def _now(f, *args):
    """run_in_thread for the in-memory harness: at once, on this thread."""
    return maybeDeferred(f, *args)


class Harness:
    """
    The whole request path in memory, wired as production wires it (by
    L{build_daemon}, with no config file): the generation comes from the
    Assembly through the Runtime, the frontend and the management API read
    it from the source.
    A frontend StubTreq is in front; the executors' HTTP client is a
    StubTreq around the simulated upstream. Time is a Clock.
    """

    def __init__(self, data: dict | None = None, *, warmups: bool = False, wrap_executor=None, **daemon: Any) -> None:
        self.config, self.warnings = parse_config(data if data is not None else config_data())
        self.clock = Clock()
        self.upstream = SimulatedUpstream(self.clock)
        self.up = StubTreq(self.upstream.resource())
        self.daemon = build_daemon(self.clock, self.up, config=self.config, poll=0,
                                   warmup_ttl=self.config.routing.warmup.ttl, run_in_thread=_now,
                                   wrap_executor=wrap_executor, **daemon)
        self.state, self.usage, self.runtime = self.daemon.state, self.daemon.usage, self.daemon.runtime
        self.management = self.daemon.management
        self.runtime.start()
        self.warmups = self.daemon.warmups
        if warmups:
            self.warmups.startService()  # its pruning job runs on the clock
        self.front = StubTreq(self.daemon.resource())

    @property
    def generation(self):
        return self.runtime.current

    @property
    def conductor(self) -> Conductor:
        return self.runtime.current.conductor

    @property
    def creds(self):
        return self.runtime.current.creds

    @property
    def executor(self):
        return self.conductor.executor

    def flush(self) -> None:
        for _ in range(5):
            self.up.flush()
            self.front.flush()

    def settle(self, d: Deferred, advance: float = 0) -> Any:
        """Pump both stubs (and the clock, by C{advance} steps) until C{d} fires."""
        results: list[Any] = []
        d.addBoth(results.append)
        self.flush()
        steps = 0
        while not results and advance and steps < 1000:
            self.clock.advance(advance)
            self.flush()
            steps += 1
        assert results, "the request never finished"
        result = results[0]
        if hasattr(result, "raiseException"):
            result.raiseException()
        return result

    def request(self, method: str, path: str, body: Any = None, headers: dict | None = None,
                advance: float = 0) -> tuple[int, dict, bytes]:
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        resp = self.settle(
            self.front.request(method, "http://proxy.test" + path, data=data, headers=headers or {}),
            advance,
        )
        content = self.settle(self.front.content(resp), advance)
        return resp.code, resp.headers, content

    def chat(self, model: str = "gpt-4o-mini", stream: bool = False, advance: float = 0,
             headers: dict | None = None, **extra: Any) -> tuple[int, dict, bytes]:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
        if stream:
            body["stream"] = True
        return self.request("POST", "/v1/chat/completions", body, headers, advance)

    def keys_seen(self) -> list[str]:
        return [s.key for s in self.upstream.seen]


@pytest.fixture
def harness() -> Harness:
    return Harness()


def nest(levels: int, inner: Any = 1) -> Any:
    """C{inner} inside C{levels} arrays: a value as deep as a test needs."""
    for _ in range(levels):
        inner = [inner]
    return inner


def deep_schema(levels: int) -> dict[str, Any]:
    """A tool schema of C{levels} objects, each the only property of the one around it (two JSON levels each)."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def sse_payloads(body: bytes) -> list[Any]:
    """The JSON payloads of an SSE body ([DONE] as the string)."""
    out = []
    for line in body.split(b"\n"):
        if line.startswith(b"data: "):
            payload = line[6:]
            out.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return out


def unused_port() -> int:
    """A loopback port nothing listens on (free at the moment of asking)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class CountingExecutor:
    """
    An executor double for the count path (the client count endpoints and
    the executors' count_tokens come with the wire-formats work). Each call
    takes the next outcome: an UpstreamError to raise, "local" or "remote".
    """

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.calls = []

    async def count_tokens(self, cred, req, upstream):
        from cliproxyd.replies import Reply, UpstreamError

        self.calls.append(cred.api_key)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, UpstreamError):
            raise outcome
        return Reply(200, b"application/json", b"", local=outcome == "local", tokens=3)


class LoopbackAuthServer:
    """
    A L{SimulatedAuthServer} of one provider on a loopback port, the
    provider pointed at it, and a real HTTP client (the tests' browser).
    """

    def __init__(self, reactor, provider_type: str, **kw: Any) -> None:
        self.sim = SimulatedAuthServer(PROVIDERS[provider_type], reactor, **kw)
        self.port = reactor.listenTCP(0, QuietSite(self.sim.resource()), interface="127.0.0.1")
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"
        self.provider = self.sim.provider_at(self.base)
        self.pool, self.client = make_http_client(reactor, 5)

    async def close(self) -> None:
        await self.pool.closeCachedConnections()
        await self.port.stopListening()


@pytest_twisted.async_yield_fixture
async def auth_server(reactor):
    """Makes L{LoopbackAuthServer}s (C{auth_server("claude", **kw)}), closed after the test."""
    made: list[LoopbackAuthServer] = []

    def make(provider_type: str, **kw: Any) -> LoopbackAuthServer:
        made.append(LoopbackAuthServer(reactor, provider_type, **kw))
        return made[-1]

    yield make
    for server in made:
        await server.close()


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on a free port in tmp_path (L{tests.redis_support}); killed after the test."""
    from tests.redis_support import start_redis

    server = start_redis(tmp_path)
    yield server
    server.stop()
