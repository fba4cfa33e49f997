"""
How workers answer for the whole machine: each worker writes what it
counted to a small file in the parent's runtime directory every
L{PUBLISH_SECONDS} (atomically, off the reactor thread), and the worker
that answers C{/v0/management/status} reads the others' files and adds
them to its own counts (L{merge}).

A file older than L{STALE_SECONDS} is a worker that died without removing
it (its replacement writes the same slot's file): it is left out. A worker
that stops removes its file.

The counts are plain JSON (see L{merge} for their shape); what is summed
and what is the latest is said here once, in L{SUMMED} and L{LATEST}.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from cliproxyd.service import Periodic

#: How often a worker writes its counts.
PUBLISH_SECONDS = 1.0
#: A worker's file older than this is left out (the worker is gone).
STALE_SECONDS = 5.0
#: Counts that add up across workers (per credential and per model).
SUMMED = ("requests", "successes", "failures")
#: Per credential: the worker that used it last says these.
LATEST = ("last_status", "last_error", "last_used_at")

_PREFIX, _SUFFIX = "worker-", ".json"


def counts_path(directory: str, index: int) -> str:
    return os.path.join(directory, f"{_PREFIX}{index}{_SUFFIX}")


def replace_file(path: str, data: bytes) -> None:
    """Blocking (a thread): C{path} holds C{data}, replaced whole (no fsync: the directory lives as long as the parent)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def read_peers(directory: str, own_index: int, now: float) -> list[dict[str, Any]]:
    """Blocking (a thread): the other workers' fresh counts, by slot."""
    out = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    for name in names:
        if not (name.startswith(_PREFIX) and name.endswith(_SUFFIX)):
            continue
        try:
            index = int(name[len(_PREFIX):-len(_SUFFIX)])
        except ValueError:
            continue
        if index == own_index:
            continue
        try:
            with open(os.path.join(directory, name), "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            continue  # a file being replaced, or gone: that worker counts at the next look
        if isinstance(data, dict) and now - float(data.get("at", 0)) <= STALE_SECONDS:
            out.append(data)
    return out


def _add(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key in SUMMED:
        into[key] = into.get(key, 0) + other.get(key, 0)


def _latest(into: dict[str, Any], other: dict[str, Any]) -> None:
    if (other.get("last_used_at") or 0) > (into.get("last_used_at") or 0):
        for key in LATEST:
            into[key] = other.get(key)
    if (other.get("last_failed_at") or 0) > (into.get("last_failed_at") or 0):
        into["last_failed_at"] = other.get("last_failed_at")


def _add_attempts(into: dict[str, Any], other: dict[str, Any]) -> None:
    """One worker's attempt counters (L{cliproxyd.management.usage.Usage.as_json}'s shape) added to C{into}."""
    for key in ("total_requests", "success_count", "failure_count"):
        into[key] = into.get(key, 0) + other.get(key, 0)
    for table in ("by_model", "by_credential"):
        mine = into.setdefault(table, {})
        for name, counts in other.get(table, {}).items():
            entry = mine.setdefault(name, {"success": 0, "failure": 0})
            entry["success"] += counts.get("success", 0)
            entry["failure"] += counts.get("failure", 0)
    statuses = into.setdefault("by_status", {})
    for status, n in other.get("by_status", {}).items():
        statuses[status] = statuses.get(status, 0) + n
    limit = max(into.get("recent_limit") or 0, other.get("recent_limit") or 0)
    recent = sorted([*into.get("recent", []), *other.get("recent", [])], key=lambda r: r.get("at") or 0)
    into["recent"] = recent[-limit:] if limit else recent
    into["recent_limit"] = limit


def merge(own: dict[str, Any], peers: list[dict[str, Any]]) -> dict[str, Any]:
    """
    The machine's counts from each worker's: C{in_flight} and, per model
    (C{usage}) and per credential (C{credentials}), the L{SUMMED} counters
    add up; a credential's L{LATEST} fields and C{last_failed_at} come
    from the worker that saw it last. C{workers} lists each worker's slot,
    pid, requests in flight and upstream attempts. C{usage} and
    C{credentials} are left out when the workers do not count them
    themselves (a StateStore that shares its counters already holds the
    machine's); C{latest} (each credential's L{LATEST} fields, sent with
    such a store) comes from the worker that used it last. C{attempts}
    (the management usage counters, L{_add_attempts}) add up, their recent
    attempts merged by time. Nothing in C{own} is changed.
    """
    total: dict[str, Any] = {"in_flight": 0, "workers": []}
    for counts in sorted([own, *peers], key=lambda c: c.get("index", 0)):
        total["in_flight"] += counts.get("in_flight", 0)
        if "usage" in counts:
            usage_total = total.setdefault("usage", {})
            for model, usage in counts["usage"].items():
                _add(usage_total.setdefault(model, {k: 0 for k in SUMMED}), usage)
        if "credentials" in counts:
            creds = total.setdefault("credentials", {})
            for cred_id, stats in counts["credentials"].items():
                mine = creds.get(cred_id)
                if mine is None:
                    creds[cred_id] = dict(stats)
                else:
                    _add(mine, stats)
                    _latest(mine, stats)
        if "latest" in counts:
            latest = total.setdefault("latest", {})
            for cred_id, stats in counts["latest"].items():
                if cred_id in latest:
                    _latest(latest[cred_id], stats)
                else:
                    latest[cred_id] = dict(stats)
        if "attempt_usage" in counts:
            _add_attempts(total.setdefault("attempt_usage", {}), counts["attempt_usage"])
        total["workers"].append({"index": counts.get("index"), "pid": counts.get("pid"),
                                 "in_flight": counts.get("in_flight", 0), "attempts": counts.get("attempts", 0)})
    return total


class PeerCounts:
    """
    One worker's side: publishes its counts (C{counts()}) as slot C{index}
    in C{directory} while L{service} runs, and adds the other workers'
    counts to its own for L{machine}.
    """

    log = Logger()

    def __init__(self, directory: str, index: int, counts: Callable[[], dict[str, Any]], clock: IReactorTime,
                 run_in_thread: Callable[..., Deferred[Any]]) -> None:
        self.directory = directory
        self.index = index
        self._counts = counts
        self._clock = clock
        self._run = run_in_thread
        self._path = counts_path(directory, index)
        self.service = Periodic("publish-counts", PUBLISH_SECONDS, self.publish, clock, now=True,
                                on_stop=self.withdraw)

    def own(self) -> dict[str, Any]:
        """This worker's counts now, stamped with its slot, pid and the time."""
        return {"index": self.index, "pid": os.getpid(), "at": self._clock.seconds(), **self._counts()}

    def publish(self) -> Deferred[None]:
        data = json.dumps(self.own(), separators=(",", ":")).encode()
        return self._run(replace_file, self._path, data)

    def withdraw(self) -> Deferred[None]:
        """At stop: this worker's counts leave the machine's (its file goes)."""
        def remove() -> None:
            try:
                os.remove(self._path)
            except FileNotFoundError:
                pass

        return self._run(remove)

    async def machine(self) -> dict[str, Any]:
        """Every worker's counts, merged (see L{merge}): this one's as of now, the others' as last written."""
        own = self.own()
        peers = await self._run(read_peers, self.directory, self.index, own["at"])
        return merge(own, peers)
