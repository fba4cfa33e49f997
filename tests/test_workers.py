"""
--workers N, in one process: the config keys, the parent's service tree and
its refusals, a worker's command line, the parent watch, and how the
workers' counts add up for /status.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from cliproxyd.config import ConfigError, parse_config
from cliproxyd.tap import Options, makeService, worker_command
from cliproxyd.workers.peers import STALE_SECONDS, PeerCounts, merge, read_peers
from cliproxyd.workers.supervisor import LISTEN_FD, WorkerHome, open_listener
from cliproxyd.workers.worker import AdoptedListener, WorkerRole, parent_watch
from tests.conftest import Harness, unused_port
from tests.conftest import _now as now
from tests.test_config_edit import result_of
from tests.test_tap import tree
from tests.test_tls import self_signed

STORE = "redis://127.0.0.1:6379/0"


def options(*argv):
    o = Options()
    o.parseOptions(list(argv))
    return o


# -- config ------------------------------------------------------------------------------


def test_state_store_and_workers_are_config_keys():
    config, warnings = parse_config({"state-store": "rediss://:pw@redis.example:6380/2", "workers": 4})
    assert (config.state_store, config.workers, warnings) == ("rediss://:pw@redis.example:6380/2", 4, [])
    default, _ = parse_config({})
    assert (default.state_store, default.workers) == (None, 1)


@pytest.mark.parametrize("data, says", [
    ({"state-store": "memcached://x"}, "config.yaml: state-store: "),
    ({"state-store": "redis://"}, "config.yaml: state-store: "),
    ({"state-store": 5}, "config.yaml: state-store: must be a string"),
    ({"workers": 0}, "workers: must be between 1 and 256, not 0"),
    ({"workers": "2"}, "workers: must be an integer"),
])
def test_bad_values_name_their_key(data, says):
    with pytest.raises(ConfigError) as info:
        parse_config(data, "config.yaml")
    assert says in str(info.value)


# -- the parent's tree ---------------------------------------------------------------------


def write_config(tmp_path, **top) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"host": "127.0.0.1", **top}))
    return str(path)


def test_the_parent_builds_a_listener_and_the_supervisor_only(tmp_path):
    path = write_config(tmp_path, **{"state-store": STORE, "workers": 3,
                                     "remote-management": {"secret-key": "plain"}})
    reactor = MemoryReactorClock()
    service = makeService(options("--config", path), reactor=reactor)
    assert tree(service) == ["listener", "management-key", "workers"]
    assert len(service.getServiceNamed("workers").slots) == 3
    # --workers on the command line wins over the config.
    assert len(makeService(options("--config", path, "--workers", "2"), reactor=reactor)
               .getServiceNamed("workers").slots) == 2
    # --workers 1 is a daemon of its own, whatever the config says.
    assert "workers" not in [s.name for s in makeService(options("--config", path, "--workers", "1"),
                                                         reactor=reactor)]


def test_more_than_one_worker_needs_a_state_store(tmp_path):
    with pytest.raises(SystemExit) as info:
        makeService(options("--config", write_config(tmp_path), "--workers", "2"), reactor=MemoryReactorClock())
    assert info.value.code == ("cliproxyd: --workers 2 needs state-store in the config (redis://HOST:PORT/DB): "
                               "workers must share cooldowns, quota groups and token refreshes")


@pytest.mark.parametrize("listen", ["unix:/tmp/cliproxyd-test.sock", "ssl:8443:privateKey={key}:certKey={cert}:interface=127.0.0.1"])
def test_workers_refuse_a_listener_they_cannot_share(tmp_path, listen):
    cert, key = self_signed(tmp_path)
    listen = listen.format(cert=cert, key=key)
    path = write_config(tmp_path, **{"state-store": STORE})
    with pytest.raises(SystemExit) as info:
        makeService(options("--config", path, "--workers", "2", "--listen", listen), reactor=MemoryReactorClock())
    assert info.value.code == (f"cliproxyd: workers cannot share {listen!r}: listen on tcp:, tcp6: or systemd: "
                               "(for TLS, the config's tls section)")


def test_with_the_configs_tls_the_parent_listens_on_tcp_and_each_worker_speaks_tls(tmp_path):
    from twisted.protocols.tls import TLSMemoryBIOFactory

    cert, key = self_signed(tmp_path)
    path = write_config(tmp_path, port=8443, tls={"enable": True, "cert": str(cert), "key": str(key)},
                        **{"state-store": STORE, "workers": 2})
    parent = makeService(options("--config", path), reactor=MemoryReactorClock())
    endpoint = parent.getServiceNamed("listener")._endpoint
    assert type(endpoint).__name__ == "TCP4ServerEndpoint" and endpoint._port == 8443
    worker = makeService(options("--config", path, "--worker-index", "1", "--worker-dir", str(tmp_path),
                                 "--worker-parent", "1"), reactor=MemoryReactorClock())
    listener = worker.getServiceNamed("frontend")
    assert isinstance(listener, AdoptedListener) and isinstance(listener._factory, TLSMemoryBIOFactory)
    assert "parent-watch" in [s.name for s in worker]


def test_the_demo_is_one_process():
    with pytest.raises(Exception, match="--workers needs --config"):
        options("--demo", "--workers", "2")


def test_the_worker_options_go_together():
    with pytest.raises(Exception, match="go together"):
        options("--config", "c.yaml", "--worker-index", "0")


def test_the_parent_opens_the_socket_and_a_runtime_directory_it_removes(tmp_path):
    from twisted.internet.endpoints import TCP4ServerEndpoint

    port = unused_port()
    home = WorkerHome(TCP4ServerEndpoint(None, port, interface="127.0.0.1"), str(tmp_path))
    home.startService()
    try:
        probe = socket.create_connection(("127.0.0.1", port), timeout=5)  # the kernel queues it: it listens
        probe.close()
        assert os.path.isdir(home.metrics_directory)
        env = home.environment({"PATH": "/bin"})
        assert env == {"PATH": "/bin", "PROMETHEUS_MULTIPROC_DIR": home.metrics_directory}
        (Path(home.directory) / "worker-1.json").write_text("{}")
        home.worker_ended(1, 4242)  # a dead worker's counts go at once
        assert sorted(os.listdir(home.directory)) == ["prometheus"]
        home.close()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
    finally:
        home.stopService()
    assert not os.path.exists(home.directory)


def test_a_busy_port_stops_the_parent_at_start():
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.internet.error import CannotListenError

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        with pytest.raises(CannotListenError):
            open_listener(TCP4ServerEndpoint(None, busy.getsockname()[1], interface="127.0.0.1"))
    finally:
        busy.close()


def test_a_worker_adopts_the_inherited_socket_with_its_family(tmp_path):
    reactor = MemoryReactorClock()
    adopted = []
    reactor.adoptStreamPort = lambda fd, family, factory: adopted.append((fd, family, factory)) or "port"
    listening = socket.socket(socket.AF_INET6)
    fd = os.dup(listening.fileno())
    listening.close()
    AdoptedListener(reactor, "site", fd=fd).startService()
    assert adopted == [(fd, socket.AF_INET6, "site")]
    with pytest.raises(OSError):
        os.fstat(fd)  # the worker keeps the port's duplicate only


# -- a worker's command line and its parent ------------------------------------------------


def test_a_worker_runs_the_parents_runner_with_its_logging_options():
    plugin = ["cliproxyd", "--config", "/etc/c.yaml"]
    argv = ["/opt/bin/twistd", "--nodaemon", "--pidfile=/run/x.pid", "--logger=cliproxyd.logging.json_observer",
            "-r", "epoll", "--logfile", "/var/log/x", "cliproxyd", "--config", "c.yaml", "--workers", "2"]
    command = worker_command(argv, "/opt/bin/python", plugin)
    assert command[:2] == ["/opt/bin/python", "-c"] and "twistd" in command[2]
    assert command[3:] == ["--nodaemon", "--pidfile=", "--logger=cliproxyd.logging.json_observer", "-r", "epoll",
                           *plugin]
    twist = worker_command(["/opt/bin/twist", "--log-format", "json", "cliproxyd"], "/py", plugin)
    assert "Twist" in twist[2] and twist[3:] == ["--log-format", "json", *plugin]


def test_a_worker_stops_once_when_its_parent_is_gone():
    clock, stops = Clock(), []
    parents = iter([10, 10, 1, 1])
    job = parent_watch(WorkerRole(0, "/tmp", 10), lambda: stops.append(1), clock, parent=lambda: next(parents))
    job.startService()
    clock.pump([1.0] * 2)
    assert stops == []
    clock.pump([1.0] * 2)
    assert stops == [1]
    job.stopService()


def test_a_management_write_asks_the_parent_to_reload_every_worker(monkeypatch):
    sent = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    WorkerRole(1, "/tmp", 4242).notify_parent()
    assert sent == [(4242, signal.SIGHUP)]
    assert WorkerRole(0, "/tmp", 1).persists and not WorkerRole(1, "/tmp", 1).persists


def test_the_worker_fd_is_after_stdio():
    assert LISTEN_FD == 3


# -- counts for the machine ----------------------------------------------------------------


def counts(index, pid, in_flight, usage, creds, at=100.0):
    return {"index": index, "pid": pid, "at": at, "in_flight": in_flight, "usage": usage, "credentials": creds,
            "attempts": sum(c["requests"] for c in creds.values())}


def test_counts_add_up_and_the_latest_use_says_the_last_status():
    own = counts(0, 11, 2, {"m": {"requests": 3, "successes": 2, "failures": 1}},
                 {"a": {"requests": 3, "successes": 2, "failures": 1, "last_status": 200, "last_error": "",
                        "last_used_at": 50.0, "last_failed_at": 10.0}})
    peer = counts(1, 12, 1, {"m": {"requests": 4, "successes": 4, "failures": 0},
                             "n": {"requests": 1, "successes": 0, "failures": 1}},
                  {"a": {"requests": 4, "successes": 3, "failures": 1, "last_status": 429, "last_error": "slow down",
                         "last_used_at": 60.0, "last_failed_at": 60.0},
                   "b": {"requests": 1, "successes": 1, "failures": 0, "last_status": 200, "last_error": "",
                         "last_used_at": 5.0, "last_failed_at": None}})
    total = merge(own, [peer])
    assert total["in_flight"] == 3
    assert total["usage"] == {"m": {"requests": 7, "successes": 6, "failures": 1},
                              "n": {"requests": 1, "successes": 0, "failures": 1}}
    assert total["credentials"]["a"] == {"requests": 7, "successes": 5, "failures": 2, "last_status": 429,
                                         "last_error": "slow down", "last_used_at": 60.0, "last_failed_at": 60.0}
    assert total["credentials"]["b"]["requests"] == 1
    assert total["workers"] == [{"index": 0, "pid": 11, "in_flight": 2, "attempts": 3},
                                {"index": 1, "pid": 12, "in_flight": 1, "attempts": 5}]
    assert own["credentials"]["a"]["requests"] == 3  # nothing of the input is changed


def test_counters_a_shared_store_holds_are_not_added_again():
    own = {"index": 0, "pid": 11, "in_flight": 1, "attempts": 3}
    peer = {"index": 1, "pid": 12, "in_flight": 2, "attempts": 4}
    total = merge(own, [peer])
    assert total == {"in_flight": 3, "workers": [{"index": 0, "pid": 11, "in_flight": 1, "attempts": 3},
                                                 {"index": 1, "pid": 12, "in_flight": 2, "attempts": 4}]}


def test_a_worker_publishes_its_counts_and_reads_only_fresh_peers(tmp_path):
    clock = Clock()
    clock.advance(1000)
    mine = {"in_flight": 1, "usage": {}, "credentials": {"a": {"requests": 2}}}
    theirs = {"in_flight": 4, "usage": {}, "credentials": {"a": {"requests": 5}}}
    a = PeerCounts(str(tmp_path), 0, lambda: mine, clock, now)
    b = PeerCounts(str(tmp_path), 1, lambda: theirs, clock, now)
    a.service.startService()
    b.service.startService()
    assert sorted(os.listdir(tmp_path)) == ["worker-0.json", "worker-1.json"]
    total = result_of(Deferred.fromCoroutine(a.machine()))
    assert total["in_flight"] == 5 and total["credentials"]["a"]["requests"] == 7
    theirs["in_flight"] = 0
    clock.advance(1.0)  # the next publication
    assert result_of(Deferred.fromCoroutine(a.machine()))["in_flight"] == 1
    # b dies without its stop (its file stays): past STALE_SECONDS it no longer counts
    b.service._loop.stop()
    clock.advance(STALE_SECONDS + 1)
    assert read_peers(str(tmp_path), 0, clock.seconds()) == []
    (tmp_path / "worker-7.json").write_text("{not json")
    assert read_peers(str(tmp_path), 0, clock.seconds()) == []
    a.service.stopService()  # a clean stop takes its file away
    assert "worker-0.json" not in os.listdir(tmp_path)


def test_status_answers_for_every_worker(tmp_path):
    """Two daemons as two workers of one parent: each one's /status counts both, and says who answered."""
    auth = {"authorization": "Bearer pw"}
    workers = [Harness(worker=WorkerRole(i, str(tmp_path), os.getppid()), environ={"MANAGEMENT_PASSWORD": "pw"})
               for i in (0, 1)]
    for h, n in zip(workers, (1, 2)):
        for _ in range(n):
            assert h.chat()[0] == 200
        h.daemon.services[[s.name for s in h.daemon.services].index("publish-counts")].startService()
    code, headers, body = workers[0].request("GET", "/v0/management/status", headers=auth)
    status = json.loads(body)
    assert code == 200 and headers.getRawHeaders("x-cliproxyd-worker") == ["0"]
    assert [(w["index"], w["attempts"]) for w in status["workers"]] == [(0, 1), (1, 2)]
    assert status["answered_by"] == {"index": 0, "pid": os.getpid()}
    assert sum(c["requests"] for c in status["credentials"]) == 3
    assert sum(u["requests"] for u in status["usage"].values()) == 3
    # A store that shares its counters between processes already holds the machine's: they are not added again.
    for h in workers:
        h.state.shares_counters = True
        h.daemon.services[[s.name for s in h.daemon.services].index("publish-counts")].run_now()
    shared = json.loads(workers[0].request("GET", "/v0/management/status", headers=auth)[2])
    assert [w["attempts"] for w in shared["workers"]] == [1, 2]
    assert sum(c["requests"] for c in shared["credentials"]) == 1  # worker 0's own store (a shared one: all)
    # A daemon of its own says nothing of workers.
    alone = json.loads(Harness(environ={"MANAGEMENT_PASSWORD": "pw"}).request(
        "GET", "/v0/management/status", headers=auth)[2])
    assert "workers" not in alone and "answered_by" not in alone


def test_only_the_first_worker_writes_the_state_file(tmp_path):
    names = []
    for index in (0, 1):
        h = Harness(worker=WorkerRole(index, str(tmp_path), 1), state_path=str(tmp_path / "state.json"))
        names.append([s.name for s in h.daemon.services])
    assert "state" in names[0] and "state" not in names[1]


def test_a_systemd_socket_is_passed_on_as_systemd_passed_it():
    from twisted.internet.endpoints import AdoptedStreamServerEndpoint

    given = socket.create_server(("127.0.0.1", 0))
    try:
        # what systemd:domain=INET:index=0 makes of the socket systemd passed
        endpoint = AdoptedStreamServerEndpoint(MemoryReactorClock(), given.fileno(), socket.AF_INET)
        shared = open_listener(endpoint)
        assert shared.fileno() != given.fileno()
        assert shared.getsockname() == given.getsockname() and shared.family == socket.AF_INET
        assert shared.getblocking() is False  # systemd passes a blocking one
        shared.close()
    finally:
        given.close()


def test_the_parent_exits_one_unless_every_worker_drained():
    from cliproxyd.tap import _exit_one_unless_drained, _exit_status

    class Reactor:
        _exitSignal = signal.SIGTERM

    class Drained:
        clean = True

    registered = []
    reactor = Reactor()
    _exit_one_unless_drained(reactor, Drained(), at_exit=lambda *a: registered.append(a))
    assert registered == [] and reactor._exitSignal == signal.SIGTERM  # the SIGTERM trigger makes that 0
    Drained.clean = False
    _exit_one_unless_drained(reactor, Drained(), at_exit=lambda *a: registered.append(a))
    assert registered == [(_exit_status, 1)] and reactor._exitSignal is None


def test_the_parent_logs_the_state_store_without_its_password():
    from cliproxyd.tap import _redacted_url

    assert _redacted_url("redis://:s3cret@db.example:6379/0") == "redis://***@db.example:6379/0"
    assert _redacted_url("rediss://app:s3cret@db.example/1") == "rediss://app:***@db.example/1"
    assert _redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_a_worker_does_not_open_what_listen_names_its_parent_did(tmp_path, monkeypatch):
    """A worker of a socket-activated parent is not socket-activated itself (LISTEN_PID is the parent's)."""
    monkeypatch.setenv("LISTEN_PID", "1")
    path = write_config(tmp_path, **{"state-store": STORE, "api-keys": ["k"]})
    worker = makeService(options("--config", path, "--listen", "systemd:domain=INET:index=0", "--worker-index", "0",
                                 "--worker-dir", str(tmp_path), "--worker-parent", "1"), reactor=MemoryReactorClock())
    assert isinstance(worker.getServiceNamed("frontend"), AdoptedListener)
    # The parent itself, with no socket from systemd: one line, not a traceback.
    with pytest.raises(SystemExit) as info:
        makeService(options("--config", path, "--listen", "systemd:domain=INET:index=0", "--workers", "2"),
                    reactor=MemoryReactorClock())
    assert info.value.code.startswith("cliproxyd: 'systemd:domain=INET:index=0' is not a valid endpoint string")
