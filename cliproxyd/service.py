"""
The service tree's parts: L{ServiceTree}, whose children start in order and
stop one by one in reverse, and L{Periodic}, the named, failure-guarded
periodic job every loop in cliproxyd is.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure


class ServiceTree(MultiService):
    """
    A C{MultiService} whose children stop sequentially, last added first.

    Twisted's C{MultiService} stops every child at once and swallows their
    errors. Here the frontend stops listening, then in-flight requests
    drain, then the HTTP pool closes: each step needs the one before it to
    be over. A child that fails to stop is logged, the rest still stop, and
    the first failure is what the returned Deferred fails with.
    """

    log = Logger()

    def stopService(self) -> "Deferred[None]":
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop_children())

    async def _stop_children(self) -> None:
        first: BaseException | None = None
        for child in reversed(list(self)):
            try:
                await maybeDeferred(child.stopService)
            except Exception as e:
                self.log.failure("service {name} failed to stop", name=child.name)
                first = first or e
        if first is not None:
            raise first


class Periodic(Service):
    """
    A named job that runs every C{interval} seconds on C{clock} while the
    service runs: the one way periodic work is done in cliproxyd.

    C{work()} may return a Deferred; the next run waits for it. A run that
    raises or fails is logged with the job's name and the loop goes on
    (a bare C{LoopingCall} stops for good at its first uncaught error).
    C{on_stop}, if given, runs once after the loop stops (a final flush),
    and the service's stop waits for it.
    """

    log = Logger()

    def __init__(
        self,
        name: str,
        interval: float,
        work: Callable[[], Any],
        clock: IReactorTime,
        *,
        now: bool = False,
        on_stop: Callable[[], Any] | None = None,
    ) -> None:
        self.setName(name)
        self.interval = interval
        self._work = work
        self._clock = clock
        self._now = now
        self._on_stop = on_stop
        self._loop: LoopingCall | None = None
        #: runs that failed, for the management API and tests
        self.failures = 0

    def run_now(self) -> "Deferred[None]":
        """One run, outside the schedule (failures logged the same way); fires when it is over."""
        return maybeDeferred(self._work).addErrback(self._failed)

    _run = run_now

    def _failed(self, failure: Failure) -> None:
        self.failures += 1
        self.log.failure("periodic job {job} failed; it runs again in {interval}s", failure,
                         job=self.name, interval=self.interval)

    def startService(self) -> None:
        Service.startService(self)
        loop = self._loop = LoopingCall(self._run)
        loop.clock = self._clock
        # _run never fails, so neither does the loop; this is belt and braces.
        loop.start(self.interval, now=self._now).addErrback(self._failed)

    def stopService(self) -> "Deferred[None] | None":
        Service.stopService(self)
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        if self._on_stop is not None:
            return maybeDeferred(self._on_stop)
        return None
