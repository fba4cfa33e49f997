"""
Usage for the management API: aggregate counters since start-up and a
bounded window of the most recent attempts. Fed by the conductor's
observers; costs a few dict updates per attempt.

With C{usage-statistics-enabled: true} the counters are kept across
restarts (L{UsagePersistence}): a snapshot in the usage file beside the
state file (L{cliproxyd.config.model.Config.usage_path}), written
atomically in a thread every few seconds while they change and at
shutdown, by the state file's machinery, and restored at start-up.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from twisted.internet.interfaces import IReactorTime

from cliproxyd.conductor.conductor import Attempt
from cliproxyd.state.persist import RunInThread, StatePersistence

#: The format of the usage file.
SNAPSHOT_VERSION = 1

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
        #: counted since the last snapshot
        self.changed = False

    def record(self, attempt: Attempt) -> None:
        ok = attempt.ok
        self.changed = True
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

    def snapshot(self) -> dict[str, Any]:
        """Every counter and the recent attempts, as JSON data."""
        return {
            "version": SNAPSHOT_VERSION,
            "total": self.total, "succeeded": self.succeeded, "failed": self.failed,
            "by_model": self._by_model, "by_credential": self._by_credential, "by_status": self._by_status,
            "recent": list(self._recent),
        }

    def restore(self, data: Any) -> list[str]:
        """
        Add the counters of a L{snapshot} to these (what was counted since
        start-up stays); what is not in its shape is skipped and named.
        """
        if not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION:
            return ["the usage snapshot (not a version 1 snapshot)"]
        problems = []
        for name in ("total", "succeeded", "failed"):
            value = data.get(name)
            if _count(value):
                setattr(self, name, getattr(self, name) + value)
            elif value is not None:
                problems.append(name)
        for name, table in (("by_model", self._by_model), ("by_credential", self._by_credential)):
            for key, counts in (data.get(name) or {}).items() if isinstance(data.get(name), dict) else ():
                if isinstance(counts, list) and len(counts) == 2 and all(_count(c) for c in counts):
                    mine = table.setdefault(str(key), [0, 0])
                    mine[0] += counts[0]
                    mine[1] += counts[1]
                else:
                    problems.append(f"{name}.{key}")
        statuses = data.get("by_status")
        for key, count in statuses.items() if isinstance(statuses, dict) else ():
            if _count(count):
                self._by_status[str(key)] = self._by_status.get(str(key), 0) + count
            else:
                problems.append(f"by_status.{key}")
        recent = data.get("recent")
        restored = [r for r in recent if isinstance(r, dict)] if isinstance(recent, list) else []
        older = restored[-(self._recent.maxlen or 0):] if self._recent.maxlen else restored
        self._recent = deque(older + list(self._recent), maxlen=self._recent.maxlen)
        return problems


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class _Snapshots:
    """L{Usage} as the state file's machinery sees a store: dirty, snapshot, restore; only while enabled."""

    def __init__(self, usage: Usage, enabled: Callable[[], bool]) -> None:
        self._usage = usage
        self._enabled = enabled

    @property
    def dirty(self) -> bool:
        return self._usage.changed and self._enabled()

    @dirty.setter
    def dirty(self, value: bool) -> None:
        self._usage.changed = value

    def snapshot(self, now: float) -> dict[str, Any]:
        return self._usage.snapshot()

    def restore(self, data: Any, now: float) -> list[str]:
        if not self._enabled():
            return []
        return self._usage.restore(data)


class UsagePersistence(StatePersistence):
    """
    The usage counters in C{path} across restarts, while C{enabled()} (the
    running config's C{usage-statistics-enabled}): loaded at start (a file
    left while it was off is not read), flushed while they change and at
    stop.
    """

    name = "usage-state"

    def __init__(self, usage: Usage, path: str, clock: IReactorTime, enabled: Callable[[], bool], *,
                 interval: float = 5.0, run_in_thread: RunInThread | None = None) -> None:
        super().__init__(_Snapshots(usage, enabled), path, clock, interval=interval,  # type: ignore[arg-type]
                         run_in_thread=run_in_thread)
        self._usage = usage
        self._enabled = enabled

    def _report(self, data: Any, problems: list[str]) -> None:
        if self._enabled():
            self.log.info("restored the usage counters ({total} requests) from {path}",
                          total=self._usage.total, path=self.path, problems=len(problems))
