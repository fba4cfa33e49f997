"""
Usage for the management API: aggregate counters since start-up and a
bounded window of the most recent attempts. Fed by the conductor's
observers; costs a few dict updates per attempt.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from cliproxyd.conductor.conductor import Attempt

#: How many recent attempts are kept.
RECENT = 500


class Usage:
    def __init__(self, clock: Any, recent: int = RECENT) -> None:
        self._clock = clock
        self.total = 0
        self.succeeded = 0
        self.failed = 0
        self._by_model: dict[str, list[int]] = {}
        self._by_credential: dict[str, list[int]] = {}
        self._by_status: dict[str, int] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent)

    def record(self, attempt: Attempt) -> None:
        ok = attempt.ok
        self.total += 1
        if ok:
            self.succeeded += 1
        else:
            self.failed += 1
        for table, key in ((self._by_model, attempt.model), (self._by_credential, attempt.cred_id)):
            counts = table.get(key)
            if counts is None:
                counts = table[key] = [0, 0]
            counts[0 if ok else 1] += 1
        status = str(attempt.status or "none")
        self._by_status[status] = self._by_status.get(status, 0) + 1
        self._recent.append({
            "at": self._clock.seconds(),
            "credential": attempt.cred_id,
            "provider": attempt.provider,
            "model": attempt.model,
            "ok": ok,
            "status": attempt.status,
            "error": attempt.error[:300],
            "latency_ms": round(attempt.latency * 1000, 1),
        })

    def as_json(self, limit: int | None = None) -> dict[str, Any]:
        recent = list(self._recent)
        if limit is not None:
            recent = recent[-limit:] if limit > 0 else []
        return {
            "total_requests": self.total,
            "success_count": self.succeeded,
            "failure_count": self.failed,
            "by_model": {k: {"success": v[0], "failure": v[1]} for k, v in sorted(self._by_model.items())},
            "by_credential": {k: {"success": v[0], "failure": v[1]}
                              for k, v in sorted(self._by_credential.items())},
            "by_status": dict(sorted(self._by_status.items())),
            "recent": recent,
            "recent_limit": self._recent.maxlen,
        }
