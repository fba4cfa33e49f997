"""
Issue 18: GET /metrics in Prometheus's text format. What a request, an
attempt, a cooldown, a refresh and a warmup show there; who may read it
(the management API's rules, or anyone with metrics.public); the
x-cliproxyd-overhead-ms header; metrics.enabled false; several processes
summed (prometheus-client's multiprocess mode). In memory on a Clock, and
processes of their own for multiprocess mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families

from cliproxyd.config import parse_config
from cliproxyd.metrics import CONTENT_TYPE, Metrics
from cliproxyd.state.records import ModelState
from tests.conftest import Harness, config_data

SECRET = "mgmt-secret-1"
AUTH = {"Authorization": f"Bearer {SECRET}"}


def rig(metrics: dict | None = None, secret: str = SECRET, **top) -> Harness:
    data = config_data(**{"remote-management": {"secret-key": secret}}, **top)
    if metrics is not None:
        data["metrics"] = metrics
    return Harness(data)


def scrape(h: Harness, headers: dict | None = None) -> dict[tuple[str, tuple], float]:
    """GET /metrics: every sample, by name and sorted labels."""
    code, resp_headers, body = h.request("GET", "/metrics", headers=AUTH if headers is None else headers)
    assert code == 200, body
    assert resp_headers.getRawHeaders("content-type") == [CONTENT_TYPE.decode()]
    return samples(body.decode())


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def fingerprint(h: Harness, key: str) -> str:
    return next(c.fingerprint for c in h.creds if c.api_key == key)


# -- what is counted ---------------------------------------------------------------------


def test_requests_are_counted_by_route_format_model_and_status():
    h = rig()
    assert h.chat()[0] == 200
    assert h.chat()[0] == 200
    assert h.chat(model="no-such-model")[0] == 404
    assert h.request("POST", "/v1/messages", {"model": "gpt-4o", "max_tokens": 5,
                                               "messages": [{"role": "user", "content": "hi"}]})[0] == 200
    found = scrape(h)
    chat = dict(route="/v1/chat/completions", format="openai")
    assert value(found, "cliproxyd_requests_total", **chat, model="gpt-4o-mini", status="200") == 2
    # A name no credential serves is not a label of its own (a client may send any).
    assert value(found, "cliproxyd_requests_total", **chat, model="other", status="404") == 1
    assert value(found, "cliproxyd_requests_total", route="/v1/messages", format="claude", model="gpt-4o",
                 status="200") == 1
    assert not any("no-such-model" in str(labels) for _, labels in found)


def test_a_thinking_suffix_is_counted_under_its_model():
    h = rig()
    h.chat(model="gpt-4o(high)")
    found = scrape(h)
    assert value(found, "cliproxyd_requests_total", route="/v1/chat/completions", format="openai",
                 model="gpt-4o", status="200") == 1


def test_attempts_show_provider_fingerprint_model_and_outcome_and_never_a_key():
    h = rig()
    # A cooldown a removed key left in the store (a snapshot, another instance) is no gauge's.
    h.state.set_model_state("removed-key", "gpt-4o-mini", ModelState(
        unavailable=True, next_retry_at=h.clock.seconds() + 600, reason="quota", last_status=429))
    h.upstream.script("sk-up-1", "status:429:30")
    assert h.chat()[0] == 200  # sk-up-1's 429, then sk-up-2
    text = h.request("GET", "/metrics", headers=AUTH)[2].decode()
    found = samples(text)
    first, second = fingerprint(h, "sk-up-1"), fingerprint(h, "sk-up-2")
    attempts = "cliproxyd_upstream_attempts_total"
    assert value(found, attempts, provider="sim", credential=first, model="gpt-4o-mini", outcome="429") == 1
    assert value(found, attempts, provider="sim", credential=second, model="gpt-4o-mini", outcome="success") == 1
    assert "sk-up-1" not in text and "sk-up-2" not in text
    assert value(found, "cliproxyd_upstream_seconds_count", provider="sim") == 2
    # The first-byte histogram is the streams' (a JSON answer's first byte comes with its whole body).
    assert value(found, "cliproxyd_upstream_first_byte_seconds_count", provider="sim") == 0
    # The 429 cooled sk-up-1 down: the gauge says so while it lasts, and not after.
    assert value(found, "cliproxyd_cooldowns", provider="sim", model="gpt-4o-mini") == 1
    assert sum(v for (name, _), v in found.items() if name == "cliproxyd_cooldowns") == 1
    assert value(found, "cliproxyd_credentials", provider="sim") == 2
    h.clock.advance(31)
    assert value(scrape(h), "cliproxyd_cooldowns", provider="sim", model="gpt-4o-mini") == 0


def test_a_connection_that_never_answered_is_no_response():
    h = rig(timeouts={"response-seconds": 5})
    h.upstream.script("sk-up-1", "hang")
    assert h.chat(advance=1)[0] == 200
    found = scrape(h)
    assert value(found, "cliproxyd_upstream_attempts_total", provider="sim", credential=fingerprint(h, "sk-up-1"),
                 model="gpt-4o-mini", outcome="no_response") == 1


def test_a_streams_first_byte_comes_before_its_end_and_the_overhead_leaves_out_the_upstream():
    h = rig()
    h.upstream.script("sk-up-1", "slow:2")  # 2 s before every chunk
    h.upstream.script("sk-up-2", "slow:2")
    code, _, body = h.chat(stream=True, advance=0.5)
    assert code == 200 and b"[DONE]" in body
    found = scrape(h)
    first = value(found, "cliproxyd_upstream_first_byte_seconds_sum", provider="sim")
    total = value(found, "cliproxyd_upstream_seconds_sum", provider="sim")
    assert 2 <= first < total
    assert value(found, "cliproxyd_upstream_first_byte_seconds_count", provider="sim") == 1
    # cliproxyd itself took no time on the Clock: all of it was the upstream's.
    assert value(found, "cliproxyd_overhead_seconds_count", path="passthrough") == 1
    assert value(found, "cliproxyd_overhead_seconds_sum", path="passthrough") == 0
    code, _, _ = h.chat(stream=True, advance=0.5, model="gpt-4o")
    h.request("POST", "/v1/messages", {"model": "gpt-4o", "max_tokens": 5,
                                        "messages": [{"role": "user", "content": "hi"}]}, advance=0.5)
    assert value(scrape(h), "cliproxyd_overhead_seconds_count", path="translated") == 1


def test_refreshes_and_warmups_are_their_owners_counts():
    h = rig()
    h.daemon.refresher.counts[("claude", "failed")] = 2
    h.daemon.warmups.counts["sent"] = 3
    found = scrape(h)
    assert value(found, "cliproxyd_token_refreshes_total", provider="claude", outcome="failed") == 2
    assert value(found, "cliproxyd_warmups_total", outcome="sent") == 3


# -- the overhead header -----------------------------------------------------------------


def test_the_overhead_header_is_off_by_default():
    h = rig()
    assert h.chat()[1].getRawHeaders("x-cliproxyd-overhead-ms") is None


@pytest.mark.parametrize("stream", [False, True])
def test_the_overhead_header_tells_cliproxyds_own_time_without_the_upstreams(stream):
    h = rig({"overhead-header": True})
    h.upstream.script("sk-up-1", "slow:3")
    code, headers, _ = h.chat(stream=stream, advance=0.5)
    assert code == 200
    # Three seconds went by on the Clock, all of them waiting for the upstream.
    assert headers.getRawHeaders("x-cliproxyd-overhead-ms") == ["0.000"]


# -- who may read it ---------------------------------------------------------------------


def test_metrics_are_read_with_the_management_key():
    h = rig()
    assert h.request("GET", "/metrics")[0] == 401
    assert h.request("GET", "/metrics", headers={"Authorization": "Bearer sk-up-1"})[0] == 401
    assert h.request("GET", "/metrics", headers=AUTH)[0] == 200


def test_without_a_management_key_metrics_are_404_unless_public():
    h = rig(secret="")
    assert h.request("GET", "/metrics")[0] == 404
    h = rig({"public": True}, secret="")
    h.chat()
    assert value(scrape(h, headers={}), "cliproxyd_requests_total", route="/v1/chat/completions",
                 format="openai", model="gpt-4o-mini", status="200") == 1


def test_the_client_key_is_not_what_guards_metrics():
    h = rig(**{"api-keys": ["client-key"]})
    assert h.request("GET", "/metrics", headers={"Authorization": "Bearer client-key"})[0] == 401
    assert h.request("GET", "/metrics", headers=AUTH)[0] == 200


def test_metrics_enabled_false_counts_nothing_and_serves_nothing():
    h = rig({"enabled": False, "overhead-header": True})
    code, headers, _ = h.chat()
    assert code == 200 and headers.getRawHeaders("x-cliproxyd-overhead-ms") is None
    assert h.request("GET", "/metrics", headers=AUTH)[0] == 404
    found = samples(h.daemon.metrics.render().decode())
    assert not any(name.startswith(("cliproxyd_requests", "cliproxyd_upstream_attempts")) for name, _ in found)


def test_the_metrics_keys_load_and_bad_values_name_their_path():
    config, warnings = parse_config({"metrics": {"enabled": False, "public": True, "overhead-header": True}})
    assert (config.metrics.enabled, config.metrics.public, config.metrics.overhead_header) == (False, True, True)
    assert warnings == []
    with pytest.raises(Exception, match="metrics.public"):
        parse_config({"metrics": {"public": "yes"}})


# -- several processes -------------------------------------------------------------------


WORKER = textwrap.dedent("""
    import sys
    from cliproxyd.metrics import Metrics
    m = Metrics()
    for _ in range(int(sys.argv[1])):
        m.request("/v1/chat/completions", "openai", "gpt-4o", 200)
    m.overhead(0.001, False)
""")

SCRAPE = textwrap.dedent("""
    from cliproxyd.metrics import Metrics
    print(Metrics().render().decode())
""")


def test_several_processes_are_summed_in_multiprocess_mode(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    cwd = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for n in (2, 3):
        subprocess.run([sys.executable, "-c", WORKER, str(n)], env=env, cwd=cwd, check=True, timeout=60)
    out = subprocess.run([sys.executable, "-c", SCRAPE], env=env, cwd=cwd, check=True, timeout=60,
                         capture_output=True, text=True).stdout
    found = samples(out)
    assert value(found, "cliproxyd_requests_total", route="/v1/chat/completions", format="openai", model="gpt-4o",
                 status="200") == 5
    assert value(found, "cliproxyd_overhead_seconds_count", path="passthrough") == 2


CALLS = textwrap.dedent("""
    from types import SimpleNamespace
    from cliproxyd.metrics import OVERHEAD_BUCKETS, UPSTREAM_BUCKETS, Metrics

    def count(m):
        for status in (200, 200, 429, 502):
            m.request("/v1/chat/completions", "openai", "gpt-4o", status)
        m.request("/v1/messages", "claude", "other", 499)
        # every bound itself (Prometheus's le is <=), between bounds, under the first and past the last
        for b in OVERHEAD_BUCKETS:
            m.overhead(b, False)
            m.overhead(b * 1.5, True)
        m.overhead(0.0, False)
        m.overhead(3.0, True)
        for i, b in enumerate((*UPSTREAM_BUCKETS, 1000.0)):
            ok = i % 3 != 0
            m.attempt(SimpleNamespace(cred_id=f"c{i % 2}", provider="gemini" if i % 2 else "codex", model="m",
                                      ok=ok, status=None if i == 3 else 200 if ok else 429, latency=b,
                                      first_byte=b / 2 if i % 2 else None))
""")


def test_a_lone_process_shows_what_prometheus_clients_own_counters_show(tmp_path):
    # the same calls, counted by prometheus-client (multiprocess mode, the library's files) and
    # by a lone process's own numbers: the same samples, bucket for bucket
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    cwd = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", CALLS + "m = Metrics()\ncount(m)\nprint(m.render().decode())"],
                         env=env, cwd=cwd, check=True, timeout=60, capture_output=True, text=True).stdout
    library = samples(out)
    namespace: dict = {}
    exec(CALLS, namespace)
    m = Metrics(directory="")
    namespace["count"](m)
    own = samples(m.render().decode())
    assert own == library
    assert value(own, "cliproxyd_overhead_seconds_bucket", path="passthrough", le="0.0005") == 4
    assert value(own, "cliproxyd_upstream_seconds_bucket", provider="codex", le="10.0") == 6
    assert value(own, "cliproxyd_upstream_seconds_bucket", provider="codex", le="+Inf") == 8
    assert value(own, "cliproxyd_upstream_first_byte_seconds_count", provider="gemini") == 8


def test_one_process_counts_alone_without_the_directory():
    m = Metrics(directory="")
    m.request("/v1/responses", "responses", "gpt-4o", 502)
    found = samples(m.render().decode())
    assert value(found, "cliproxyd_requests_total", route="/v1/responses", format="responses", model="gpt-4o",
                 status="502") == 1


# -- a client that leaves (loopback) ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_client_that_leaves_before_its_answer_is_counted_as_499(reactor):
    from twisted.internet.protocol import ClientFactory, Protocol
    from twisted.internet.task import deferLater

    from cliproxyd.daemon import build_daemon
    from cliproxyd.frontend import QuietSite
    from cliproxyd.outbound import make_http_client
    from cliproxyd.testing.upstream import SimulatedUpstream

    upstream = SimulatedUpstream(reactor)
    upstream.script("sk-up-1", "hang")
    up_port = reactor.listenTCP(0, QuietSite(upstream.resource()), interface="127.0.0.1")
    data = config_data(**{"metrics": {"public": True}})
    data["openai-compatibility"][0]["base-url"] = f"http://127.0.0.1:{up_port.getHost().port}/v1"
    config, _ = parse_config(data)
    pool, client = make_http_client(reactor, 5)
    daemon = build_daemon(reactor, client, config=config, poll=0)
    daemon.runtime.start()
    port = reactor.listenTCP(0, QuietSite(daemon.resource()), interface="127.0.0.1")
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
    raw = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    connected: list = []

    class Leaver(Protocol):
        def connectionMade(self):
            connected.append(self)
            self.transport.write(raw)

    reactor.connectTCP("127.0.0.1", port.getHost().port, ClientFactory.forProtocol(Leaver))

    def counted() -> float:
        return value(samples(daemon.metrics.render().decode()), "cliproxyd_requests_total",
                     route="/v1/chat/completions", format="openai", model="gpt-4o-mini", status="499")

    try:
        for _ in range(200):
            if upstream.seen:
                break
            await deferLater(reactor, 0.05)
        assert upstream.seen and counted() == 0
        connected[0].transport.abortConnection()
        for _ in range(200):
            if counted():
                break
            await deferLater(reactor, 0.05)
        assert counted() == 1
    finally:
        await port.stopListening()
        await up_port.stopListening()
        await pool.closeCachedConnections()


def test_attempt_labels_are_escaped_as_the_text_format_says():
    from types import SimpleNamespace

    metrics = Metrics(fingerprint=lambda cred_id: "fp-" + cred_id, directory="")
    odd = 'a "quoted" \\ model\nwith a newline'
    for outcome in (True, True, False):
        metrics.attempt(SimpleNamespace(cred_id="c1", provider="sim", model=odd, ok=outcome, status=429,
                                        latency=0.01))
    found = samples(metrics.render().decode())
    attempts = "cliproxyd_upstream_attempts_total"
    assert value(found, attempts, provider="sim", credential="fp-c1", model=odd, outcome="success") == 2
    assert value(found, attempts, provider="sim", credential="fp-c1", model=odd, outcome="429") == 1
    assert value(found, "cliproxyd_upstream_seconds_count", provider="sim") == 3


def test_the_attempts_family_is_described_before_any_attempt():
    text = Metrics(directory="").render().decode()
    assert "# TYPE cliproxyd_upstream_attempts_total counter" in text
    assert [f.name for f in text_string_to_metric_families(text)].count("cliproxyd_upstream_attempts") == 1
