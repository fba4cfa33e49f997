"""
What CLIProxyAPI's usage routes are made of, fed by the conductor's
observers as L{cliproxyd.management.usage.Usage} is:

  - per credential, its requests in the last L{BUCKETS} windows of
    L{BUCKET_SECONDS} (CLIProxyAPI's "recent requests" ring, which the
    Management Center draws as a status bar per key);
  - a queue of one record per attempt, kept L{RETENTION_SECONDS} and at most
    L{QUEUE_LIMIT}, that C{GET /usage-queue} hands out oldest first, each
    record once (CLIProxyAPI's usage queue).

A few integer updates and one append per attempt; time is the injected clock.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from cliproxyd.conductor.conductor import Attempt

#: The recent-requests ring: this many windows of this many seconds (CLIProxyAPI's 20 x 10 min).
BUCKETS = 20
BUCKET_SECONDS = 600
#: How long a usage record waits in the queue (CLIProxyAPI's redis-usage-queue-retention-seconds default).
RETENTION_SECONDS = 60
#: The most records the queue holds; the oldest go first.
QUEUE_LIMIT = 10_000


class _Ring:
    """One credential's counts per window: window id -> [success, failed]."""

    __slots__ = ("windows",)

    def __init__(self) -> None:
        self.windows: dict[int, list[int]] = {}

    def add(self, window: int, ok: bool) -> None:
        counts = self.windows.get(window)
        if counts is None:
            counts = self.windows[window] = [0, 0]
            for old in [w for w in self.windows if w <= window - BUCKETS]:
                del self.windows[old]
        counts[0 if ok else 1] += 1


def window_label(window: int) -> str:
    """CLIProxyAPI's label of a window: C{HH:MM-HH:MM}, its start and end (UTC here)."""
    start = window * BUCKET_SECONDS
    fmt = "%H:%M"
    return time.strftime(fmt, time.gmtime(start)) + "-" + time.strftime(fmt, time.gmtime(start + BUCKET_SECONDS))


class UsageRecords:
    """Recent request windows per credential and the usage queue; see the module."""

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._rings: dict[str, _Ring] = {}
        self._totals: dict[str, list[int]] = {}
        self._queue: deque[tuple[float, Attempt]] = deque(maxlen=QUEUE_LIMIT)

    def record(self, attempt: Attempt) -> None:
        now = self._clock.seconds()
        ring = self._rings.get(attempt.cred_id)
        if ring is None:
            ring = self._rings[attempt.cred_id] = _Ring()
            self._totals[attempt.cred_id] = [0, 0]
        ring.add(int(now // BUCKET_SECONDS), attempt.ok)
        self._totals[attempt.cred_id][0 if attempt.ok else 1] += 1
        self._queue.append((now, attempt))

    def totals(self, cred_id: str) -> tuple[int, int]:
        """A credential's successes and failures since start-up."""
        success, failed = self._totals.get(cred_id, (0, 0))
        return success, failed

    def recent(self, cred_id: str) -> list[dict[str, Any]]:
        """The last L{BUCKETS} windows of a credential, oldest first, the current one last."""
        current = int(self._clock.seconds() // BUCKET_SECONDS)
        ring = self._rings.get(cred_id)
        out = []
        for window in range(current - BUCKETS + 1, current + 1):
            success, failed = ring.windows.get(window, (0, 0)) if ring is not None else (0, 0)
            out.append({"time": window_label(window), "success": success, "failed": failed})
        return out

    def pop(self, count: int) -> list[tuple[float, Attempt]]:
        """The C{count} oldest records still within L{RETENTION_SECONDS}, removed from the queue."""
        cutoff = self._clock.seconds() - RETENTION_SECONDS
        while self._queue and self._queue[0][0] < cutoff:
            self._queue.popleft()
        out = []
        while self._queue and len(out) < count:
            out.append(self._queue.popleft())
        return out
