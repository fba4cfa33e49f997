"""
The fault matrix: for each kind of upstream fault, requests through the real
daemon on loopback (the parts ``build_daemon`` wires, real sockets, the real
HTTP client and pool) to a pool of three keys, one of them faulty, while the
other two stay healthy. Every request carries a marker, so each case counts:

- correct: the client got a whole, proper answer (a 200 with the content,
  a stream that ends with its final event);
- errored: the client got an error in its own format (only allowed where
  the fault comes after content reached the client);
- lost: the connection ended with no answer, or a 200 with no content;
- hung: no answer within the case's bound;
- duplicated: the upstream answered one request successfully more than once
  (billed twice).

With a healthy key in the pool, nothing may be lost, hung or duplicated,
and every fault that comes before the first byte fails over. Each case is
bounded in time.
"""

from __future__ import annotations

import itertools
import json

import pytest
import pytest_twisted
import treq
from attrs import define, field
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import deferLater

from cliproxyd.config import parse_config
from cliproxyd.daemon import build_daemon
from cliproxyd.frontend import QuietSite, TrackingSite
from cliproxyd.outbound import make_http_client
from cliproxyd.testing.upstream import SimulatedUpstream
from tests.conftest import unused_port

KEYS = ("bad", "good-1", "good-2")
#: Requests per case and how many run at once.
REQUESTS = 24
CONCURRENCY = 8
#: No request of a case may take longer than this (seconds).
BOUND = 8.0
#: The response and idle timeouts of the hang and stall cases. They apply to the healthy keys
#: too, so they sit well above what a loaded CI machine takes to answer on loopback (0.3 s
#: did not: a healthy key timed out now and then, and its client got a 504).
HANG_LIMIT = 1.5


@define
class Tally:
    sent: int = 0
    correct: int = 0
    errored: int = 0
    lost: int = 0
    hung: int = 0
    duplicated: int = 0
    problems: list[str] = field(factory=list)


class Rig:
    """The daemon and a simulated upstream on loopback; the bad key may point at a port nobody listens on."""

    def __init__(self, reactor, timeouts: dict[str, float], refused: bool = False, config_path=None) -> None:
        self.reactor = reactor
        self.upstream = SimulatedUpstream(reactor)
        self.upstream_port = reactor.listenTCP(0, QuietSite(self.upstream.resource()), interface="127.0.0.1")
        url = f"http://127.0.0.1:{self.upstream_port.getHost().port}/v1"
        bad_url = f"http://127.0.0.1:{unused_port()}/v1" if refused else url
        models = [{"name": "sim-small", "alias": "gpt-4o-mini"}]
        providers = [
            {"name": "a-bad", "base-url": bad_url, "api-key-entries": [{"api-key": "bad"}], "models": models},
            {"name": "b-good", "base-url": url, "api-key-entries": [{"api-key": k} for k in KEYS[1:]],
             "models": models},
        ]
        data = {"openai-compatibility": providers, "timeouts": timeouts}
        config, _ = parse_config(data)
        self.pool, client = make_http_client(reactor, config.timeouts.connect)
        if config_path is not None:
            # A config file, for reloads under load (read in threads, as in the daemon).
            self.data, self.config_path = data, config_path
            config_path.write_text(json.dumps(data))
            self.daemon = build_daemon(reactor, client, config_path=str(config_path), poll=0)
        else:
            self.daemon = build_daemon(reactor, client, config=config, poll=0)
        self.daemon.runtime.start()
        site = TrackingSite(self.daemon.resource(), self.daemon.in_flight, self.daemon.source)
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    async def close(self) -> None:
        await self.port.stopListening()
        await self.upstream_port.stopListening()
        await self.pool.closeCachedConnections()


def _body(marker: str, stream: bool) -> bytes:
    return json.dumps({"model": "gpt-4o-mini", "stream": stream,
                       "messages": [{"role": "user", "content": marker}]}).encode()


def _judge(code: int, raw: bytes, stream: bool) -> str:
    """correct, errored or lost, for one answer as a client sees it."""
    if code != 200:
        try:
            error = json.loads(raw)["error"]
        except (ValueError, KeyError, TypeError):
            return "lost"
        return "errored" if error.get("message") else "lost"
    if not stream:
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, TypeError, IndexError):
            return "lost"
        return "correct" if content else "lost"
    payloads = [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]
    if any(b'"error"' in p for p in payloads):
        return "errored"
    text = "".join(
        (json.loads(p)["choices"][0].get("delta", {}).get("content") or "")
        for p in payloads if p != b"[DONE]" and json.loads(p).get("choices"))
    return "correct" if payloads and payloads[-1] == b"[DONE]" and text else "lost"


async def run_case(reactor, rig: Rig, stream: bool, requests: int = REQUESTS) -> Tally:
    tally = Tally(sent=requests)
    markers = [f"req-{i}" for i in range(requests)]
    semaphore = DeferredSemaphore(CONCURRENCY)

    async def one(marker: str) -> None:
        d = treq.post(rig.url + "/v1/chat/completions", data=_body(marker, stream),
                      headers={"content-type": "application/json"})
        d.addTimeout(BOUND, reactor)
        try:
            response = await d
            raw = await response.content()
        except Exception as e:
            kind = "hung" if "TimeoutError" in type(e).__name__ or "Cancelled" in type(e).__name__ else "lost"
            setattr(tally, kind, getattr(tally, kind) + 1)
            tally.problems.append(f"{marker}: {kind} ({type(e).__name__})")
            return
        verdict = _judge(response.code, raw, stream)
        setattr(tally, verdict, getattr(tally, verdict) + 1)
        if verdict != "correct":
            tally.problems.append(f"{marker}: {verdict} {response.code} {raw[:200]!r}")

    await gatherResults([semaphore.run(lambda m=m: Deferred.fromCoroutine(one(m))) for m in markers])
    await deferLater(reactor, 0.05)  # let the upstream notice the last disconnects
    answered: dict[str, int] = {}
    for seen in rig.upstream.seen:
        body = seen.body if isinstance(seen.body, dict) else {}
        messages = body.get("messages") or [{}]
        marker = messages[0].get("content") if isinstance(messages[0], dict) else None
        if seen.behaviour == "ok" and not seen.disconnected and isinstance(marker, str):
            answered[marker] = answered.get(marker, 0) + 1
    tally.duplicated = sum(n - 1 for n in answered.values() if n > 1)
    return tally


#: (case id, the bad key's script, timeouts, whether the bad key's port refuses connections,
#:  whether a client may see an error: only when the fault comes after content reached it)
CASES: list[tuple[str, tuple[str, ...], dict[str, float], bool, bool]] = [
    ("429 with a reset hint", ("status:429:60",), {}, False, False),
    ("429 without a hint", ("status:429",), {}, False, False),
    ("401", ("status:401",), {}, False, False),
    ("403", ("status:403",), {}, False, False),
    ("500", ("status:500",), {}, False, False),
    ("502", ("status:502",), {}, False, False),
    ("503 with Retry-After", ("status:503:5",), {}, False, False),
    ("529 overloaded", ("status:529",), {}, False, False),
    ("model not supported", ("unsupported",), {}, False, False),
    ("hang before the headers", ("hang",), {"response-seconds": HANG_LIMIT}, False, False),
    ("connection refused", ("ok",), {}, True, False),
    ("cut before the first event", ("cut:0",), {}, False, False),
    ("silent before the first event", ("stall:0",), {"stream-idle-seconds": HANG_LIMIT}, False, False),
    ("error as the first event", ("error-event",), {}, False, False),
    ("slow but healthy", ("slow:0.02",), {}, False, False),
    # Faults inside a 200, each a shape some provider uses.
    ("error first, ended in the same write", ("error-first",), {}, False, False),
    ("error first, whitespace inside", ("error-first:openai-spaced",), {}, False, False),
    ("Claude overloaded_error first", ("error-first:claude",), {}, False, False),
    ("Responses rate-limit error first", ("error-first:responses",), {}, False, False),
    ("Responses response.failed first", ("error-first:responses-failed",), {}, False, False),
    ("Gemini RESOURCE_EXHAUSTED first", ("error-first:gemini",), {}, False, False),
    ("error after the opening events", ("preamble-error",), {}, False, False),
    ("overloaded", ("overloaded",), {}, False, False),
    ("keep-alives and no content", ("keepalive:0.05",), {"stream-idle-seconds": HANG_LIMIT}, False, False),
    ("ended cleanly before any content", ("end-early:1",), {}, False, False),
    ("200 with a truncated body", ("garbage:truncated",), {}, False, False),
    ("200 with an empty body", ("garbage:empty",), {}, False, False),
    ("200 with an HTML body", ("garbage:html",), {}, False, False),
    # After content: the client gets an error in its format, never a made-up end.
    ("an error after content", ("error-after:3",), {}, False, True),
    ("ended cleanly after content", ("end-early:3",), {}, False, True),
    ("close-delimited, cut after content", ("end-early:3:close",), {}, False, True),
    ("cut after content", ("cut:3",), {}, False, True),
    ("silent after content", ("stall:3",), {"stream-idle-seconds": HANG_LIMIT}, False, True),
]


#: Every case streamed and whole, but the faults after content: only a stream has content before its end.
MATRIX = [pytest.param(*case, stream, id=f"{case[0]}-{'stream' if stream else 'whole'}")
          for case in CASES for stream in (False, True) if stream or not case[4]]


@pytest.mark.parametrize("case, script, timeouts, refused, after_content, stream", MATRIX)
@pytest_twisted.ensureDeferred
async def test_no_fault_reaches_a_client_while_a_healthy_key_remains(
        reactor, case, script, timeouts, refused, after_content, stream):
    rig = Rig(reactor, {"stream-idle-seconds": 5, **timeouts}, refused=refused)
    rig.upstream.script("bad", *script)
    try:
        tally = await run_case(reactor, rig, stream)
    finally:
        await rig.close()
    assert (tally.lost, tally.hung, tally.duplicated) == (0, 0, 0), tally.problems
    if after_content:
        # Content already reached the client when the fault came: an error in
        # its format, never a silent end, and only for the bad key's share.
        assert tally.correct + tally.errored == tally.sent and tally.errored <= tally.sent // 2 + 1, tally.problems
    else:
        assert tally.correct == tally.sent, tally.problems


@pytest_twisted.ensureDeferred
async def test_every_key_failing_ends_in_the_formats_error_never_a_loss(reactor):
    """No healthy key: every client gets an error answer (the last upstream error), none is lost or hung."""
    rig = Rig(reactor, {"stream-idle-seconds": 5})
    for key in KEYS:
        rig.upstream.script(key, "status:503")
    try:
        for stream in (False, True):
            tally = await run_case(reactor, rig, stream, requests=8)
            assert (tally.lost, tally.hung, tally.duplicated, tally.correct) == (0, 0, 0, 0), tally.problems
            assert tally.errored == 8
    finally:
        await rig.close()


class _Leaver(Protocol):
    """Sends one stream request and hangs up at its first chunk."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.left: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        if not self.left.called:
            self.transport.loseConnection()
            self.left.callback(None)


@pytest_twisted.ensureDeferred
async def test_clients_that_leave_mid_stream_cost_nothing_to_the_others(reactor):
    """Six clients drop their connection at the first chunk; the upstream sees them go, the rest are answered."""
    rig = Rig(reactor, {"stream-idle-seconds": 5})
    for key in KEYS:
        rig.upstream.script(key, "slow:0.05")
    try:
        leavers = []
        for i in range(6):
            body = _body(f"leave-{i}", True)
            request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(body)) + body
            leaver = _Leaver(request)
            reactor.connectTCP("127.0.0.1", rig.port.getHost().port, ClientFactory.forProtocol(lambda p=leaver: p))
            leavers.append(leaver.left)
        d = gatherResults(leavers)
        d.addTimeout(BOUND, reactor)
        await d
        tally = await run_case(reactor, rig, True, requests=12)
        await deferLater(reactor, 0.2)
        gone = [s for s in rig.upstream.seen if isinstance(s.body, dict)
                and str(s.body["messages"][0]["content"]).startswith("leave-")]
    finally:
        await rig.close()
    assert (tally.lost, tally.hung, tally.duplicated) == (0, 0, 0), tally.problems
    assert tally.correct == 12
    assert len(gone) == 6 and all(s.disconnected for s in gone)  # each left, and its upstream request was dropped
    assert rig.daemon.in_flight.__len__() == 0


@pytest_twisted.ensureDeferred
async def test_reloads_under_load_lose_nothing(reactor, tmp_path):
    """Config changes land every few milliseconds while requests run: each request finishes on its generation."""
    rig = Rig(reactor, {"stream-idle-seconds": 5}, config_path=tmp_path / "config.yaml")
    for key in KEYS:
        rig.upstream.script(key, "slow:0.01")
    changes = itertools.cycle([
        {"request-retry": 1},
        {"routing": {"strategy": "fill-first"}},
        {"max-retry-credentials": 2},
        {},
    ])
    running = True

    async def reload_forever() -> int:
        count = 0
        while running:
            rig.config_path.write_text(json.dumps({**rig.data, **next(changes)}))
            if await rig.daemon.runtime.reload("test"):
                count += 1
            await deferLater(reactor, 0.005)
        return count

    reloads = Deferred.fromCoroutine(reload_forever())
    try:
        whole = await run_case(reactor, rig, False, requests=40)
        streams = await run_case(reactor, rig, True, requests=40)
    finally:
        running = False
        applied = await reloads
        await rig.close()
    for tally in (whole, streams):
        assert (tally.lost, tally.hung, tally.duplicated) == (0, 0, 0), tally.problems
        assert tally.correct == tally.sent, tally.problems
    assert applied >= 10 and rig.daemon.runtime.reloads["rejected"] == 0


def test_the_matrix_covers_every_fault_class():
    """The cases name each class of fault the issue lists; adding a behaviour to the upstream adds a case."""
    kinds = {script[0].split(":")[0] for _, script, *_ in CASES}
    assert kinds >= {"status", "unsupported", "hang", "ok", "cut", "stall", "error-event", "slow", "error-first",
                     "preamble-error", "overloaded", "keepalive", "error-after", "end-early", "garbage"}
    assert len(MATRIX) >= 60
