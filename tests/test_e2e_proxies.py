"""
The daemon as users run it (twistd, the simulated upstream, real proxies
from Debian's packages): each proxy type carries the upstream calls (the
upstream sees the proxy's address, the proxy logs the CONNECT), and a
proxy that is down fails its credential over to the next one, cooled as a
connection error, while nothing of it goes direct.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from contextlib import ExitStack

import pytest

from tests.conftest import unused_port
from tests.proxy_servers import OUTGOING, microsocks, tinyproxy
from tests.test_e2e import CLIENT_KEY, TWISTD, Proc, http_get, wait_until

MGMT = "e2e-management-secret"


class Stack:
    """The simulated upstream and the daemon, the daemon's config made from the upstream's URL."""

    def __init__(self, tmp, config) -> None:
        self.tmp = tmp
        up_port, port = unused_port(), unused_port()
        self.upstream = Proc([sys.executable, "-m", "cliproxyd.testing.upstream", "--port", str(up_port)],
                             tmp / "upstream.log")
        self.upstream_url = f"http://127.0.0.1:{up_port}"
        data = config(self.upstream_url)
        data.setdefault("api-keys", [CLIENT_KEY])
        data.setdefault("remote-management", {"secret-key": MGMT})
        (tmp / "config.yaml").write_text(json.dumps(data))
        self.daemon = Proc([*TWISTD, "-n", "--pidfile=", "cliproxyd", "--config", str(tmp / "config.yaml"),
                            "--listen", f"tcp:{port}:interface=127.0.0.1"], tmp / "daemon.log")
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> "Stack":
        try:
            wait_until(lambda: http_get(self.upstream_url + "/v1/models")[0] == 200, what="the upstream")
            wait_until(lambda: self.daemon.p.poll() is not None or http_get(self.url + "/healthz")[0] == 200,
                       what="the daemon")
            assert self.daemon.p.poll() is None, self.daemon.text()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.daemon.stop()
        self.upstream.stop()

    def chat(self, model: str = "gpt-4o-mini") -> tuple[int, dict]:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
        req = urllib.request.Request(self.url + "/v1/chat/completions", data=body, headers={
            "authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def seen(self) -> list[dict]:
        return json.loads(http_get(self.upstream_url + "/_sim/requests")[1])

    def management(self, path: str) -> dict:
        return json.loads(http_get(self.url + "/v0/management" + path, {"authorization": f"Bearer {MGMT}"})[1])


def sim(upstream_url: str, entries: list[dict], **over) -> dict:
    return {"name": "sim", "base-url": upstream_url + "/v1", "api-key-entries": entries,
            "models": [{"name": "sim-small", "alias": "gpt-4o-mini"}], **over}


PROXIES = {
    "socks5": lambda tmp: microsocks(tmp, "alice", "p@ss"),
    "socks5h": lambda tmp: microsocks(tmp, "alice", "p@ss"),
    "http": lambda tmp: tinyproxy(tmp, "bob", "s3cret"),
}
USERS = {"socks5": "alice:p%40ss@", "socks5h": "alice:p%40ss@", "http": "bob:s3cret@"}


# Each proxy type once, each place a proxy-url can be once (tests/test_proxy_settings.py has the precedence).
@pytest.mark.parametrize("scheme, where", [("socks5", "key"), ("socks5h", "global"), ("http", "provider")])
def test_upstream_calls_go_through_each_proxy_type(tmp_path, scheme, where):
    with PROXIES[scheme](tmp_path) as proxy:
        url = f"{scheme}://{USERS[scheme]}localhost:{proxy.port}"

        def config(upstream_url):
            entry = {"api-key": "sk-up-proxied"}
            provider, top = {}, {}
            {"key": entry, "provider": provider, "global": top}[where]["proxy-url"] = url
            return {"openai-compatibility": [sim(upstream_url, [entry], **provider)], **top}

        with Stack(tmp_path, config) as stack:
            status, answer = stack.chat()
            assert status == 200, answer
            seen = stack.seen()
            log = stack.daemon.text()
        proxy_log = proxy.text()
    assert [(s["key"], s["peer"]) for s in seen] == [("sk-up-proxied", OUTGOING)]
    if scheme == "http":
        assert f"CONNECT 127.0.0.1:{stack.upstream_url.rsplit(':', 1)[1]} HTTP/1.1" in proxy_log
    assert "p@ss" not in log and "s3cret" not in log and "p%40ss" not in log
    assert f"outbound proxy {scheme}://{USERS[scheme].split(':')[0]}:***@localhost:{proxy.port}" in log


def test_a_proxy_that_is_down_cools_its_key_as_a_connect_error_and_the_next_key_answers(tmp_path):
    """And a model whose only key is behind a dead proxy gets an error, not a direct request."""
    dead = unused_port()
    with ExitStack() as stack_of:
        proxy = stack_of.enter_context(microsocks(tmp_path))

        def config(upstream_url):
            return {
                "routing": {"strategy": "fill-first"},
                "proxy-url": f"socks5h://127.0.0.1:{proxy.port}",
                "openai-compatibility": [
                    sim(upstream_url, [
                        {"api-key": "sk-up-behind-dead-proxy", "proxy-url": f"socks5h://u:hunter2@127.0.0.1:{dead}"},
                        {"api-key": "sk-up-via-global-proxy"},
                    ]),
                    sim(upstream_url, [{"api-key": "sk-up-alone"}], name="solo",
                        models=[{"name": "sim-small", "alias": "solo-model"}],
                        **{"proxy-url": f"http://127.0.0.1:{dead}"}),
                ],
            }

        stack = stack_of.enter_context(Stack(tmp_path, config))
        for _ in range(2):
            status, answer = stack.chat()
            assert status == 200, answer
        status, answer = stack.chat("solo-model")
        assert status in (502, 503), answer
        seen = stack.seen()
        creds = {c["key"]: c for c in stack.management("/credentials")["credentials"]}
        log = stack.daemon.text()
    # Nothing of the first key reached the upstream, by any route; the second came through its proxy.
    assert {(s["key"], s["peer"]) for s in seen} == {("sk-up-via-global-proxy", OUTGOING)}
    dead_cred = next(c for c in creds.values() if c["provider"] == "sim" and c["last_error"])
    state = dead_cred["model_states"]["gpt-4o-mini"]
    assert state["cooling"] and state["reason"] == "connect"
    assert f"proxy socks5h://u:***@127.0.0.1:{dead}: cannot connect to the proxy" in dead_cred["last_error"]
    assert f"next credential: sim key {dead_cred['key']} gpt-4o-mini -> connect" in log
    assert "hunter2" not in log and "hunter2" not in json.dumps(creds)


def test_a_bad_proxy_url_stops_the_daemon_before_it_serves(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"claude-api-key": [{"api-key": "k", "proxy-url": "socks5://u:hunter2@h:port"}]}))
    proc = Proc([*TWISTD, "-n", "--pidfile=", "cliproxyd", "--config", str(path),
                 "--listen", f"tcp:{unused_port()}:interface=127.0.0.1"], tmp_path / "daemon.log")
    assert proc.p.wait(timeout=30) == 1
    text = proc.text()
    assert "claude-api-key[0].proxy-url: bad port in socks5://h:port" in text
    assert "hunter2" not in text
