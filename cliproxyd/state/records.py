"""
The records the StateStore keeps: plain values with the predicates that read
them. Deciding what a record becomes (the cooldown table, the quota-group
rules) is policy, and lives in L{cliproxyd.conductor}.
"""

from __future__ import annotations

import math
from typing import Any

from attrs import Factory, asdict, define, evolve, frozen


@frozen
class ModelState:
    """
    What one credential has learned about one model.

    C{next_retry_at} set and in the future blocks the model; C{unavailable}
    with no C{next_retry_at} records a failure that does not block.
    """

    unavailable: bool = False
    next_retry_at: float | None = None
    backoff_level: int = 0
    quota_exceeded: bool = False
    reason: str = ""
    last_status: int | None = None
    last_error: str = ""
    updated_at: float | None = None

    def blocked(self, now: float) -> bool:
        return self.unavailable and self.next_retry_at is not None and self.next_retry_at > now


@frozen
class GroupState:
    """One credential's state for one quota group."""

    auto_until: float | None = None
    auto_reason: str = ""
    manual: bool = False
    manual_reason: str = ""
    updated_by: str = ""
    updated_at: float | None = None

    def auto_active(self, now: float) -> bool:
        return self.auto_until is not None and self.auto_until > now

    def blocked_until(self, now: float) -> float | None:
        """Until when the group is out of selection: C{inf} while manually suspended."""
        if self.manual:
            return math.inf
        return self.auto_until if self.auto_active(now) else None

    @property
    def empty(self) -> bool:
        return not self.manual and self.auto_until is None and not self.manual_reason

    def cleared_auto(self) -> "GroupState":
        return evolve(self, auto_until=None, auto_reason="")


@define
class KeyUsage:
    """
    What one client key (by its C{client-keys} name) has used, in the
    windows its limits look at. The windows' rules live in
    L{cliproxyd.conductor.keylimits}; this is the record, JSON-able both ways.

    @ivar starts: the start times of its requests in the last minute (only while it has an C{rpm}).
    @ivar seconds: C{[second, tokens]} of the last minute, oldest first (only while it has a C{tpm}).
    @ivar day: the UTC day C{day_tokens} counts (C{YYYY-MM-DD}); C{month} the same for C{month_tokens}.
    """

    starts: list[float] = Factory(list)
    seconds: list[list[int]] = Factory(list)
    day: str = ""
    day_tokens: int = 0
    month: str = ""
    month_tokens: int = 0
    requests: int = 0
    tokens: int = 0
    refused: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Any) -> "KeyUsage":
        """The record C{as_json} wrote. @raise TypeError: a field of the wrong type."""
        if not isinstance(raw, dict):
            raise TypeError("not a mapping")
        out = cls()
        for name in ("day", "month"):
            value = raw.get(name, "")
            if not isinstance(value, str):
                raise TypeError(f"{name} is not a string")
            setattr(out, name, value)
        for name in ("day_tokens", "month_tokens", "requests", "tokens", "refused"):
            value = raw.get(name, 0)
            if not _whole(value):
                raise TypeError(f"{name} is not a whole number")
            setattr(out, name, value)
        starts = raw.get("starts", [])
        if not isinstance(starts, list) or not all(_number(t) for t in starts):
            raise TypeError("starts is not a list of times")
        out.starts = sorted(float(t) for t in starts)
        seconds = raw.get("seconds", [])
        if not isinstance(seconds, list) or not all(
                isinstance(s, list) and len(s) == 2 and _whole(s[0]) and _whole(s[1]) for s in seconds):
            raise TypeError("seconds is not a list of [second, tokens]")
        out.seconds = sorted([s[0], s[1]] for s in seconds)
        return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
# -- issue 16: what pacing learns (JSON-able, one small get/set pair each on the store) --


@frozen
class LimitWindow:
    """
    One credential's use against its local C{rpm}, C{tpm} and C{rpd}: a
    minute window and a day window, each fixed from its first request.
    """

    minute_start: float | None = None
    minute_requests: int = 0
    minute_tokens: int = 0
    day_start: float | None = None
    day_requests: int = 0

    def live(self, now: float) -> bool:
        """Whether any window still counts (otherwise the record can go)."""
        return (self.day_start is not None and now < self.day_start + 86400.0) or (
            self.minute_start is not None and now < self.minute_start + 60.0)


@frozen
class Headroom:
    """
    The rate-limit state an upstream last reported for a credential:
    C{fraction} of its tightest limit left (0: nothing), until C{reset_at}
    (None: unknown), read at C{read_at}.
    """

    fraction: float = 1.0
    reset_at: float | None = None
    read_at: float | None = None
    #: which limit was the tightest (a header family name), for the status page
    source: str = ""


#: The failure penalty of a L{Pace} halves in this many seconds.
PENALTY_HALF_LIFE = 60.0


@frozen
class Pace:
    """
    Slow start and the failure penalty of one credential.

    @ivar since: when its last cooldown ended (its ramp starts there).
    @ivar penalty: recent failures, decayed to C{penalty_at}.
    @ivar credit: picks earned while its share is below 1 (see
        L{cliproxyd.conductor.pacing.admit}).
    """

    since: float | None = None
    penalty: float = 0.0
    penalty_at: float | None = None
    credit: float = 0.0

    def penalty_now(self, now: float) -> float:
        """The penalty decayed to C{now}."""
        if not self.penalty or self.penalty_at is None:
            return 0.0
        return self.penalty * 0.5 ** (max(0.0, now - self.penalty_at) / PENALTY_HALF_LIFE)


@frozen
class ProbeState:
    """
    Reset probes of one credential's model or quota group: one may be
    running (C{running_since}); the last ran at C{last_at} with C{last_ok}.
    """

    running_since: float | None = None
    last_at: float | None = None
    last_ok: bool | None = None
    last_status: int | None = None
    sent: int = 0
    succeeded: int = 0
