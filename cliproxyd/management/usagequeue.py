"""
CLIProxyAPI's usage queue and per-credential totals, fed by the conductor's
observers as L{cliproxyd.management.usage.Usage} is: one record per
attempt, kept C{redis-usage-queue-retention-seconds} (L{RETENTION_SECONDS} by
default) and at most L{QUEUE_LIMIT}, that
C{GET /usage-queue} hands out oldest first, each record once; and each
credential's successes and failures since start-up (C{/api-key-usage}; its
recent windows are L{cliproxyd.management.recent.RecentRequests}').

Two integer updates and one append per attempt; time is the injected clock.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from cliproxyd.conductor.conductor import Attempt

#: How long a usage record waits in the queue (CLIProxyAPI's redis-usage-queue-retention-seconds default).
RETENTION_SECONDS = 60
#: The most records the queue holds; the oldest go first.
QUEUE_LIMIT = 10_000


class UsageRecords:
    """The usage queue and the totals per credential; see the module."""

    def __init__(self, clock: Any, retention: Callable[[], float] = lambda: RETENTION_SECONDS) -> None:
        """
        @param retention: how long a record is kept, in seconds, as the
            running config says now (read when records are handed out).
        """
        self._clock = clock
        self._retention = retention
        self._totals: dict[str, list[int]] = {}
        self._queue: deque[tuple[float, Attempt]] = deque(maxlen=QUEUE_LIMIT)

    def record(self, attempt: Attempt) -> None:
        totals = self._totals.get(attempt.cred_id)
        if totals is None:
            totals = self._totals[attempt.cred_id] = [0, 0]
        totals[0 if attempt.ok else 1] += 1
        self._queue.append((self._clock.seconds(), attempt))

    def totals(self, cred_id: str) -> tuple[int, int]:
        """A credential's successes and failures since start-up."""
        success, failed = self._totals.get(cred_id, (0, 0))
        return success, failed

    def pop(self, count: int) -> list[tuple[float, Attempt]]:
        """The C{count} oldest records still within the retention, removed from the queue."""
        cutoff = self._clock.seconds() - self._retention()
        while self._queue and self._queue[0][0] < cutoff:
            self._queue.popleft()
        out = []
        while self._queue and len(out) < count:
            out.append(self._queue.popleft())
        return out
