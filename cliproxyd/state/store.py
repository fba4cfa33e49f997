"""
The StateStore: the one owner of mutable runtime state.

For now it holds the routing cursors and per-credential counters, in memory.
The conductor issue adds cooldowns and persistence behind the same seam.
"""

from __future__ import annotations

from typing import Protocol

from attrs import define


@define
class CredentialStats:
    requests: int = 0
    successes: int = 0
    failures: int = 0
    last_status: int | None = None
    last_error: str = ""
    last_used_at: float | None = None
    last_failed_at: float | None = None

    def as_json(self) -> dict:
        return {
            "requests": self.requests,
            "successes": self.successes,
            "failures": self.failures,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "last_used_at": self.last_used_at,
            "last_failed_at": self.last_failed_at,
        }


class StateStore(Protocol):
    def next_cursor(self, key: str) -> int:
        """Return the cursor for C{key} and advance it by one."""

    def record(self, cred_id: str, now: float, status: int | None, error: str = "") -> None:
        """Record one attempt: C{error} empty means success."""

    def stats(self, cred_id: str) -> CredentialStats:
        """The counters of one credential (a fresh zero record if unseen)."""


#: Cursors are kept per route; a config with more distinct routes than this
#: starts over rather than growing without bound.
MAX_CURSORS = 4096


class MemoryStateStore:
    def __init__(self) -> None:
        self._cursors: dict[str, int] = {}
        self._stats: dict[str, CredentialStats] = {}

    def next_cursor(self, key: str) -> int:
        cursors = self._cursors
        value = cursors.get(key)
        if value is None:
            if len(cursors) >= MAX_CURSORS:
                cursors.clear()
            value = 0
        cursors[key] = value + 1
        return value

    def record(self, cred_id: str, now: float, status: int | None, error: str = "") -> None:
        s = self._stats.get(cred_id)
        if s is None:
            s = self._stats[cred_id] = CredentialStats()
        s.requests += 1
        s.last_used_at = now
        s.last_status = status
        if error:
            s.failures += 1
            s.last_error = error
            s.last_failed_at = now
        else:
            s.successes += 1

    def stats(self, cred_id: str) -> CredentialStats:
        return self._stats.get(cred_id) or CredentialStats()
