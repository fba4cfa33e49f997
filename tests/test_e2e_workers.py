"""
`twistd -n cliproxyd --workers 2` as users run it: a parent and two worker
processes on one listener, in front of the simulated upstream (a process),
with a real redis-server as the state-store. Every wait is bounded (a
condition polled with a deadline) and every process is cleaned up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import unused_port
from tests.test_e2e import ENV, TWISTD, Proc, http_get, wait_until

CLIENT_KEY = "sk-client-workers"
NEW_KEY = "sk-client-added-by-management"
PASSWORD = "management-password-workers"
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"

pytestmark = pytest.mark.skipif(not os.path.exists(REDIS), reason="needs redis-server")


class EnvProc(Proc):
    """A L{Proc} with environment variables of its own, leading a process group of its own (its workers')."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str], **popen) -> None:
        self.log = log
        self._out = open(log, "wb")
        self.p = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT, env={**ENV, **env},
                                  cwd=log.parent, start_new_session=True, **popen)


def request(url: str, data: dict | list | None = None, *, key: str = CLIENT_KEY, method: str | None = None):
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, method=method, headers={
        "authorization": f"Bearer {key}", "content-type": "application/json", "connection": "close"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, json.loads(resp.read() or b"null")


def chat(url: str, key: str = CLIENT_KEY) -> int:
    status, _ = request(url + "/v1/chat/completions",
                        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}, key=key)
    return status


def status(url: str) -> dict:
    return request(url + "/v0/management/status", key=PASSWORD)[1]


def alive(pid: int) -> bool:
    """Whether C{pid} is a process that has not ended (a zombie has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def requests_by_pid(url: str) -> dict[int, int]:
    return {w["pid"]: w["attempts"] for w in status(url).get("workers", [])}


def systemd_socket(port: int) -> tuple[list[str], dict[str, str], dict, int]:
    """
    How systemd starts a socket-activated service: the listening socket as
    fd 3, LISTEN_FDS=1 (and its name) and LISTEN_PID the service's pid (set by a shell that
    then becomes the daemon): a command prefix, environment, Popen arguments and the fd.
    """
    sock = socket.create_server(("127.0.0.1", port))
    fd = sock.detach()

    def as_fd_3() -> None:
        os.dup2(fd, 3)

    prefix = ["/bin/sh", "-c", 'export LISTEN_PID=$$; exec "$@"', "sh"]
    return prefix, {"LISTEN_FDS": "1", "LISTEN_FDNAMES": "cliproxyd.socket"}, {"preexec_fn": as_fd_3, "pass_fds": (fd, 3)}, fd


@pytest.fixture
def machine(tmp_path: Path, request):
    """
    The upstream, redis-server and `twistd --workers 2`: their URLs, the
    daemon and its config file. Its param: how the daemon listens, "tcp" (by
    default) or "systemd" (a socket passed as systemd passes it).
    """
    up_port, redis_port, port = unused_port(), unused_port(), unused_port()
    redis = subprocess.Popen([REDIS, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(tmp_path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    upstream = Proc([sys.executable, "-m", "cliproxyd.testing.upstream", "--port", str(up_port)],
                    tmp_path / "upstream.log")
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({
        "api-keys": [CLIENT_KEY],
        "state-store": f"redis://127.0.0.1:{redis_port}/0",
        "timeouts": {"shutdown-seconds": 10},
        "openai-compatibility": [{
            "name": "sim",
            "base-url": f"http://127.0.0.1:{up_port}/v1",
            "api-key-entries": [{"api-key": "sk-up-1"}, {"api-key": "sk-up-2"}],
            "models": [{"name": "sim-small", "alias": "gpt-4o-mini"}],
        }],
    }))
    prefix, env, popen, listen = [], {}, {}, f"tcp:{port}:interface=127.0.0.1"
    if getattr(request, "param", "tcp") == "systemd":
        prefix, env, popen, given = systemd_socket(port)
        listen = "systemd:domain=INET:index=0"
    # --watch-interval 0: a management write reaches the other worker through the parent, not a poll.
    daemon = EnvProc([*prefix, *TWISTD, "-n", "--pidfile=", "cliproxyd", "--config", str(path), "--workers", "2",
                      "--watch-interval", "0", "--listen", listen], tmp_path / "daemon.log",
                     {"MANAGEMENT_PASSWORD": PASSWORD, "RUNTIME_DIRECTORY": str(tmp_path), **env}, **popen)
    if popen:
        os.close(given)  # the daemon holds it now, as a service holds systemd's
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{up_port}/v1/models")[0] == 200, what="the upstream")
        wait_until(lambda: daemon.p.poll() is not None or len(requests_by_pid(url)) == 2, what="two workers")
        assert daemon.p.poll() is None, daemon.text()
        yield SimpleNamespace(url=url, daemon=daemon, path=path, upstream=f"http://127.0.0.1:{up_port}")
    finally:
        daemon.stop()
        upstream.stop()
        redis.terminate()
        redis.wait(timeout=10)


@pytest.mark.parametrize("machine", ["systemd"], indirect=True)
def test_workers_serve_a_socket_systemd_passed(machine):
    url, daemon = machine.url, machine.daemon
    serve_until(url, lambda: all(n > 0 for n in requests_by_pid(url).values()), what="both workers to serve")
    assert "worker 1 of parent" in daemon.text()
    assert daemon.stop() == 0, daemon.text()


def serve_until(url: str, done, key: str = CLIENT_KEY, what: str = "condition") -> None:
    """Send requests, each on a new connection, until C{done()} (bounded); every one must succeed."""
    def step() -> bool:
        assert chat(url, key) == 200
        return done()

    wait_until(step, timeout=30, what=what)


def test_two_workers_serve_one_listener_a_dead_one_comes_back_and_sigterm_drains_both(machine, tmp_path):
    url, daemon = machine.url, machine.daemon
    first = requests_by_pid(url)
    assert len(first) == 2 and os.getpid() not in first and daemon.p.pid not in first

    # Both workers take connections from the one socket.
    serve_until(url, lambda: all(n > 0 for n in requests_by_pid(url).values()), what="both workers to serve")
    def adds_up() -> bool:  # every worker's attempts are the machine's credential counters
        view = status(url)
        assert view["answered_by"]["pid"] in first
        return sum(w["attempts"] for w in view["workers"]) == sum(c["requests"] for c in view["credentials"])

    wait_until(adds_up, timeout=10, what="status to count every worker's requests")

    # Kill one worker while a client keeps sending: at most its in-flight request fails.
    victim, survivor = sorted(first)
    failures: list[Exception] = []
    served = [0]
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                chat(url)
                served[0] += 1
            except (OSError, urllib.error.HTTPError) as e:
                failures.append(e)

    client = threading.Thread(target=load, daemon=True)
    client.start()
    try:
        wait_until(lambda: served[0] >= 5, what="load before the kill")
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not alive(victim), what="the killed worker to end")
        wait_until(lambda: victim not in (pids := requests_by_pid(url)) and len(pids) == 2 and survivor in pids,
                   what="a new worker in the dead one's place")
        after_restart = served[0]
        wait_until(lambda: served[0] >= after_restart + 5, what="load after the restart")
    finally:
        stop.set()
        client.join(15)
    assert len(failures) <= 1, failures
    workers = sorted(requests_by_pid(url))
    assert "restarting it in" in daemon.text()
    runtime = list(tmp_path.glob("cliproxyd-workers-*"))
    assert len(runtime) == 1 and sorted(p.name for p in runtime[0].iterdir()) == [
        "prometheus", "worker-0.json", "worker-1.json"]

    # SIGTERM: both workers drain, the parent exits 0 and leaves no process behind.
    assert daemon.stop() == 0, daemon.text()
    wait_until(lambda: not any(alive(pid) for pid in workers), timeout=10, what="the workers to be gone")
    assert not runtime[0].exists(), "the parent removes its runtime directory"
    log = daemon.text()
    assert log.count("stopped: exit 0") == 2, log


def test_a_management_write_reaches_every_worker(machine):
    url, daemon, path = machine.url, machine.daemon, machine.path
    with pytest.raises(urllib.error.HTTPError) as refused:
        chat(url, NEW_KEY)
    assert refused.value.code == 401
    assert request(url + "/v0/management/api-keys", [CLIENT_KEY, NEW_KEY], key=PASSWORD, method="PUT")[0] == 200
    assert NEW_KEY in path.read_text()
    before = requests_by_pid(url)
    # Served by both workers (each counted more requests), and never refused: both reloaded.
    serve_until(url, lambda: all(n > before[pid] for pid, n in requests_by_pid(url).items()), key=NEW_KEY,
                what="both workers to take the new key")
    assert "SIGHUP passed on to 2 workers" in daemon.text()

    # A worker leaves SIGINT to its parent: one that gets it alone keeps serving.
    interrupted = min(requests_by_pid(url))
    os.kill(interrupted, signal.SIGINT)
    counted = requests_by_pid(url).get(interrupted)
    assert counted is not None, "the worker ended on SIGINT"
    serve_until(url, lambda: requests_by_pid(url).get(interrupted, -1) >= counted + 3,
                what="the interrupted worker to serve on")

    # Ctrl-C in a terminal: SIGINT to the whole process group is one drain, led by the parent.
    os.killpg(daemon.p.pid, signal.SIGINT)
    assert daemon.p.wait(timeout=30) == -signal.SIGINT  # as twistd ends on SIGINT
    log = daemon.text()
    assert log.count("stopped: exit 0") == 2 and "restarting it in" not in log, log


def management(url: str, path: str) -> tuple[str, dict]:
    """A management GET on a new connection: which worker answered, and what."""
    req = urllib.request.Request(url + "/v0/management" + path,
                                 headers={"authorization": f"Bearer {PASSWORD}", "connection": "close"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.headers["x-cliproxyd-worker"], json.loads(resp.read())


def test_workers_share_cooldowns(machine):
    url, upstream = machine.url, machine.upstream
    script = urllib.request.Request(upstream + "/_sim/script", method="POST",
                                    data=json.dumps({"sk-up-1": ["status:429:3600"]}).encode())
    urllib.request.urlopen(script, timeout=5).read()

    def limited_hits() -> int:
        return [s["key"] for s in json.loads(http_get(upstream + "/_sim/requests")[1])].count("sk-up-1")

    serve_until(url, lambda: limited_hits() == 1, what="one worker to meet the rate-limited key")
    cooling: set[str] = set()

    def both_see_it() -> bool:
        worker, answer = management(url, "/credentials")
        first = answer["credentials"][0]  # sk-up-1, as the config lists it
        if any(m["cooling"] for m in first["model_states"].values()):
            cooling.add(worker)
        return cooling == {"0", "1"}

    wait_until(both_see_it, timeout=10, what="both workers to see the cooldown")
    for _ in range(20):
        assert chat(url) == 200
    assert limited_hits() == 1, "the other worker tried the key the first one saw rate-limited"


def test_more_than_one_worker_without_a_state_store_is_refused_in_one_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"workers": 2}))
    out = subprocess.run([*TWISTD, "-n", "--pidfile=", "cliproxyd", "--config", str(path),
                          "--listen", f"tcp:{unused_port()}:interface=127.0.0.1"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path, env=ENV, check=False)
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == [("cliproxyd: --workers 2 needs state-store in the config (redis://HOST:PORT/DB): workers must "
                      "share cooldowns, quota groups and token refreshes")], out.stderr
