"""
The Responses API over a websocket (GET /v1/responses, Upgrade: websocket),
on real sockets: the daemon's frontend and a simulated upstream on loopback
ports, and an independent client (the C{websockets} library, run in a
thread while the reactor serves). Every wait is bounded.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.threads import blockingCallFromThread, deferToThread
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from cliproxyd.assembly import Assembly
from cliproxyd.config import parse_config
from cliproxyd.frontend import Frontend, InFlight, QuietSite, TrackingSite
from cliproxyd.metrics import Metrics
from cliproxyd.outbound import make_http_client
from cliproxyd.runtime import Runtime
from cliproxyd.state import MemoryStateStore
from cliproxyd.testing.upstream import SimulatedUpstream
from tests.test_loopback import Daemon as LoopbackDaemon
from tests.test_loopback import wait_for

KEY = "sk-client"
FINAL = ("response.completed", "response.incomplete", "response.failed", "error")


def codex_keys(up: str) -> dict:
    """Two codex-api-key credentials (the upstream speaks Responses: events are passed through)."""
    return {"codex-api-key": [{"api-key": k, "base-url": up + "/v1", "models": [{"name": "codex-sim", "alias": "gpt-r"}]}
                              for k in ("sk-a", "sk-b")]}


def chat_keys(up: str) -> dict:
    """Two openai-compatibility keys (the upstream speaks chat completions: events are translated)."""
    return {"openai-compatibility": [{"name": "sim", "base-url": up + "/v1",
                                      "api-key-entries": [{"api-key": "sk-a"}, {"api-key": "sk-b"}],
                                      "models": [{"name": "sim-small", "alias": "gpt-r"}]}]}


class Daemon(LoopbackDaemon):
    """The frontend (on a TrackingSite, as the daemon serves it) and a simulated upstream, on loopback (close() as there)."""

    def __init__(self, reactor, providers: Callable[[str], dict] = codex_keys, path: Any = None, **top: Any) -> None:
        self.upstream = SimulatedUpstream(reactor)
        self.upstream_port = reactor.listenTCP(0, QuietSite(self.upstream.resource()), interface="127.0.0.1")
        up = f"http://127.0.0.1:{self.upstream_port.getHost().port}"
        data = {"api-keys": [KEY], "routing": {"strategy": "fill-first", "slow-start-seconds": 0},
                "timeouts": {"stream-idle-seconds": 30}, **providers(up), **top}
        self.pool, client = make_http_client(reactor, 5)
        assembly = Assembly(client, reactor, MemoryStateStore())
        if path is not None:  # a config file, for reloads
            self.data, self.path = {"auth-dir": str(path.parent), **data}, path
            path.write_text(json.dumps(self.data))
            runtime = self.runtime = Runtime(assembly, config_path=str(path), poll=0)
        else:
            runtime = self.runtime = Runtime(assembly, config=parse_config(data)[0], poll=0)
        runtime.start()
        self.metrics = Metrics()
        self.frontend = Frontend(runtime.source, reactor, metrics=self.metrics)
        self.in_flight = InFlight(reactor, 5, end=self.frontend.end, drain=self.frontend.drain)
        site = TrackingSite(self.frontend.resource(), self.in_flight, runtime.source)
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.url = f"ws://127.0.0.1:{self.port.getHost().port}/v1/responses"

    def keys_seen(self) -> list[str]:
        return [s.key for s in self.upstream.seen]


@pytest.fixture
def daemon(reactor, request):
    d = Daemon(reactor, **getattr(request, "param", {}))
    yield d
    pytest_twisted.blockon(Deferred.fromCoroutine(d.close()))


def opened(url: str, key: str | None = KEY, **headers: str) -> ClientConnection:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return connect(url, additional_headers=headers, open_timeout=10, close_timeout=5)


def turn(ws: ClientConnection, message: dict | str) -> list[dict]:
    """Send one message; the events that come back, up to and with the final one."""
    ws.send(message if isinstance(message, str) else json.dumps(message))
    events = []
    while True:
        event = json.loads(ws.recv(timeout=10))
        events.append(event)
        if event["type"] in FINAL:
            return events


def text_of(events: list[dict]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def in_thread(f: Callable[..., Any], *args: Any) -> Any:
    return deferToThread(f, *args)


def create(text: str, **more: Any) -> dict:
    return {"type": "response.create", "model": "gpt-r", "input": text, **more}


# -- turns ------------------------------------------------------------------------------


@pytest.mark.parametrize("daemon", [{"providers": codex_keys}, {"providers": chat_keys}], indirect=True,
                         ids=["passthrough", "translated"])
@pytest_twisted.ensureDeferred
async def test_turns_in_sequence_continue_one_conversation(daemon):
    def client():
        with opened(daemon.url) as ws:
            first = turn(ws, create("hello", instructions="be brief"))
            second = turn(ws, {"type": "response.create", "previous_response_id": first[-1]["response"]["id"],
                               "input": [{"type": "message", "role": "user", "content": "and again"}]})
            return first, second

    first, second = await in_thread(client)
    # Each turn is counted as a request of its own.
    assert ('cliproxyd_requests_total{format="responses",model="gpt-r",route="/v1/responses (websocket)",'
            'status="200"} 2.0') in daemon.metrics.render().decode()
    for events in (first, second):
        assert [e["type"] for e in events].count("response.completed") == 1
        assert events[-1]["type"] == "response.completed"
        assert events[0]["type"] == "response.created"
        assert text_of(events).startswith("Hello from the simulated upstream")
    assert first[-1]["response"]["id"] != second[-1]["response"]["id"]
    assert len(daemon.upstream.seen) == 2
    sent = daemon.upstream.seen[1].body
    # The stateless upstream got the whole conversation: the first input, its answer, the new input.
    texts = json.dumps(sent)
    assert "hello" in texts and "Hello from the simulated upstream" in texts and "and again" in texts
    assert "previous_response_id" not in texts
    assert "be brief" in texts  # the model and instructions carry over to the turn that named neither
    assert daemon.upstream.seen[1].model in ("codex-sim", "sim-small")


@pytest_twisted.ensureDeferred
async def test_a_failing_credential_fails_over_before_the_first_event(daemon):
    daemon.upstream.script("sk-a", "status:429:30")

    def client():
        with opened(daemon.url) as ws:
            return turn(ws, create("hi")), turn(ws, create("again"))

    first, second = await in_thread(client)
    assert [e for e in first + second if e["type"] == "error"] == []
    assert first[-1]["type"] == second[-1]["type"] == "response.completed"
    # sk-a cooled after its 429: the second turn went straight to sk-b.
    assert daemon.keys_seen() == ["sk-a", "sk-b", "sk-b"]


@pytest_twisted.ensureDeferred
async def test_when_every_credential_fails_the_turn_ends_with_one_error_event_and_the_socket_stays_open(daemon):
    daemon.upstream.script("sk-a", "status:500")
    daemon.upstream.script("sk-b", "status:500")

    def client():
        with opened(daemon.url) as ws:
            return turn(ws, create("hi")), turn(ws, create("hi"))

    failed, cooling = await in_thread(client)
    assert len(failed) == 1 and failed[0]["type"] == "error"
    assert failed[0]["status"] == 500 and failed[0]["error"]["message"]
    # Both credentials cooled down: the next turn, on the same socket, is told so, as an HTTP client would be.
    assert len(cooling) == 1 and cooling[0]["status"] == 429
    assert cooling[0]["error"]["code"] == "model_cooldown" and int(cooling[0]["headers"]["retry-after"]) > 0
    assert daemon.keys_seen() == ["sk-a", "sk-b"]


IDLE = {"timeouts": {"stream-idle-seconds": 1}}


@pytest.mark.parametrize("daemon", [{"providers": codex_keys, **IDLE}, {"providers": chat_keys, **IDLE}],
                         indirect=True, ids=["passthrough", "translated"])
@pytest_twisted.ensureDeferred
async def test_a_stream_that_breaks_after_it_started_ends_with_an_error_event_not_a_completion(daemon):
    # Content, then silence: the upstream goes idle after the client has had part of the answer.
    daemon.upstream.script("sk-a", "stall:6")

    def client():
        with opened(daemon.url) as ws:
            return turn(ws, create("hi")), turn(ws, create("again", previous_response_id="resp_unknown"))

    events, after = await in_thread(client)
    assert text_of(events)  # content had reached the client: too late to fail over
    assert events[-1]["type"] == "error"
    assert "response.completed" not in [e["type"] for e in events]
    assert daemon.keys_seen() == ["sk-a"]
    # A turn that failed is not a response a later turn can continue from.
    assert after[0]["error"]["code"] == "previous_response_not_found"


# -- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["sk-wrong", None])
@pytest_twisted.ensureDeferred
async def test_a_bad_key_is_a_401_before_any_upgrade(daemon, key):
    def client():
        with pytest.raises(InvalidStatus) as caught:
            opened(daemon.url, key)
        return caught.value.response

    response = await in_thread(client)
    assert response.status_code == 401
    assert json.loads(response.body)["error"]["code"] == "invalid_api_key"
    assert daemon.upstream.seen == type(daemon.upstream.seen)()


@pytest_twisted.ensureDeferred
async def test_get_without_the_upgrade_is_a_426_in_the_responses_shape(daemon, reactor):
    import treq

    response = await treq.get(daemon.url.replace("ws://", "http://"), headers={"Authorization": f"Bearer {KEY}"})
    body = json.loads(await response.content())
    assert response.code == 426
    assert body["error"]["code"] == "upgrade_required"


@pytest_twisted.ensureDeferred
async def test_bad_messages_get_an_error_event_and_the_next_turn_is_served(daemon):
    def client():
        with opened(daemon.url, **{"x-codex-turn-state": "ts-1"}) as ws:
            assert ws.response.headers["x-codex-turn-state"] == "ts-1"  # echoed, as CLIProxyAPI does
            return [turn(ws, "{not json"), turn(ws, "[1, 2]"), turn(ws, {"type": "response.cancel"}),
                    turn(ws, {"type": "response.create", "input": "no model"}),
                    turn(ws, create("hi", previous_response_id="resp_elsewhere")),
                    turn(ws, {"type": "response.append", "input": []}),
                    turn(ws, create("hi", model="no-such-model")),
                    turn(ws, create("hi"))]

    *refused, served = await in_thread(client)
    assert [(r[0]["type"], r[0]["status"]) for r in refused] == [
        ("error", 400), ("error", 400), ("error", 400), ("error", 400), ("error", 409), ("error", 400),
        ("error", 404)]
    assert "not valid JSON" in refused[0][0]["error"]["message"]
    assert refused[4][0]["error"]["code"] == "previous_response_not_found"
    assert refused[6][0]["error"]["code"] == "model_not_found"
    assert served[-1]["type"] == "response.completed"
    assert len(daemon.upstream.seen) == 1  # nothing refused went upstream


@pytest.mark.parametrize("daemon", [{"max-body-mb": 1}], indirect=True)
@pytest_twisted.ensureDeferred
async def test_a_message_over_max_body_mb_closes_the_connection_with_message_too_big(daemon):
    def client():
        with opened(daemon.url) as ws:
            served = turn(ws, create("x" * 500_000))
            ws.send(json.dumps(create("x" * 1_100_000)))
            with pytest.raises(ConnectionClosed) as caught:
                ws.recv(timeout=10)
            return served, caught.value.rcvd.code

    served, code = await in_thread(client)
    assert served[-1]["type"] == "response.completed"
    assert code == 1009
    assert len(daemon.upstream.seen) == 1


# -- leaving ------------------------------------------------------------------------------


@pytest.mark.parametrize("behaviour, events", [("stall:3", 2), ("hang", 0)], ids=["mid-stream", "waiting"])
@pytest_twisted.ensureDeferred
async def test_a_client_that_closes_mid_turn_cancels_the_upstream_request(daemon, reactor, behaviour, events):
    daemon.upstream.script("sk-a", behaviour)

    def client():
        with opened(daemon.url) as ws:
            ws.send(json.dumps(create("hi")))
            got = [json.loads(ws.recv(timeout=10)) for _ in range(events)]
            for _ in range(200):  # until the upstream has the request (it answers nothing, or half)
                if daemon.upstream.seen:
                    break
                time.sleep(0.05)
        return got

    got = await in_thread(client)
    assert len(got) == events
    await wait_for(reactor, lambda: len(daemon.upstream.seen) == 1 and daemon.upstream.seen[0].disconnected)
    await wait_for(reactor, lambda: len(daemon.in_flight) == 0)
    assert daemon.frontend.websocket.sockets == {}
    assert daemon.keys_seen() == ["sk-a"]  # a client leaving is no failure: nothing was retried


@pytest_twisted.ensureDeferred
async def test_shutdown_ends_a_turn_with_an_error_event_and_closes_with_going_away(daemon, reactor):
    daemon.upstream.script("sk-a", "stall:3")
    daemon.in_flight._timeout = 0.2

    def client():
        with opened(daemon.url) as ws:
            ws.send(json.dumps(create("hi")))
            got = [json.loads(ws.recv(timeout=10)) for _ in range(2)]
            reactor.callFromThread(daemon.in_flight.stopService)
            try:
                while True:
                    got.append(json.loads(ws.recv(timeout=10)))
            except ConnectionClosed as e:
                return got, e.rcvd.code if e.rcvd else None

    got, code = await in_thread(client)
    assert got[-1]["type"] == "error" and "shutting down" in got[-1]["message"]
    assert code == 1001
    await wait_for(reactor, lambda: daemon.upstream.seen[0].disconnected)
    await wait_for(reactor, lambda: len(daemon.in_flight) == 0)


@pytest_twisted.ensureDeferred
async def test_at_shutdown_an_idle_socket_closes_at_once_and_a_busy_one_after_its_turn(daemon, reactor):
    daemon.upstream.script("sk-a", "slow:0.1")

    def until_closed(ws: ClientConnection) -> tuple[list[dict], int | None]:
        got = []
        try:
            while True:
                got.append(json.loads(ws.recv(timeout=10)))
        except ConnectionClosed as e:
            return got, e.rcvd.code if e.rcvd else None

    def client():
        with opened(daemon.url) as idle, opened(daemon.url) as busy:
            busy.send(json.dumps(create("hi")))
            first = json.loads(busy.recv(timeout=10))
            started = time.monotonic()
            reactor.callFromThread(daemon.in_flight.stopService)
            idle_got, idle_code = until_closed(idle)
            idle_after = time.monotonic() - started
            busy_got, busy_code = until_closed(busy)
            return idle_got, idle_code, idle_after, [first] + busy_got, busy_code

    idle_got, idle_code, idle_after, busy_got, busy_code = await in_thread(client)
    assert (idle_got, idle_code) == ([], 1001)
    assert idle_after < 1.0  # not held until timeouts.shutdown-seconds
    assert busy_got[-1]["type"] == "response.completed" and busy_code == 1001
    assert text_of(busy_got).startswith("Hello from the simulated upstream")
    await wait_for(reactor, lambda: len(daemon.in_flight) == 0)


# -- client keys, affinity, backpressure ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_key_removed_by_a_reload_gets_a_401_and_the_close_on_its_next_turn(reactor, tmp_path):
    daemon = Daemon(reactor, path=tmp_path / "config.yaml", **{"api-keys": [KEY, "sk-other"]})
    try:
        def client():
            with opened(daemon.url) as ws:
                first = turn(ws, create("hi"))
                daemon.path.write_text(json.dumps({**daemon.data, "api-keys": ["sk-other"]}))
                reloaded = blockingCallFromThread(reactor, daemon.runtime.reload)  # it runs on the reactor
                assert reloaded is True
                refused = turn(ws, create("hi"))
                with pytest.raises(ConnectionClosed) as caught:
                    ws.recv(timeout=10)
                return first, refused, caught.value.rcvd.code

        first, refused, code = await in_thread(client)
        assert first[-1]["type"] == "response.completed"
        assert (refused[0]["status"], refused[0]["error"]["code"]) == (401, "invalid_api_key")
        assert code == 1008
        assert len(daemon.upstream.seen) == 1
    finally:
        await daemon.close()

CLIENT_KEYS = {"client-keys": [{"name": "scoped", "key": "sk-scoped", "models": ["other-*"]},
                               {"name": "rpm", "key": "sk-rpm", "rpm": 1}]}


@pytest.mark.parametrize("daemon", [CLIENT_KEYS], indirect=True)
@pytest_twisted.ensureDeferred
async def test_client_keys_have_their_scope_and_limits_on_every_turn(daemon):
    def client():
        with opened(daemon.url, "sk-scoped") as ws:
            scoped = turn(ws, create("hi"))
        with opened(daemon.url, "sk-rpm") as ws:
            return scoped, turn(ws, create("hi")), turn(ws, create("hi"))

    scoped, first, over = await in_thread(client)
    assert (scoped[0]["status"], scoped[0]["error"]["code"]) == (403, "model_not_allowed")
    assert first[-1]["type"] == "response.completed"
    assert (over[0]["status"], over[0]["error"]["code"]) == (429, "client_key_limit")
    assert int(over[0]["headers"]["retry-after"]) >= 1
    assert daemon.keys_seen() == ["sk-a"]


@pytest.mark.parametrize("daemon, sticky", [
    ({"routing": {"strategy": "round-robin", "session-affinity": True, "slow-start-seconds": 0}}, True),
    ({"routing": {"strategy": "round-robin", "slow-start-seconds": 0}}, False),
], indirect=["daemon"], ids=["affinity", "round-robin"])
@pytest_twisted.ensureDeferred
async def test_with_session_affinity_the_turns_of_a_connection_stay_on_one_credential(daemon, sticky):
    def client():
        with opened(daemon.url) as ws:
            for text in ("one", "two", "three"):
                assert turn(ws, create(text))[-1]["type"] == "response.completed"

    await in_thread(client)
    seen = daemon.keys_seen()
    assert len(seen) == 3
    assert (len(set(seen)) == 1) is sticky


TOTAL = 64 * 1024 * 1024


@pytest_twisted.ensureDeferred
async def test_a_client_that_stops_reading_slows_the_upstream(daemon, reactor):
    daemon.upstream.script("sk-a", f"bytes:{TOTAL}")

    def client():
        # The client's own queue holds a few messages, then it stops reading its socket.
        with connect(daemon.url, additional_headers={"Authorization": f"Bearer {KEY}"}, max_queue=4,
                     open_timeout=10, close_timeout=2) as ws:
            ws.send(json.dumps(create("hi")))
            ws.recv(timeout=10)
            time.sleep(1.5)
            return daemon.upstream.seen[0].bytes_sent

    sent = await in_thread(client)
    assert sent < TOTAL / 4, "the upstream kept sending to a client that reads nothing"
    await wait_for(reactor, lambda: daemon.upstream.seen[0].disconnected)
    await wait_for(reactor, lambda: len(daemon.in_flight) == 0)


# -- the daemon as users run it -------------------------------------------------------------


def test_twistd_serves_the_websocket_and_closes_it_going_away_at_sigterm(tmp_path):
    from tests.test_e2e import processes

    def config(up: str) -> dict:
        return {"api-keys": [KEY], "timeouts": {"shutdown-seconds": 20}, **codex_keys(up)}

    with processes(tmp_path, config, "--script", "sk-a=status:503") as (url, _, daemon):
        ws_url = url.replace("http://", "ws://") + "/v1/responses"
        with opened(ws_url, session_id="s-e2e") as ws:
            first = turn(ws, create("hi"))
            second = turn(ws, {"type": "response.create", "previous_response_id": first[-1]["response"]["id"],
                               "input": "and again"})
            assert first[-1]["type"] == second[-1]["type"] == "response.completed"
            assert "(key ...sk-b)" in text_of(second)  # sk-a failed over, then cooled
            started = time.monotonic()
            daemon.p.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as caught:
                ws.recv(timeout=15)
            assert caught.value.rcvd is not None and caught.value.rcvd.code == 1001
            assert time.monotonic() - started < 10  # an idle socket does not hold shutdown-seconds
        assert daemon.p.wait(timeout=20) == 0


@pytest_twisted.ensureDeferred
async def test_wss_through_the_daemons_tls_listener(reactor, tmp_path):
    import ssl

    from tests.test_tls import self_signed, serve_https

    cert, key = self_signed(tmp_path)
    service, port = await serve_https(reactor, tmp_path, cert, key)  # makeService, as twistd builds it
    try:
        def client():
            context = ssl.create_default_context(cafile=str(cert))
            with connect(f"wss://localhost:{port}/v1/responses", ssl=context, open_timeout=10) as ws:
                # The one provider listens nowhere: every attempt fails, and the turn says so in one event.
                return turn(ws, {"type": "response.create", "model": "m1", "input": "hi"})

        events = await in_thread(client)
        assert len(events) == 1 and events[0]["type"] == "error" and events[0]["status"] == 502
        assert events[0]["error"]["code"] == "upstream_unavailable"
    finally:
        await service.stopService()
