"""
The parent of C{--workers N}: it opens the listening socket, starts N
worker processes that adopt it, restarts a worker that dies, passes SIGHUP
and SIGTERM on, and stops once every worker has drained.

The parent serves nothing itself and builds no generation: a worker is a
whole daemon (C{twistd -n cliproxyd --config ...}, the same python) that
listens on the socket it inherits as file descriptor L{LISTEN_FD} instead
of opening its own. The kernel hands each new connection to one of the
workers accepting on it.

The restart policy is pure (L{after_exit}): a worker that dies soon after
it started is restarted later each time (L{RESTART_MIN} doubling up to
L{RESTART_MAX}), one that ran for L{STABLE_SECONDS} or more is restarted
after L{RESTART_MIN}; never in a tight loop. Every wait is on the clock
the L{Supervisor} is given.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from typing import Any

from attrs import define
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError, ProcessDone
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from cliproxyd.metrics import worker_exited
from cliproxyd.workers.peers import counts_path

#: The file descriptor a worker finds the listening socket on.
LISTEN_FD = 3
#: The first restart delay; it doubles with each worker death that follows a short run.
RESTART_MIN = 0.5
#: The longest restart delay.
RESTART_MAX = 30.0
#: A worker that ran this long before it died is restarted after RESTART_MIN again.
STABLE_SECONDS = 30.0
#: How much longer than a worker's own drain (shutdown-seconds and its close grace)
#: the parent waits before it kills the worker.
DRAIN_MARGIN = 5.0


def restart_delay(quick_deaths: int) -> float:
    """How long to wait before a restart, after C{quick_deaths} deaths in a row each soon after a start."""
    return min(RESTART_MAX, RESTART_MIN * 2 ** min(quick_deaths, 32))


def after_exit(quick_deaths: int, started_at: float, now: float) -> tuple[int, float]:
    """
    A worker started at C{started_at} ended at C{now}, after C{quick_deaths}
    short-lived runs before it: the new count of short-lived runs, and how
    long to wait before starting it again.
    """
    quick = 0 if now - started_at >= STABLE_SECONDS else quick_deaths + 1
    return quick, restart_delay(quick)


@define
class Slot:
    """One worker's place: the process in it now, and its history."""

    index: int
    process: Any = None  # IProcessTransport while a process runs in the slot
    pid: int | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    restarts: int = 0
    restart: IDelayedCall | None = None
    #: the last process's end, as the supervisor saw it
    last_exit: str = ""


class WorkerProcess(ProcessProtocol):
    """Tells the supervisor when the worker in C{slot} has ended."""

    def __init__(self, supervisor: Supervisor, slot: Slot) -> None:
        self._supervisor = supervisor
        self._slot = slot

    def processEnded(self, reason: Failure) -> None:
        self._supervisor.ended(self._slot, reason)


def describe_exit(reason: Failure) -> str:
    """C{exit 0}, C{exit 3} or C{signal 9}: how a process ended."""
    value = reason.value
    if isinstance(value, ProcessDone):
        return "exit 0"
    sig = getattr(value, "signal", None)
    if sig is not None:
        return f"signal {sig}"
    return f"exit {getattr(value, 'exitCode', '?')}"


#: spawn(index, protocol) starts worker C{index} with C{protocol} and returns its process transport.
Spawn = Callable[[int, ProcessProtocol], Any]


class Supervisor(Service):
    """
    Keeps C{count} workers running while the service runs.

    Stopping sends each worker SIGTERM and fires once all have ended; a
    worker still running C{drain_timeout} seconds later is killed.
    L{reload} passes a SIGHUP on to every worker. C{clean} says, after the
    stop, whether every worker ended by itself with exit status 0.

    @param spawn: starts a worker (L{process_spawner} in the daemon).
    @param on_stopped: runs once every worker has ended.
    @param on_draining: runs when the stop begins, before the workers are told (the parent lets go of the socket).
    @param on_ended: runs with a worker's slot and pid each time one ends,
        before any restart (its counts leave C{/status}; multiprocess
        metrics forget its live gauges there).
    """

    name = "workers"
    log = Logger()

    def __init__(self, count: int, spawn: Spawn, clock: IReactorTime, drain_timeout: float,
                 on_stopped: Callable[[], None] | None = None, on_draining: Callable[[], None] | None = None,
                 on_ended: Callable[[int, int], None] | None = None) -> None:
        if count < 1:
            raise ValueError("a supervisor needs at least one worker")
        self._spawn = spawn
        self._clock = clock
        self._drain_timeout = drain_timeout
        self._on_stopped = on_stopped
        self._on_draining = on_draining
        self._on_ended = on_ended
        self.slots = [Slot(i) for i in range(count)]
        self._first: IDelayedCall | None = None
        self._stopping = False
        self._drained: Deferred[None] | None = None
        self._deadline: IDelayedCall | None = None
        self.clean = True

    # -- running ------------------------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        # Spawned from the reactor's loop, once it runs (child reaping is set up by then).
        self._first = self._clock.callLater(0, self._start_all)
        if hasattr(self._clock, "callFromThread"):
            try:
                signal.signal(signal.SIGHUP, lambda signum, frame: self._clock.callFromThread(self.reload))
            except ValueError:
                pass  # not the main thread (tests)

    def _start_all(self) -> None:
        self._first = None
        for slot in self.slots:
            self._start(slot)

    def _start(self, slot: Slot) -> None:
        slot.restart = None
        if self._stopping:
            return
        slot.started_at = self._clock.seconds()
        try:
            slot.process = self._spawn(slot.index, WorkerProcess(self, slot))
        except Exception:
            self.log.failure("could not start worker {index}", index=slot.index)
            slot.process = None
            slot.quick_deaths, delay = after_exit(slot.quick_deaths, slot.started_at, slot.started_at)
            slot.restart = self._clock.callLater(delay, self._start, slot)
            return
        slot.pid = getattr(slot.process, "pid", None)
        self.log.info("worker {index} started (pid {pid})", index=slot.index, pid=slot.pid)

    def ended(self, slot: Slot, reason: Failure) -> None:
        """The process in C{slot} has ended (called by its L{WorkerProcess})."""
        how = slot.last_exit = describe_exit(reason)
        slot.process = None
        if self._on_ended is not None and slot.pid is not None:
            try:
                self._on_ended(slot.index, slot.pid)
            except Exception:
                self.log.failure("after worker {index} (pid {pid}) ended", index=slot.index, pid=slot.pid)
        if self._stopping:
            if how != "exit 0":
                self.clean = False
            self.log.info("worker {index} (pid {pid}) stopped: {how}", index=slot.index, pid=slot.pid, how=how)
            if all(s.process is None for s in self.slots):
                self._finish()
            return
        now = self._clock.seconds()
        slot.quick_deaths, delay = after_exit(slot.quick_deaths, slot.started_at, now)
        slot.restarts += 1
        self.log.warn("worker {index} (pid {pid}) ended ({how}) after {ran:.1f}s; restarting it in {delay}s",
                      index=slot.index, pid=slot.pid, how=how, ran=now - slot.started_at, delay=delay)
        slot.restart = self._clock.callLater(delay, self._start, slot)

    def signal_all(self, signum: str) -> int:
        """Send C{signum} (C{"HUP"}, C{"TERM"}, C{"KILL"}) to every running worker; how many got it."""
        sent = 0
        for slot in self.slots:
            if slot.process is not None:
                try:
                    slot.process.signalProcess(signum)
                    sent += 1
                except Exception as e:  # the process has just ended: its processEnded is on the way
                    self.log.debug("worker {index}: SIG{sig} not sent: {error}", index=slot.index, sig=signum,
                                   error=e)
        return sent

    def reload(self) -> None:
        """Pass a reload (SIGHUP) on to every worker."""
        sent = self.signal_all("HUP")
        self.log.info("SIGHUP passed on to {count} workers", count=sent)

    @property
    def pids(self) -> list[int]:
        """The pids of the workers running now."""
        return [s.pid for s in self.slots if s.process is not None and s.pid is not None]

    # -- stopping -----------------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        self._stopping = True
        if self._first is not None and self._first.active():
            self._first.cancel()
            self._first = None
        for slot in self.slots:
            if slot.restart is not None and slot.restart.active():
                slot.restart.cancel()
            slot.restart = None
        if self._on_draining is not None:
            self._on_draining()
        if all(s.process is None for s in self.slots):
            self._finish()
            return succeed(None)
        sent = self.signal_all("TERM")
        self.log.info("draining {count} workers (up to {timeout}s)", count=sent, timeout=self._drain_timeout)
        self._drained = Deferred()
        self._deadline = self._clock.callLater(self._drain_timeout, self._kill_rest)
        return self._drained

    def _kill_rest(self) -> None:
        self._deadline = None
        left = [s for s in self.slots if s.process is not None]
        self.log.error("{count} workers still running after {timeout}s: killing them",
                       count=len(left), timeout=self._drain_timeout)
        self.clean = False
        self.signal_all("KILL")

    def _finish(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        if self._on_stopped is not None:
            on_stopped, self._on_stopped = self._on_stopped, None
            on_stopped()
        drained, self._drained = self._drained, None
        if drained is not None and not drained.called:
            drained.callback(None)


# -- the real processes --------------------------------------------------------------------


def can_share(endpoint: Any) -> bool:
    """Whether workers can share C{endpoint}'s socket (L{open_listener} opens it): TCP, v4 or v6, and C{systemd:}."""
    from twisted.internet.endpoints import (
        AdoptedStreamServerEndpoint,
        TCP4ServerEndpoint,
        TCP6ServerEndpoint,
    )

    return isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint, AdoptedStreamServerEndpoint))


def open_listener(endpoint: Any) -> socket.socket:
    """
    The listening socket that C{endpoint} (a server endpoint of
    L{serverFromString} that L{can_share}) describes, for workers to adopt:
    TCP (v4 or v6) is bound here; C{systemd:} endpoints hand over the
    socket systemd passed.

    @raise CannotListenError: the address is in use or not ours.
    """
    from twisted.internet.endpoints import (
        AdoptedStreamServerEndpoint,
        TCP6ServerEndpoint,
    )

    assert can_share(endpoint), endpoint
    if isinstance(endpoint, AdoptedStreamServerEndpoint):
        sock = socket.socket(endpoint.addressFamily, socket.SOCK_STREAM, fileno=os.dup(endpoint.fileno))
        # systemd passes a blocking socket (unless NonBlocking=yes); a worker's
        # reactor accepts until there is nothing left, which must not block.
        sock.setblocking(False)
        return sock
    family = socket.AF_INET6 if isinstance(endpoint, TCP6ServerEndpoint) else socket.AF_INET
    interface = endpoint._interface or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted's own TCP ports
        sock.bind((interface, endpoint._port))
        sock.listen(endpoint._backlog)
    except OSError as e:
        sock.close()
        raise CannotListenError(interface, endpoint._port, e) from None
    sock.setblocking(False)
    return sock


def process_spawner(reactor: Any, command: Callable[[int], list[str]], env: Callable[[], dict[str, str]],
                    listening: Callable[[], int]) -> Spawn:
    """
    How the daemon starts a worker: C{command(index)} (its argv, the same
    python first) with the environment C{env()}, standard input, output and error shared with
    the parent (so its log goes where the parent's goes), and the listening
    socket (C{listening()}, a file descriptor) as L{LISTEN_FD}.
    """

    def spawn(index: int, protocol: ProcessProtocol) -> Any:
        argv = command(index)
        return reactor.spawnProcess(protocol, argv[0], argv, env=env(),
                                    childFDs={0: 0, 1: 1, 2: 2, LISTEN_FD: listening()})

    return spawn


class WorkerHome(Service):
    """
    What the parent holds for its workers: the listening socket (opened at
    start, before privileges are dropped) and a runtime directory, made at
    start under C{root} (systemd's C{RUNTIME_DIRECTORY}, or the temporary
    directory) and removed at stop, where the workers leave their counts
    and the C{prometheus} directory multiprocess metrics share.
    """

    name = "listener"

    def __init__(self, endpoint: Any, root: str | None = None) -> None:
        self._endpoint = endpoint
        self._root = root
        self.socket: socket.socket | None = None
        self.directory = ""

    @property
    def metrics_directory(self) -> str:
        return os.path.join(self.directory, "prometheus")

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        if self.socket is None:
            self.socket = open_listener(self._endpoint)

    def startService(self) -> None:
        self.privilegedStartService()
        Service.startService(self)
        self.directory = tempfile.mkdtemp(prefix="cliproxyd-workers-", dir=self._root)
        os.mkdir(self.metrics_directory, 0o700)

    def fileno(self) -> int:
        assert self.socket is not None, "the listener is closed"
        return self.socket.fileno()

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        """A worker's environment: C{base} with C{PROMETHEUS_MULTIPROC_DIR} set to this parent's directory."""
        return {**base, "PROMETHEUS_MULTIPROC_DIR": self.metrics_directory}

    def worker_ended(self, index: int, pid: int) -> None:
        """Worker C{index} has ended: its counts leave the machine's at once (its replacement writes them anew)."""
        if self.directory:
            try:
                os.remove(counts_path(self.directory, index))
            except FileNotFoundError:
                pass
        if self.metrics_directory:
            # its live gauges leave the /metrics sums; its counters stay, as Prometheus wants
            worker_exited(pid, self.metrics_directory)

    def close(self) -> None:
        """No new workers will adopt the socket: the parent lets go of it (the workers still hold it)."""
        sock, self.socket = self.socket, None
        if sock is not None:
            sock.close()

    def stopService(self) -> None:
        Service.stopService(self)
        self.close()
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
