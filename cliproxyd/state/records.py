"""
The records the StateStore keeps: plain values with the predicates that read
them. Deciding what a record becomes (the cooldown table, the quota-group
rules) is policy, and lives in L{cliproxyd.conductor}.
"""

from __future__ import annotations

import math

from attrs import evolve, frozen


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
