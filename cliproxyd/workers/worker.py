"""
A worker's side of C{--workers N}: which slot it is, the listening socket
it adopts from its parent, and the watch that stops it when the parent is
gone.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from cliproxyd.service import Periodic
from cliproxyd.workers.supervisor import LISTEN_FD

#: How often a worker looks whether its parent is still there.
PARENT_WATCH_SECONDS = 1.0


@frozen
class WorkerRole:
    """
    This process is worker C{index} of the parent C{parent} (a pid), whose
    runtime directory is C{directory} (the workers' counts, and the
    C{prometheus} directory of multiprocess metrics).
    """

    index: int
    directory: str
    parent: int

    @property
    def persists(self) -> bool:
        """Whether this worker writes the state and usage files (one worker does: the first slot)."""
        return self.index == 0

    def notify_parent(self) -> None:
        """Ask the parent to pass a reload on to every worker (a management write changed the files)."""
        try:
            os.kill(self.parent, signal.SIGHUP)
        except OSError:
            pass  # the parent is gone: the parent watch stops this worker


class AdoptedListener(Service):
    """
    Serves C{factory} on the listening socket the parent passed as
    L{LISTEN_FD}, in place of a listener of its own. A worker ignores
    SIGINT once it serves: its parent says when it stops (SIGTERM).
    """

    name = "frontend"
    log = Logger()

    def __init__(self, reactor: Any, factory: Any, fd: int = LISTEN_FD) -> None:
        self._reactor = reactor
        self._factory = factory
        self._fd = fd
        self.port: Any = None

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        inherited = socket.socket(fileno=self._fd)  # its family, from the socket itself
        family = inherited.family
        inherited.setblocking(False)  # the reactor accepts until nothing is left
        try:
            self.port = self._reactor.adoptStreamPort(self._fd, family, self._factory)
        finally:
            inherited.close()  # the port holds its own duplicate

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        Service.startService(self)
        if hasattr(self._reactor, "callFromThread"):  # a real reactor, in a worker process
            # Ctrl-C in a terminal reaches the whole process group: the
            # parent passes it on as the one SIGTERM drain of every worker.
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


def parent_watch(role: WorkerRole, stop: Callable[[], None], clock: IReactorTime,
                 parent: Callable[[], int] = os.getppid) -> Periodic:
    """
    The job that calls C{stop()} once, the first time this process's parent
    is no longer C{role.parent} (it died and the process was handed to init):
    a worker never outlives its parent.
    """
    log = Logger(namespace="cliproxyd.workers")
    stopped: list[bool] = []

    def look() -> None:
        if not stopped and parent() != role.parent:
            stopped.append(True)
            log.error("the parent process {pid} is gone: this worker stops", pid=role.parent)
            stop()

    return Periodic("parent-watch", PARENT_WATCH_SECONDS, look, clock)
