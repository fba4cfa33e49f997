"""
Each credential's recent requests, as the Management Center draws them on
its auth-file cards (C{recent_requests}): the successes and failures of the
last L{BUCKETS} windows of L{BUCKET_SECONDS} each, oldest first, every
window labelled C{HH:MM-HH:MM} in local time as CLIProxyAPI labels them.

Fed by the conductor's observers (one attempt, a few integer updates);
bounded: L{BUCKETS} counters a credential in one flat array of machine
integers (about 550 bytes), and at most L{MAX_CREDENTIALS} credentials (the
least recently used go first). The bound is above any pool the daemon is
run with: a pool larger than it, used in turn, would forget each
credential's windows before its next request.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from datetime import datetime
from typing import Any

from cliproxyd.conductor.conductor import Attempt

#: How long one window is, in seconds.
BUCKET_SECONDS = 600
#: How many windows are shown.
BUCKETS = 20
#: Credentials kept; past this many the least recently used is forgotten.
MAX_CREDENTIALS = 65536


#: A new credential's ring: no window yet (copied, never changed).
_EMPTY_RING = array("q", [-1, 0, 0] * BUCKETS)


def _label(bucket: int) -> str:
    start = datetime.fromtimestamp(bucket * BUCKET_SECONDS)
    end = datetime.fromtimestamp((bucket + 1) * BUCKET_SECONDS)
    return f"{start:%H:%M}-{end:%H:%M}"


class RecentRequests:
    """
    Per credential, a ring of L{BUCKETS} windows, flat: C{window, successes,
    failures} at C{3 * (window % BUCKETS)} (one array made per credential,
    not one per window: a pool of 10,000 keys makes each ring once, on the
    request path).
    """

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._rings: OrderedDict[str, array[int]] = OrderedDict()

    def record(self, attempt: Attempt) -> None:
        """Count one attempt of C{attempt.cred_id} in the window it ended in."""
        bucket = int(self._clock.seconds() // BUCKET_SECONDS)
        ring = self._rings.get(attempt.cred_id)
        if ring is None:
            ring = self._rings[attempt.cred_id] = array("q", _EMPTY_RING)
            if len(self._rings) > MAX_CREDENTIALS:
                self._rings.popitem(last=False)
        else:
            self._rings.move_to_end(attempt.cred_id)
        at = 3 * (bucket % BUCKETS)
        if ring[at] != bucket:
            ring[at], ring[at + 1], ring[at + 2] = bucket, 0, 0
        ring[at + (1 if attempt.ok else 2)] += 1

    def snapshot(self, cred_id: str) -> list[dict[str, Any]]:
        """The last L{BUCKETS} windows of C{cred_id}, oldest first: C{{"time", "success", "failed"}}."""
        now = int(self._clock.seconds() // BUCKET_SECONDS)
        ring = self._rings.get(cred_id)
        out = []
        for bucket in range(now - BUCKETS + 1, now + 1):
            at = 3 * (bucket % BUCKETS)
            hit = ring is not None and ring[at] == bucket
            out.append({"time": _label(bucket), "success": ring[at + 1] if hit else 0,  # type: ignore[index]
                        "failed": ring[at + 2] if hit else 0})  # type: ignore[index]
        return out
