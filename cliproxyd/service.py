"""The service tree's root: children start in order and stop one by one in reverse."""

from __future__ import annotations

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger


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
