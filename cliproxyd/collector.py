"""
The cyclic garbage collector, tuned for a daemon that keeps its state for
its whole life and makes short-lived objects per request.

CPython collects its youngest generation after every 700 net allocations of
container objects, and the whole heap each time enough survivors pile up.
A request in flight holds a few hundred such objects (Deferreds, frames of
coroutines, header lists) that live for its duration, so with many requests
at once each young collection finds many survivors, promotes them, and full
collections come often, each walking every object the daemon made at start
(modules, config, credentials: far more than all requests in flight). Under
callgrind at 32 concurrent requests the collector was about a twelfth of
the daemon's instructions (a fortieth at one).

So, once the reactor runs (the first generation of credentials built),
L{CollectorTuning} moves everything alive into the permanent generation
(C{gc.freeze}: start-up objects are never walked again; they are freed by
reference counting as before, only a cycle among them would stay) and
makes the youngest generation larger, so a request's objects are more often
freed by reference counting before a collection sees them. Collection
itself stays on: a cycle made by a request is still collected.
"""

from __future__ import annotations

import gc

from twisted.application.service import Service

#: Net allocations of container objects between young collections (CPython's default: 700).
YOUNG_THRESHOLD = 20_000


class CollectorTuning(Service):
    """Freezes what start-up made and widens the young generation once the reactor runs; undone on stop."""

    name = "collector-tuning"

    def __init__(self, reactor, young: int = YOUNG_THRESHOLD) -> None:
        self._reactor = reactor
        self._young = young
        self._saved: tuple[int, ...] | None = None

    def startService(self) -> None:
        Service.startService(self)
        self._reactor.callWhenRunning(self._tune)

    def _tune(self) -> None:
        if not self.running or self._saved is not None:
            return
        self._saved = gc.get_threshold()
        gc.collect()  # what start-up left as garbage is not frozen with the rest
        gc.freeze()
        gc.set_threshold(self._young, *self._saved[1:])

    def stopService(self) -> None:
        Service.stopService(self)
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            gc.unfreeze()
            self._saved = None
