"""
End-to-end paths on real sockets, in this process: backpressure, client
disconnects, connection errors. Every wait is bounded.
"""

from __future__ import annotations

import json
from collections import deque

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, capturedLogs

from cliproxyd.assembly import Assembly
from cliproxyd.conductor.warmup import Warmups
from cliproxyd.config import parse_config
from cliproxyd.frontend import Frontend, InFlight, QuietSite, TrackingSite
from cliproxyd.outbound import make_http_client
from cliproxyd.runtime import Runtime
from cliproxyd.state import MemoryStateStore
from cliproxyd.testing.upstream import SimulatedUpstream
from tests.conftest import sse_payloads, unused_port


class Daemon:
    """The frontend and a simulated upstream on loopback ports, with the real HTTP client."""

    def __init__(self, reactor, base_urls: list[str] | None = None, keys=("sk-a", "sk-b"),
                 providers=None, clock=None, warm: bool = False, strategy: str = "fill-first",
                 **top) -> None:
        self.reactor = reactor
        self.upstream = SimulatedUpstream(reactor)
        self.upstream_port = reactor.listenTCP(0, QuietSite(self.upstream.resource()), interface="127.0.0.1")
        own = self.base_url = f"http://127.0.0.1:{self.upstream_port.getHost().port}/v1"
        if providers is not None:
            providers = providers(own)  # built from the simulated upstream's URL
        else:
            providers = [
                {"name": f"p{i}", "base-url": url or own, "api-key-entries": [{"api-key": keys[i]}],
                 "models": [{"name": "sim-small", "alias": "gpt-4o-mini"}]}
                for i, url in enumerate(base_urls or [own, own])
            ]
        routing = {"strategy": strategy,
                   "warmup": {"enabled": warm, "providers": ["warm"], "ttl-seconds": 60, "timeout-seconds": 10}}
        config, _ = parse_config({"openai-compatibility": providers, "routing": routing,
                                  "timeouts": {"stream-idle-seconds": 30}, **top})
        self.pool, client = make_http_client(reactor, 5)
        self.state = MemoryStateStore()
        time = clock or reactor
        self.warmups = Warmups(self.state, time)
        runtime = Runtime(Assembly(client, time, self.state, warmups=self.warmups), config=config, poll=0)
        runtime.start()
        self.conductor = runtime.current.conductor
        self.in_flight = InFlight(reactor, 5)
        frontend = Frontend(runtime.source, reactor)
        site = TrackingSite(frontend.resource(), self.in_flight, runtime.source)
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    async def close(self) -> None:
        await self.port.stopListening()
        await self.upstream_port.stopListening()
        await self.pool.closeCachedConnections()


async def wait_for(reactor, condition, timeout: float = 10.0, step: float = 0.05) -> None:
    for _ in range(int(timeout / step)):
        if condition():
            return
        await deferLater(reactor, step)
    raise AssertionError("condition not met in time")


class SlowReader(Protocol):
    """Sends one request, then reads only the first chunk of the answer."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.first: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.first.called:
            self.transport.pauseProducing()  # stop reading: the socket buffers fill up
            self.first.callback(None)


def chat_request(stream: bool) -> bytes:
    body = json.dumps({"model": "gpt-4o-mini", "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


async def connect(reactor, port: int, protocol: Protocol) -> None:
    factory = ClientFactory.forProtocol(lambda: protocol)
    reactor.connectTCP("127.0.0.1", port, factory)
    await protocol.first


TOTAL = 64 * 1024 * 1024


@pytest_twisted.ensureDeferred
async def test_a_client_that_stops_reading_slows_the_upstream_and_its_disconnect_aborts_it(reactor):
    daemon = Daemon(reactor)
    daemon.upstream.script("sk-a", f"bytes:{TOTAL}")
    try:
        client = SlowReader(chat_request(stream=True))
        await connect(reactor, daemon.port.getHost().port, client)
        seen = daemon.upstream.seen[0]
        # Unpaced, loopback moves 64 MB in well under a second. With the
        # client reading nothing, only socket buffers' worth may leave.
        await deferLater(reactor, 1.5)
        assert seen.bytes_sent < TOTAL / 4, "the upstream kept sending to a client that reads nothing"
        assert len(daemon.in_flight) == 1
        # The client goes away: the upstream request is aborted, nothing is left behind.
        with capturedLogs() as events:
            client.transport.abortConnection()
            await wait_for(reactor, lambda: seen.disconnected)
            await wait_for(reactor, lambda: len(daemon.in_flight) == 0)
        assert seen.bytes_sent < TOTAL
        assert [e for e in events if "log_failure" in e or e.get("log_level") in (LogLevel.error, LogLevel.warn)] == []
    finally:
        await daemon.close()


@pytest_twisted.ensureDeferred
async def test_a_refused_connection_moves_on_to_the_next_provider(reactor):
    import treq

    daemon = Daemon(reactor, base_urls=[f"http://127.0.0.1:{unused_port()}/v1", None])
    try:
        response = await treq.post(daemon.url + "/v1/chat/completions", data=chat_request(False).split(b"\r\n\r\n", 1)[1],
                                   headers={"content-type": "application/json"}, timeout=10)
        body = json.loads(await response.content())
        assert response.code == 200
        assert body["choices"][0]["message"]["content"].endswith("(key ...sk-b).")
        # The unreachable key cools, so the next requests do not try it first.
        refused = daemon.conductor.creds[0]
        state = daemon.state.model_state(refused.id, "gpt-4o-mini")
        assert state.reason == "connect" and state.blocked(reactor.seconds())
        assert state.next_retry_at - reactor.seconds() <= 30
        response = await treq.post(daemon.url + "/v1/chat/completions", data=chat_request(False).split(b"\r\n\r\n", 1)[1],
                                   headers={"content-type": "application/json"}, timeout=10)
        assert response.code == 200 and b"(key ...sk-b)" in await response.content()
        assert daemon.state.stats(refused.id).failures == 1
    finally:
        await daemon.close()


@pytest_twisted.ensureDeferred
async def test_a_stream_that_closes_before_its_first_payload_fails_over_on_real_sockets(reactor):
    import treq

    daemon = Daemon(reactor)
    daemon.upstream.script("sk-a", "cut:0")
    try:
        body = chat_request(True).split(b"\r\n\r\n", 1)[1]
        response = await treq.post(daemon.url + "/v1/chat/completions", data=body,
                                   headers={"content-type": "application/json"}, timeout=10)
        text = (await response.content()).decode()
        assert response.code == 200
        assert text.rstrip().endswith("data: [DONE]")
        assert "(key ...sk-b)" in "".join(
            c["delta"].get("content", "")
            for line in text.splitlines() if line.startswith("data: {")
            for c in json.loads(line[6:])["choices"])
        assert [s.key for s in daemon.upstream.seen] == ["sk-a", "sk-b"]
    finally:
        await daemon.close()


async def post_chat(daemon: Daemon, model: str, stream: bool = False) -> tuple[int, bytes]:
    import treq

    body = json.dumps({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
    response = await treq.post(daemon.url + "/v1/chat/completions", data=body.encode(),
                               headers={"content-type": "application/json"}, timeout=10)
    return response.code, await response.content()


def one_provider(url, keys, models, name="sim"):
    return {"name": name, "base-url": url, "api-key-entries": [{"api-key": k} for k in keys], "models": models}


@pytest_twisted.ensureDeferred
async def test_loopback_fallback_across_an_alias_pool(reactor):
    pool = [{"name": "up-a", "alias": "pool"}, {"name": "up-b", "alias": "pool"}]
    daemon = Daemon(reactor, providers=lambda url: [one_provider(url, ["only"], pool)])
    daemon.upstream.script("only", "unsupported", "ok")
    try:
        for _ in range(3):
            code, _ = await post_chat(daemon, "pool")
            assert code == 200
        assert [s.model for s in daemon.upstream.seen] == ["up-a", "up-b", "up-b", "up-b"]
    finally:
        await daemon.close()


@pytest_twisted.ensureDeferred
async def test_loopback_warmup_reaches_the_secondary_without_delaying_the_user(reactor):
    from twisted.internet.task import Clock

    clock = Clock()  # the conductor's and the warmups' time: it never moves in this test
    models = [{"name": "sim-small", "alias": "gpt-4o-mini"}]
    daemon = Daemon(reactor, clock=clock, warm=True,
                    providers=lambda url: [one_provider(url, ["a1"], models, "sim"),
                                           one_provider(url, ["w1"], models, "warm")])
    daemon.upstream.script("w1", "hang")
    try:
        code, body = await post_chat(daemon, "gpt-4o-mini")
        assert code == 200 and b"(key ...a1)" in body
        await wait_for(reactor, lambda: any(s.key == "w1" for s in daemon.upstream.seen))
        assert clock.seconds() == 0  # the user's answer did not wait for anything
        assert daemon.warmups.status(daemon.conductor.settings.warmup)["in_flight"] == ["warm"]
    finally:
        daemon.warmups.stopService()
        await daemon.close()


@pytest_twisted.ensureDeferred
async def test_loopback_a_claude_429_moves_claude_while_gemini_stays(reactor):
    models = [{"name": "claude-sonnet-4-5"}, {"name": "claude-opus-4-1"}, {"name": "gemini-2.5-pro"}]
    # The default quota groups apply to a provider named antigravity.
    daemon = Daemon(reactor, providers=lambda url: [one_provider(url, ["ag-1", "ag-2"], models, "antigravity")])
    daemon.upstream.script("ag-1", "status:429:600", "ok")
    try:
        assert (await post_chat(daemon, "claude-sonnet-4-5"))[0] == 200
        daemon.upstream.seen.clear()
        assert (await post_chat(daemon, "claude-opus-4-1"))[0] == 200
        assert (await post_chat(daemon, "gemini-2.5-pro", stream=True))[0] == 200
        assert [(s.key, s.model) for s in daemon.upstream.seen] == [
            ("ag-2", "claude-opus-4-1"), ("ag-1", "gemini-2.5-pro")]
    finally:
        await daemon.close()


STREAMS = 400
CONCURRENCY = 16


@pytest_twisted.ensureDeferred
async def test_error_first_streams_that_end_in_the_same_read_never_poison_the_connection_pool(reactor):
    """
    One key of three answers every stream with an error event and ends the
    body in the same write. Its connections must never go back to the pool
    half-closed: no healthy key fails, nothing is sent twice, every client
    gets the healthy keys' answer.
    """
    import treq
    from twisted.internet.defer import DeferredSemaphore, gatherResults

    keys = ("sk-bad", "sk-good-1", "sk-good-2")
    models = [{"name": "sim-small", "alias": "gpt-4o-mini"}]
    daemon = Daemon(reactor, providers=lambda url: [one_provider(url, keys, models)], strategy="round-robin",
                    **{"disable-cooling": True})
    daemon.upstream.script("sk-bad", "error-first")
    daemon.upstream.seen = deque(maxlen=STREAMS * len(keys))
    answers: dict[int, tuple[int, bytes]] = {}

    async def one(n: int) -> None:
        body = json.dumps({"model": "gpt-4o-mini", "stream": True,
                           "messages": [{"role": "user", "content": f"marker-{n}"}]}).encode()
        response = await treq.post(daemon.url + "/v1/chat/completions", data=body,
                                   headers={"content-type": "application/json"}, timeout=10)
        answers[n] = (response.code, await response.content())

    limit = DeferredSemaphore(CONCURRENCY)
    try:
        work = gatherResults([limit.run(lambda n=n: Deferred.fromCoroutine(one(n))) for n in range(STREAMS)],
                             consumeErrors=True)
        await work.addTimeout(20, reactor)  # about 2 s on loopback; the bound keeps a hang from lasting
    finally:
        await daemon.close()
    codes = [code for code, _ in answers.values()]
    assert codes.count(502) == 0 and set(codes) == {200}
    for n, (_, raw) in answers.items():
        payloads = sse_payloads(raw)
        assert payloads[-1] == "[DONE]", (n, raw[-300:])
        text = "".join(c["delta"].get("content") or "" for p in payloads[:-1] for c in p["choices"])
        assert text.startswith("Hello from the simulated upstream"), (n, raw[-300:])
        assert text.endswith(("(key ...good-1).", "(key ...good-2).")), (n, text)
    seen: dict[str, list[str]] = {}
    for s in daemon.upstream.seen:
        seen.setdefault(s.body["messages"][0]["content"], []).append(s.key)
    assert len(seen) == STREAMS
    for marker, who in seen.items():
        healthy = [k for k in who if k != "sk-bad"]
        assert len(healthy) == 1 and len(who) == len(set(who)), (marker, who)
