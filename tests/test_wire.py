"""
What goes over the wire besides the answer: SSE keep-alives
(streaming.keepalive-seconds) and blank lines before a slow JSON answer
(nonstream-keepalive-interval), failover behind them; bootstrap retries of
a stream that failed before its first byte; the upstream's response headers
(passthrough-headers); header defaults and $NAME entry headers. In memory
on a Clock, and on loopback where the bytes themselves matter.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Protocol

from cliproxyd.config import parse_config
from tests.conftest import Harness, config_data, sse_payloads

KA = b": keep-alive\n\n"


def keepalive(seconds=5, **top) -> Harness:
    return Harness(config_data(streaming={"keepalive-seconds": seconds}, **top))


# -- streaming.keepalive-seconds -------------------------------------------------------


def test_sse_keepalives_go_out_while_the_upstream_is_idle_before_and_during_the_stream():
    h = keepalive(5)
    h.upstream.script("sk-up-1", "slow:12")  # 12 s before every chunk
    code, headers, body = h.chat(stream=True, advance=1)
    assert code == 200 and headers.getRawHeaders("content-type") == ["text/event-stream"]
    first = body.index(b"data:")
    # The first chunk (12 s) is the role-only opening, held; the first content comes at 24 s.
    assert body[:first] == KA * 4
    rest = body[first:]
    # The held opening and first content came together, and the end with the last chunk; 12 s between the rest.
    gaps = rest.count(b"data:") - 3
    assert gaps > 0 and rest.count(KA) == 2 * gaps  # two in each 12 s gap after it
    blocks = [b for b in body.split(b"\n\n") if b]
    assert all(b == KA.strip() or b.startswith(b"data: ") for b in blocks)  # never inside an event
    assert sse_payloads(body)[-1] == "[DONE]"


def test_without_the_key_nothing_but_the_answer_is_sent():
    h = Harness()
    h.upstream.script("sk-up-1", "slow:12")
    _, _, body = h.chat(stream=True, advance=1)
    assert b": keep-alive" not in body and body.startswith(b"data:")


def test_failover_goes_on_behind_keepalives_and_the_client_gets_the_next_credentials_answer():
    h = keepalive(5, timeouts={"response-seconds": 20})
    h.upstream.script("sk-up-1", "hang")
    code, _, body = h.chat(stream=True, advance=1)
    assert code == 200
    assert body.startswith(KA * 3)  # 5, 10, 15 s; the first key timed out at 20 s
    assert h.keys_seen() == ["sk-up-1", "sk-up-2"]
    payloads = sse_payloads(body)
    assert payloads[-1] == "[DONE]" and "Hello" in "".join(
        c["choices"][0]["delta"].get("content") or "" for c in payloads[:-1] if c["choices"])


def test_a_request_that_fails_after_keepalives_ends_with_its_formats_error_event():
    h = keepalive(5, timeouts={"response-seconds": 20})
    h.upstream.script("sk-up-1", "hang")
    h.upstream.script("sk-up-2", "hang")
    code, _, body = h.chat(stream=True, advance=1)
    assert code == 200 and body.startswith(KA)
    last = sse_payloads(body)[-1]
    assert "no response within 20s" in last["error"]["message"]


def test_a_failure_before_the_first_keepalive_still_has_its_status():
    h = keepalive(5)
    h.upstream.script("sk-up-1", "status:429:30")
    h.upstream.script("sk-up-2", "status:429:30")
    code, headers, _ = h.chat(stream=True)
    assert code == 429 and headers.getRawHeaders("retry-after")


def test_keepalives_and_passthrough_follow_a_reload(tmp_path):
    from tests.test_wire_payload import Reloadable

    h = Reloadable(tmp_path / "config.yaml", config_data())
    h.upstream.script("sk-up-1", "slow:12")
    _, headers, body = h.chat(stream=True, advance=1)
    assert KA not in body and headers.getRawHeaders("x-ratelimit-remaining-requests") is None
    h.rewrite(config_data(streaming={"keepalive-seconds": 5}, **{"passthrough-headers": True}))
    h.upstream.script("sk-up-1", "slow:12")
    _, _, body = h.chat(stream=True, advance=1)
    assert body.startswith(KA)
    _, headers, _ = h.chat()
    assert headers.getRawHeaders("x-ratelimit-remaining-requests")


# -- nonstream-keepalive-interval ---------------------------------------------------------


def test_blank_lines_go_before_a_slow_json_answer_and_it_still_parses():
    h = Harness(config_data(**{"nonstream-keepalive-interval": 5}))
    h.upstream.script("sk-up-1", "slow:12")
    code, headers, body = h.chat(advance=1)
    assert code == 200 and headers.getRawHeaders("content-type") == ["application/json"]
    assert body.startswith(b"\n\n{")
    assert json.loads(body)["object"] == "chat.completion"


def test_a_json_answer_that_fails_after_blank_lines_is_its_error_body_under_the_200():
    h = Harness(config_data(**{"nonstream-keepalive-interval": 5, "timeouts": {"response-seconds": 20}}))
    h.upstream.script("sk-up-1", "hang")
    h.upstream.script("sk-up-2", "hang")
    code, _, body = h.chat(advance=1)
    assert code == 200 and body.startswith(b"\n")
    assert "no response within 20s" in json.loads(body)["error"]["message"]


def test_responses_answers_get_no_blank_lines_as_in_cliproxyapi():
    h = Harness(config_data(**{"nonstream-keepalive-interval": 5}))
    h.upstream.script("sk-up-1", "slow:12")
    code, _, body = h.request("POST", "/v1/responses", {"model": "gpt-4o-mini", "input": "hi"}, advance=1)
    assert code == 200 and body.startswith(b"{")


# -- streaming.bootstrap-retries --------------------------------------------------------------


def bootstrap(retries: int, **top) -> Harness:
    return Harness(config_data(streaming={"bootstrap-retries": retries}, **top))


def test_a_stream_whose_every_attempt_failed_before_its_first_byte_is_run_again():
    for retries, expected in ((0, 500), (1, 200)):
        h = bootstrap(retries, **{"disable-cooling": True})
        h.upstream.script("sk-up-1", "error-first", "ok")
        h.upstream.script("sk-up-2", "error-first", "ok")
        code, _, body = h.chat(stream=True)
        assert code == expected, body
        assert len(h.keys_seen()) == (2 if retries == 0 else 3)


def test_bootstrap_retries_are_for_streams_only():
    h = bootstrap(1, **{"disable-cooling": True})
    h.upstream.script("sk-up-1", "status:500", "ok")
    h.upstream.script("sk-up-2", "status:500", "ok")
    assert h.chat()[0] == 500
    assert h.chat(stream=True)[0] == 200


def test_a_rerun_that_finds_everything_cooling_answers_the_first_server_error():
    h = bootstrap(2)
    h.upstream.script("sk-up-1", "status:503")
    h.upstream.script("sk-up-2", "status:503")
    code, _, body = h.chat(stream=True)
    assert code == 503 and "simulated failure 503" in body.decode()
    assert len(h.keys_seen()) == 2  # the rerun found both keys cooling and sent nothing


def test_a_failure_another_try_cannot_cure_is_not_retried():
    h = bootstrap(3, **{"disable-cooling": True})
    h.upstream.script("sk-up-1", "status:404")
    h.upstream.script("sk-up-2", "status:404")
    assert h.chat(stream=True)[0] == 404
    assert len(h.keys_seen()) == 2


# -- passthrough-headers ------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_passthrough_headers_pass_the_upstreams_headers_but_gateway_and_own_ones(stream):
    on = Harness(config_data(**{"passthrough-headers": True}))
    code, headers, _ = on.chat(stream=stream)
    assert code == 200
    assert headers.getRawHeaders("x-ratelimit-remaining-requests") == ["999"]
    assert headers.getRawHeaders("x-litellm-model-id") is None
    assert headers.getRawHeaders("content-type") == (["text/event-stream"] if stream else ["application/json"])
    off = Harness()
    _, headers, _ = off.chat(stream=stream)
    assert headers.getRawHeaders("x-ratelimit-remaining-requests") is None


# -- header defaults and entry headers ------------------------------------------------------------


def oauth_harness(tmp_path, **top) -> Harness:
    for name, data in {
        "claude-a.json": {"type": "claude", "access_token": "at-claude", "refresh_token": "r",
                          "base_url": "http://upstream.test"},
        "codex-b.json": {"type": "codex", "access_token": "at-codex", "refresh_token": "r", "account_id": "a-7",
                         "base_url": "http://upstream.test/backend-api/codex"},
    }.items():
        (tmp_path / name).write_text(json.dumps(data))
    return Harness({"auth-dir": str(tmp_path), **top})


def test_claude_and_codex_header_defaults_reach_their_oauth_requests(tmp_path):
    h = oauth_harness(tmp_path, **{
        "claude-header-defaults": {"user-agent": "claude-cli/9.9.9 (external, cli)", "package-version": "0.94.0",
                                   "runtime-version": "v26.3.0", "os": "MacOS", "arch": "arm64", "timeout": "600"},
        "codex-header-defaults": {"user-agent": "codex_cli_rs/0.114.0 (Mac OS 14.2.0; x86_64)"},
    })
    assert h.chat(model="claude-haiku-4-5")[0] == 200
    seen = h.upstream.seen[-1].headers
    assert seen["user-agent"] == "claude-cli/9.9.9 (external, cli)"
    assert (seen["x-stainless-package-version"], seen["x-stainless-runtime-version"], seen["x-stainless-os"],
            seen["x-stainless-arch"], seen["x-stainless-timeout"]) == ("0.94.0", "v26.3.0", "MacOS", "arm64", "600")
    assert h.chat(model="gpt-5-codex")[0] == 200
    assert h.upstream.seen[-1].headers["user-agent"] == "codex_cli_rs/0.114.0 (Mac OS 14.2.0; x86_64)"


def test_without_header_defaults_the_built_in_identity_stays(tmp_path):
    h = oauth_harness(tmp_path)
    h.chat(model="gpt-5-codex")
    seen = h.upstream.seen[-1].headers
    assert seen["user-agent"].startswith("codex-tui/0.146.0") and seen["originator"] == "codex-tui"
    h.chat(model="claude-haiku-4-5")
    seen = h.upstream.seen[-1].headers
    # Claude Code 2.1.220's own headers, as CLIProxyAPI sends them.
    assert seen["user-agent"] == "claude-cli/2.1.220 (external, cli)" and seen["x-app"] == "cli"
    assert (seen["x-stainless-package-version"], seen["x-stainless-runtime-version"], seen["x-stainless-os"],
            seen["x-stainless-arch"], seen["x-stainless-timeout"]) == ("0.94.0", "v26.3.0", "MacOS", "arm64", "600")


def test_entry_headers_are_sent_and_dollar_values_copy_the_clients_header():
    data = config_data()
    data["openai-compatibility"][0]["headers"] = {"X-Team": "blue", "X-Session": "$X-Client-Session"}
    h = Harness(data)
    h.chat(headers={"X-Client-Session": "s-42"})
    seen = h.upstream.seen[-1].headers
    assert seen["x-team"] == "blue" and seen["x-session"] == "s-42"
    h.chat()
    assert "x-session" not in h.upstream.seen[-1].headers  # the client sent none: the header is left out
    assert h.upstream.seen[-1].headers["x-team"] == "blue"


@pytest.mark.parametrize("data, where", [
    ({"streaming": {"keepalive-seconds": "15"}}, "streaming.keepalive-seconds"),
    ({"streaming": {"bootstrap-retries": 1.5}}, "streaming.bootstrap-retries"),
    ({"nonstream-keepalive-interval": True}, "nonstream-keepalive-interval"),
    ({"passthrough-headers": "yes"}, "passthrough-headers"),
    ({"claude-header-defaults": {"user-agent": "a\nb"}}, "claude-header-defaults.user-agent"),
    ({"codex-header-defaults": {"user-agent": 3}}, "codex-header-defaults.user-agent"),
])
def test_bad_wire_values_are_refused_naming_the_yaml_path(data, where):
    from cliproxyd.config import ConfigError

    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert e.value.path == where


def test_wire_keys_load_without_warnings_and_negative_values_turn_features_off():
    config, warnings = parse_config({
        "streaming": {"keepalive-seconds": -1, "bootstrap-retries": -2}, "nonstream-keepalive-interval": -5,
        "passthrough-headers": True, "codex-header-defaults": {"user-agent": "x", "beta-features": "multi_agent"},
    })
    assert (config.streaming.keepalive_seconds, config.streaming.bootstrap_retries,
            config.nonstream_keepalive_interval, config.passthrough_headers) == (0, 0, 0, True)
    assert warnings == ["codex-header-defaults.beta-features: not used by cliproxyd: cliproxyd reaches Codex over "
                        "HTTP only (its Responses websocket is for clients), and beta features go only on an "
                        "upstream websocket"]


# -- on loopback: the bytes themselves ----------------------------------------------------------------


class RawClient(Protocol):
    """Sends one request and keeps every byte of the answer, with when each chunk came."""

    def __init__(self, request: bytes, reactor) -> None:
        self.request = request
        self.reactor = reactor
        self.chunks: list[tuple[float, bytes]] = []
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append((self.reactor.seconds(), data))

    def connectionLost(self, reason) -> None:
        self.done.callback(b"".join(c for _, c in self.chunks))


@pytest_twisted.ensureDeferred
async def test_on_the_wire_keepalives_come_before_the_first_event_and_headers_pass_through(reactor):
    from tests.test_loopback import Daemon

    daemon = Daemon(reactor, streaming={"keepalive-seconds": 0.2}, **{"passthrough-headers": True})
    try:
        daemon.upstream.script("sk-a", "slow:0.7")
        body = json.dumps({"model": "gpt-4o-mini", "stream": True,
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
        port = daemon.port.getHost().port
        request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
        client = RawClient(request, reactor)
        factory = ClientFactory.forProtocol(lambda: client)
        reactor.connectTCP("127.0.0.1", port, factory)
        raw = await client.done
    finally:
        await daemon.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-type: text/event-stream" in head.lower()
    # The headers went out with the first keep-alive, before the upstream's first chunk, so
    # the upstream's own headers could not follow: passthrough applies to answers not yet committed.
    assert b"x-ratelimit-remaining-requests" not in head.lower()
    decoded = dechunk(rest)
    assert decoded.startswith(KA) and decoded.index(KA) < decoded.index(b"data:")
    assert sse_payloads(decoded)[-1] == "[DONE]"


@pytest_twisted.ensureDeferred
async def test_on_the_wire_a_fast_answer_carries_the_upstreams_headers(reactor):
    from tests.test_loopback import Daemon

    daemon = Daemon(reactor, streaming={"keepalive-seconds": 5}, **{"passthrough-headers": True})
    try:
        body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
        port = daemon.port.getHost().port
        request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
        client = RawClient(request, reactor)
        reactor.connectTCP("127.0.0.1", port, ClientFactory.forProtocol(lambda: client))
        raw = await client.done
    finally:
        await daemon.close()
    head = raw.partition(b"\r\n\r\n")[0].lower()
    assert b"x-ratelimit-remaining-requests: " in head
    assert b"x-litellm-model-id" not in head
    assert head.count(b"content-type:") == 1


def dechunk(data: bytes) -> bytes:
    """The body of a chunked HTTP/1.1 answer."""
    out = b""
    while data:
        size, _, data = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out, data = out + data[:n], data[n + 2:]
    return out


# -- shutdown: a request whose keep-alives sent its 200 ---------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_at_the_shutdown_deadline_a_request_kept_alive_ends_with_its_error_and_the_connection_closes(stream):
    from tests.test_formats_frontend import matrix
    from tests.test_site import CHAT, connect, http_body, post, pump, stopping

    h = matrix(streaming={"keepalive-seconds": 5}, **{"nonstream-keepalive-interval": 5})
    h.upstream.script("sk-o", "hang")
    conn = connect(h)
    conn.send(post("/v1/chat/completions", {**CHAT, "model": "via-openai", "stream": stream}))
    pump(h, 12)
    assert conn.received.startswith(b"HTTP/1.1 200 ")  # the keep-alives sent the 200
    stopped = stopping(h)
    pump(h, 30)  # the deadline
    h.clock.advance(0.1)
    assert stopped == [None] and conn.transport.disconnected
    body = http_body(conn.received)
    if stream:
        assert body.startswith(KA) and "nothing was generated" in sse_payloads(body)[-1]["error"]["message"]
    else:
        assert body.startswith(b"\n") and "nothing was generated" in json.loads(body)["error"]["message"]
    assert h.upstream.seen[0].disconnected
    assert h.clock.getDelayedCalls() == []


def test_entry_headers_win_over_built_in_ones_and_auth_files_have_headers_too(tmp_path):
    data = config_data()
    data["openai-compatibility"][0]["headers"] = {"User-Agent": "my-agent/1"}
    h = Harness(data)
    h.chat()
    assert h.upstream.seen[-1].headers["user-agent"] == "my-agent/1"
    (tmp_path / "claude-h.json").write_text(json.dumps({
        "type": "claude", "access_token": "at", "refresh_token": "r", "base_url": "http://upstream.test",
        "headers": {"X-Team": "red", "X-Session": "$X-Client-Session"}}))
    h = Harness({"auth-dir": str(tmp_path)})
    h.chat(model="claude-haiku-4-5", headers={"X-Client-Session": "c-1"})
    seen = h.upstream.seen[-1].headers
    assert seen["x-team"] == "red" and seen["x-session"] == "c-1" and seen["authorization"] == "Bearer at"


def test_an_auth_file_with_bad_headers_is_reported_and_skipped(tmp_path):
    (tmp_path / "claude-h.json").write_text(json.dumps({
        "type": "claude", "access_token": "at", "refresh_token": "r", "headers": ["X-Team"]}))
    h = Harness({"auth-dir": str(tmp_path)})
    assert "headers must be an object" in h.generation.problems["claude-h.json"]


def test_passthrough_headers_come_with_an_upstream_error_too():
    h = Harness(config_data(**{"passthrough-headers": True}))
    h.upstream.script("sk-up-1", "status:429:30")
    h.upstream.script("sk-up-2", "status:429:30")
    code, headers, _ = h.chat()
    assert code == 429
    assert headers.getRawHeaders("x-ratelimit-remaining-requests")
    assert headers.getRawHeaders("x-litellm-model-id") is None
    assert headers.getRawHeaders("retry-after") == ["30"] and headers.getRawHeaders("content-type") == ["application/json"]
    off = Harness()
    off.upstream.script("sk-up-1", "status:429:30")
    off.upstream.script("sk-up-2", "status:429:30")
    assert off.chat()[1].getRawHeaders("x-ratelimit-remaining-requests") is None
