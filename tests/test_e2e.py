"""
The daemon as users run it: `twistd -n cliproxyd --config ...` in a
subprocess, the simulated upstream in another, and the official openai SDK
as the client. Every wait is bounded and every process is cleaned up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import unused_port

ROOT = Path(__file__).resolve().parent.parent
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
CLIENT_KEY = "sk-client-e2e"
BAD_KEY = "sk-upstream-rate-limited-e2e"
GOOD_KEY = "sk-upstream-healthy-e2e"


def wait_until(check, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def http_get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, resp.read()


class Proc:
    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self._out = open(log, "wb")
        self.p = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT, env=ENV, cwd=log.parent)

    def stop(self) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
        self._out.close()
        return self.p.returncode

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def processes(tmp: Path, config: Callable[[str], dict], *upstream_args: str):
    """
    The simulated upstream and the daemon, as processes, the daemon's
    config.yaml made by C{config} from the upstream's URL; yields
    C{(proxy_url, upstream_url, daemon)} once both answer, and stops both.
    """
    up_port, port = unused_port(), unused_port()
    upstream = Proc([sys.executable, "-m", "cliproxyd.testing.upstream", "--port", str(up_port), *upstream_args],
                    tmp / "upstream.log")
    upstream_url = f"http://127.0.0.1:{up_port}"
    path = tmp / "config.yaml"
    path.write_text(json.dumps(config(upstream_url)))  # JSON is YAML
    daemon = Proc([*TWISTD, "-n", "--pidfile=", "cliproxyd", "--config", str(path),
                   "--listen", f"tcp:{port}:interface=127.0.0.1"], tmp / "daemon.log")
    try:
        wait_until(lambda: http_get(upstream_url + "/v1/models")[0] == 200, what="the upstream")
        wait_until(lambda: daemon.p.poll() is not None or http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200,
                   what="the daemon")
        assert daemon.p.poll() is None, daemon.text()
        yield f"http://127.0.0.1:{port}", upstream_url, daemon
    finally:
        daemon.stop()
        upstream.stop()


@pytest.fixture
def stack(tmp_path, request):
    """Upstream and daemon processes; yields (proxy_url, upstream_url, daemon). Its param: shutdown-seconds."""
    def config(upstream_url: str) -> dict:
        return {
            "api-keys": [CLIENT_KEY],
            "routing": {"strategy": "round-robin"},
            "timeouts": {"shutdown-seconds": getattr(request, "param", 20)},
            "openai-compatibility": [{
                "name": "sim",
                "base-url": upstream_url + "/v1",
                "api-key-entries": [{"api-key": BAD_KEY}, {"api-key": GOOD_KEY}],
                "models": [{"name": "sim-small", "alias": "gpt-4o-mini"}],
            }],
        }

    with processes(tmp_path, config, "--script", f"{BAD_KEY}=status:429:1") as running:
        yield running


def upstream_requests(upstream_url: str) -> list[dict]:
    return json.loads(http_get(upstream_url + "/_sim/requests")[1])


def test_openai_sdk_gets_answers_while_one_upstream_key_is_rate_limited(stack):
    import openai

    url, upstream_url, daemon = stack
    client = openai.OpenAI(base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)

    models = [m.id for m in client.models.list()]
    assert models == ["gpt-4o-mini"]

    for _ in range(2):  # round-robin puts the rate-limited key first on one of these
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content.endswith("(key ...hy-e2e).")

    chunks = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the simulated upstream (key ...hy-e2e)."

    seen = upstream_requests(upstream_url)
    assert BAD_KEY in [s["key"] for s in seen], "the failover path was exercised"
    assert [s["key"] for s in seen if s["behaviour"] == "ok"] == [GOOD_KEY] * 3

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()

    assert daemon.stop() == 0
    log = daemon.text()
    assert "next credential: sim key fp:" in log and "gpt-4o-mini -> 429 in" in log
    for secret in (CLIENT_KEY, BAD_KEY, GOOD_KEY):
        assert secret not in log


def stream_through_sigterm(stack, slow: float) -> tuple[list[str], list[Exception]]:
    """
    Start a stream whose chunks come C{slow} seconds apart, SIGTERM the
    daemon once the first is in, and read on: the text pieces the openai
    SDK gave, and what it raised.
    """
    import openai

    url, upstream_url, daemon = stack
    req = urllib.request.Request(upstream_url + "/_sim/script", method="POST",
                                 data=json.dumps({GOOD_KEY: [f"slow:{slow}"], BAD_KEY: [f"slow:{slow}"]}).encode())
    urllib.request.urlopen(req, timeout=5).read()
    client = openai.OpenAI(base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True)
    pieces: list[str] = []
    errors: list[Exception] = []
    first = threading.Event()

    def read():
        try:
            for chunk in stream:
                if chunk.choices:
                    pieces.append(chunk.choices[0].delta.content or "")
                first.set()
        except Exception as e:  # what the SDK makes of the stream's end
            errors.append(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert first.wait(15), "no first chunk"
    daemon.p.send_signal(signal.SIGTERM)
    reader.join(30)
    assert not reader.is_alive()
    return pieces, errors


def test_sigterm_lets_an_inflight_stream_finish_then_exits_zero(stack):
    url, _, daemon = stack
    pieces, errors = stream_through_sigterm(stack, 0.3)
    assert errors == []
    assert "".join(pieces).startswith("Hello from the simulated upstream")
    assert daemon.p.wait(timeout=20) == 0
    assert "waiting up to 20.0s for 1 in-flight requests" in daemon.text()
    with pytest.raises(OSError):
        http_get(url + "/healthz")


@pytest.mark.parametrize("stack", [1], indirect=True)
def test_sigterm_ends_a_stream_that_outlives_shutdown_seconds_with_its_error_event(stack):
    import openai

    _, _, daemon = stack
    pieces, errors = stream_through_sigterm(stack, 2)
    [error] = errors
    assert isinstance(error, openai.APIError) and "cliproxyd is shutting down" in error.message, repr(error)
    assert not "".join(pieces).endswith("e2e).")  # cut short, and told so
    assert daemon.p.wait(timeout=20) == 0
    assert "(1 ended with an error answer)" in daemon.text()


@pytest.mark.parametrize("stack", [1], indirect=True)
def test_sigterm_answers_a_request_still_waiting_for_its_upstream_with_a_503(stack):
    import openai

    url, upstream_url, daemon = stack
    req = urllib.request.Request(upstream_url + "/_sim/script", method="POST",
                                 data=json.dumps({GOOD_KEY: ["hang"], BAD_KEY: ["hang"]}).encode())
    urllib.request.urlopen(req, timeout=5).read()
    client = openai.OpenAI(base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)
    errors: list[Exception] = []

    def ask():
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        except Exception as e:
            errors.append(e)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    deadline = time.monotonic() + 15
    while not upstream_requests(upstream_url) and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting on another process, not on a clock under test
    daemon.p.send_signal(signal.SIGTERM)
    asker.join(30)
    [error] = errors
    assert isinstance(error, openai.APIStatusError) and error.status_code == 503, repr(error)
    assert error.response.headers["retry-after"] == "1"
    assert "nothing was generated" in error.message
    assert daemon.p.wait(timeout=20) == 0
    assert "(1 ended with an error answer)" in daemon.text()


def test_a_bad_config_stops_start_up_with_one_line_and_nonzero_exit(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("openai-compatibility:\n  - name: x\n    api-key-entries: [{api-key: k}]\n")
    result = subprocess.run([*TWISTD, "-n", "--pidfile=", "cliproxyd", "--config", str(config)],
                            capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"cliproxyd: {config}: openai-compatibility[0].base-url: required"
    ]


def test_twistd_help_lists_the_plugin():
    result = subprocess.run([*TWISTD, "--help"], capture_output=True, text=True, env=ENV, timeout=60)
    assert result.returncode == 0
    assert any(line.split()[:1] == ["cliproxyd"] for line in result.stdout.splitlines())


def test_kill_9_under_load_leaves_state_a_restart_can_use(tmp_path):
    """
    kill -9 while streams run and cooldowns are being written: the next start
    loads the state file (the old snapshot or the new, never half of one),
    removes any temporary file the kill left, keeps the cooldown it learned,
    and serves again.
    """
    import openai

    state = tmp_path / "state.json"

    def config(upstream_url: str) -> dict:
        return {
            "api-keys": [CLIENT_KEY],
            "state-file": str(state),
            "openai-compatibility": [{
                "name": "sim",
                "base-url": upstream_url + "/v1",
                "api-key-entries": [{"api-key": BAD_KEY}, {"api-key": GOOD_KEY}],
                "models": [{"name": "sim-small", "alias": "gpt-4o-mini"}],
            }],
        }

    with processes(tmp_path, config, "--script", f"{BAD_KEY}=status:429:600",
                   "--script", f"{GOOD_KEY}=slow:0.05") as (url, upstream_url, daemon):
        client = openai.OpenAI(base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)
        errors: list[Exception] = []

        def load() -> None:
            """Streams one after the other until the kill cuts one (that is the point)."""
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    for _ in client.chat.completions.create(
                            model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "hi"}]):
                        pass
                except Exception as e:
                    errors.append(e)
                    return

        threads = [threading.Thread(target=load) for _ in range(8)]
        for t in threads:
            t.start()
        wait_until(lambda: state.exists(), what="the first state snapshot (the bad key's cooldown)")
        started = len(upstream_requests(upstream_url))
        wait_until(lambda: len(upstream_requests(upstream_url)) >= started + len(threads),
                   what="more streams under way after the snapshot")
        daemon.p.kill()
        daemon.p.wait(timeout=10)
        for t in threads:
            t.join(timeout=20)
        assert len(errors) == len(threads)  # every stream was still running at the kill
        (tmp_path / f".{state.name}.abcd1234.tmp").write_bytes(b'{"half": ')  # what a kill mid-write leaves
        port = unused_port()
        again = Proc([*TWISTD, "-n", "--pidfile=", "cliproxyd", "--config", str(tmp_path / "config.yaml"),
                      "--listen", f"tcp:{port}:interface=127.0.0.1"], tmp_path / "daemon-again.log")
        try:
            wait_until(lambda: again.p.poll() is not None or http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200,
                       what="the restarted daemon")
            assert again.p.poll() is None, again.text()
            assert not list(tmp_path.glob(".state.json.*.tmp"))
            assert "unusable state file" not in again.text()
            seen_before = len(upstream_requests(upstream_url))
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=CLIENT_KEY, max_retries=0,
                                   timeout=20)
            for _ in range(3):
                reply = client.chat.completions.create(model="gpt-4o-mini",
                                                       messages=[{"role": "user", "content": "hi"}])
                assert reply.choices[0].message.content.endswith("(key ...hy-e2e).")
            # The bad key's 600 s cooldown survived the kill: the restart never asked it again.
            after = upstream_requests(upstream_url)[seen_before:]
            assert after and all(r["key"] == GOOD_KEY for r in after)
        finally:
            assert again.stop() == 0
