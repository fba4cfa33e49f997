"""The twistd plugin, makeService, the service tree and shutdown."""

import pytest
from twisted.application.service import IServiceMaker, Service
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.web.test.requesthelper import DummyRequest

from cliproxyd.frontend.site import InFlight
from cliproxyd.service import Periodic, ServiceTree
from cliproxyd.tap import Options, endpoint_is_local, makeService
from tests.test_config import EXAMPLE


def options(*argv):
    o = Options()
    o.parseOptions(list(argv))
    return o


def tree(service):
    """The service tree as names: a parent is (name, [children])."""
    out = []
    for child in service:
        kids = list(child) if hasattr(child, "namedServices") else []
        out.append((child.name, tree(child)) if kids else child.name)
    return out


def test_twistd_finds_the_plugin():
    plugins = {p.tapname: p for p in getPlugins(IServiceMaker)}
    maker = plugins["cliproxyd"]
    assert maker.options is Options
    assert "LLM" in maker.description


def test_options_need_a_config_or_the_demo():
    with pytest.raises(usage.UsageError, match="--config FILE"):
        options()
    with pytest.raises(usage.UsageError, match="drop --config"):
        options("--demo", "--config", "x.yaml")
    assert options("--config", "x.yaml", "--listen", "tcp:1")["listen"] == "tcp:1"


def test_make_service_builds_a_named_tree_that_listens_where_the_config_says():
    reactor = MemoryReactorClock()
    service = makeService(options("--config", EXAMPLE), reactor=reactor)
    assert tree(service) == [
        "http-pool", ("state", ["state-flush"]), ("runtime", ["reload-poll"]),
        ("log-files", ["log-follow", "log-cleaner"]), "panel-update", ("usage-state", ["state-flush"]),
        ("conductor", ["quota-reaper", ("warmups", ["warmup-prune"]), "token-refresh",
                       ("reset-probes", ["reset-probe"])]),
        "in-flight", "web-logins", "frontend", "collector-tuning"]
    assert reactor.tcpServers == []  # building binds nothing
    service.startService()
    [(port, factory, _, interface)] = reactor.tcpServers
    assert (port, interface) == (8317, "127.0.0.1")
    d = service.stopService()
    assert d.called
    assert reactor.getDelayedCalls() == []


def test_the_listener_closes_client_connections_idle_for_client_idle_seconds(tmp_path):
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    for idle, expected in ((None, 60), (5, 5), (0, None)):
        path = tmp_path / "config.yaml"
        path.write_text("host: 127.0.0.1\n" + (f"timeouts: {{client-idle-seconds: {idle}}}\n" if idle is not None else ""))
        reactor = MemoryReactorClock()
        service = makeService(options("--config", str(path)), reactor=reactor)
        service.startService()
        [(_, factory, _, _)] = reactor.tcpServers
        assert factory.timeOut == expected
        channel = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
        reactor.advance(3600 if expected is None else expected - 0.5)
        assert not transport.disconnecting
        reactor.advance(0.5)
        assert transport.disconnecting is (expected is not None), idle
        service.stopService()


def test_building_does_no_start_up_work_and_starting_does_it_in_order(tmp_path):
    """makeService only builds: the key is hashed, the state loaded and the first generation built at start."""
    path = tmp_path / "config.yaml"
    text = ("# keep me\nhost: 127.0.0.1\nremote-management:\n  secret-key: plain-key   # hashed at start\n"
            f"state-file: {tmp_path / 'state.json'}\n")
    path.write_text(text)
    (tmp_path / "state.json").write_text("not json")
    reactor = MemoryReactorClock()
    service = makeService(options("--config", str(path)), reactor=reactor)
    runtime = service.getServiceNamed("runtime")
    assert path.read_text() == text and (tmp_path / "state.json").exists()  # nothing touched yet
    assert runtime.current is None and reactor.tcpServers == []
    assert [s.name for s in service][:4] == ["http-pool", "management-key", "state", "runtime"]
    service.startService()
    after = path.read_text()
    assert "plain-key" not in after and "$2b$" in after and "# keep me" in after
    assert runtime.current.config.remote_management.secret_key.startswith("$2b$")  # read after the hash
    assert not (tmp_path / "state.json").exists()  # the unusable state file was set aside at start
    service.stopService()


def test_a_periodic_job_survives_its_failures_and_can_run_now():
    clock = Clock()
    runs = []

    def work():
        runs.append(clock.seconds())
        if len(runs) % 2:
            raise RuntimeError("every other run breaks")

    stopped = []
    job = Periodic("job", 10, work, clock, on_stop=lambda: stopped.append(True))
    job.startService()
    for _ in range(4):
        clock.advance(10)
    assert runs == [10, 20, 30, 40] and job.failures == 2 and job.running
    job.run_now()
    assert runs[-1] == 40 and job.failures == 3
    job.stopService()
    assert stopped == [True] and clock.getDelayedCalls() == []


def test_a_periodic_job_waits_for_a_run_that_is_still_going():
    clock = Clock()
    pending = []
    job = Periodic("job", 5, lambda: pending.append(Deferred()) or pending[-1], clock, now=True)
    job.startService()
    clock.advance(5)
    clock.advance(5)
    assert len(pending) == 1  # the first run has not finished: no overlap
    pending[0].errback(RuntimeError("late failure"))
    clock.advance(5)
    assert len(pending) == 2 and job.failures == 1
    job.stopService()


def test_listen_overrides_host_and_port():
    reactor = MemoryReactorClock()
    service = makeService(options("--config", EXAMPLE, "--listen", r"tcp:9999:interface=\:\:1"), reactor=reactor)
    service.startService()
    assert [(p, i) for p, _, _, i in reactor.tcpServers] == [(9999, "::1")]
    service.stopService()


def test_a_bad_listen_endpoint_is_one_clear_line():
    with pytest.raises(SystemExit) as info:
        makeService(options("--config", EXAMPLE, "--listen", "tcp:1:interface=::1"), reactor=MemoryReactorClock())
    assert info.value.code.startswith("cliproxyd: 'tcp:1:interface=::1' is not a valid endpoint string: ")


def test_demo_needs_no_config_and_binds_its_upstream_on_loopback():
    reactor = MemoryReactorClock()
    service = makeService(options("--demo"), reactor=reactor)
    assert tree(service) == [
        "http-pool", "demo-upstream", "runtime",
        ("conductor", ["quota-reaper", ("warmups", ["warmup-prune"]), "token-refresh",
                       ("reset-probes", ["reset-probe"])]),
        "in-flight", "web-logins", "frontend", "collector-tuning"]
    assert reactor.tcpServers == []  # building binds nothing, not even the demo's upstream
    service.startService()
    servers = [(p, i) for p, _, _, i in reactor.tcpServers]
    assert servers == [(0, "127.0.0.1"), (8317, "127.0.0.1")]
    service.stopService()
    assert reactor.getDelayedCalls() == []


def test_a_bad_config_exits_with_one_line_naming_the_yaml_path(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("routing:\n  strategy: random\n")
    with pytest.raises(SystemExit) as info:
        makeService(options("--config", str(path)), reactor=MemoryReactorClock())
    assert info.value.code == f"cliproxyd: {path}: routing.strategy: unknown strategy 'random'; use round-robin, weighted-round-robin or fill-first"


def test_no_api_keys_refuses_every_interface_but_loopback(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("host: ''\n")
    with pytest.raises(SystemExit) as info:
        makeService(options("--config", str(path)), reactor=MemoryReactorClock())
    assert "refusing to listen on 'tcp:8317:interface=0.0.0.0' with no api-keys" in info.value.code
    assert "127.0.0.1" in info.value.code
    # Loopback, or keys, and it starts.
    makeService(options("--config", str(path), "--listen", "tcp:8317:interface=127.0.0.1"),
                reactor=MemoryReactorClock())
    path.write_text("host: ''\napi-keys: [k]\n")
    makeService(options("--config", str(path)), reactor=MemoryReactorClock())
    path.write_text("host: ''\nclient-keys: [{name: n, key: k}]\n")
    makeService(options("--config", str(path)), reactor=MemoryReactorClock())


@pytest.mark.parametrize(
    "description, local",
    [
        ("tcp:8317:interface=127.0.0.1", True),
        ("tcp:8317:interface=127.8.9.1", True),
        (r"tcp6:8317:interface=\:\:1", True),
        ("tcp:8317:interface=localhost", True),
        ("unix:/run/cliproxyd.sock", True),
        ("tcp:8317", False),
        ("tcp:8317:interface=0.0.0.0", False),
        ("tcp:8317:interface=192.168.1.5", False),
        (r"tcp6:8317:interface=\:\:", False),
        ("ssl:8443:privateKey=k.pem:interface=127.0.0.1", True),
        ("systemd:domain=INET:index=0", False),
    ],
)
def test_endpoint_is_local(description, local):
    assert endpoint_is_local(description) is local


class Recorder(Service):
    def __init__(self, name, log, wait=None):
        self.setName(name)
        self.log = log
        self.wait = wait

    def stopService(self):
        Service.stopService(self)
        self.log.append(f"stop {self.name}")
        if self.wait is not None:
            self.wait.addCallback(lambda _: self.log.append(f"stopped {self.name}"))
            return self.wait


def test_service_tree_stops_children_one_at_a_time_in_reverse():
    log = []
    slow = Deferred()
    tree = ServiceTree()
    Recorder("pool", log).setServiceParent(tree)
    Recorder("drain", log, wait=slow).setServiceParent(tree)
    Recorder("listener", log).setServiceParent(tree)
    tree.startService()
    d = tree.stopService()
    assert log == ["stop listener", "stop drain"]  # the pool waits for the drain
    assert not d.called
    slow.callback(None)
    assert log == ["stop listener", "stop drain", "stopped drain", "stop pool"]
    assert d.called


def test_service_tree_stops_the_rest_when_one_child_fails():
    log = []
    tree = ServiceTree()
    Recorder("pool", log).setServiceParent(tree)
    broken = Recorder("broken", log)
    broken.stopService = lambda: (_ for _ in ()).throw(RuntimeError("boom"))
    broken.setServiceParent(tree)
    tree.startService()
    failures = []
    tree.stopService().addErrback(failures.append)
    assert log == ["stop pool"]
    assert failures[0].check(RuntimeError)


def test_in_flight_waits_for_requests_to_finish():
    clock = Clock()
    in_flight = InFlight(clock, timeout=15)
    in_flight.startService()
    request = DummyRequest([b""])
    in_flight.add(request)
    d = in_flight.stopService()
    assert not d.called and len(in_flight) == 1
    clock.advance(10)
    request.finish()
    assert d.called and len(in_flight) == 0
    assert clock.getDelayedCalls() == []


def test_in_flight_closes_what_is_left_after_the_deadline():
    clock = Clock()
    in_flight = InFlight(clock, timeout=15)
    in_flight.startService()
    request = DummyRequest([b""])
    aborted = []
    request.transport = type("T", (), {"abortConnection": lambda self: aborted.append(True)})()
    in_flight.add(request)
    d = in_flight.stopService()
    clock.advance(14.9)
    assert not d.called
    clock.advance(0.1)
    assert aborted == [True]
    assert d.called


def test_in_flight_stops_at_once_when_idle():
    in_flight = InFlight(Clock(), timeout=15)
    in_flight.startService()
    assert in_flight.stopService().called


def test_request_bodies_stay_in_memory_whatever_their_size():
    from io import BytesIO

    from twisted.web.test.requesthelper import DummyChannel

    from cliproxyd.frontend.site import MemoryRequest

    for length in (10, 10**6, None):  # None: a chunked body
        request = MemoryRequest(DummyChannel())
        request.gotLength(length)
        assert isinstance(request.content, BytesIO)
