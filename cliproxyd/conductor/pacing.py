"""
Pure pacing policy (issue 16): local limits, slow start, the failure
penalty, and how much of its share a credential gets.

Two kinds of rule, as the conductor applies them:

- a hard rule: a credential at its local C{rpm}, C{tpm} or C{rpd} is
  skipped like a cooling one (L{limit_until});
- soft rules: a credential ramping up after a cooldown (slow start), one
  that failed several times lately (the penalty), or one whose upstream
  says it is about to run out (headroom) has a I{share} below 1
  (L{share}); the conductor then passes it over for another credential of
  the same priority when there is one, and takes it when there is none, so
  a soft rule never moves traffic to a lower tier. L{admit} turns a share
  into a deterministic fraction of the picks.

Nothing here reads a clock: every function takes C{now} and records (from
L{cliproxyd.state.records}) and returns values.
"""

from __future__ import annotations

from attrs import evolve

from cliproxyd.config.model import LocalLimits
from cliproxyd.state.records import PENALTY_HALF_LIFE, Headroom, LimitWindow, Pace  # noqa: F401 (the half-life lives with Pace)

MINUTE = 60.0
DAY = 86400.0
#: The least share a ramping credential has, so it is tried at once rather than after a pause.
MIN_RAMP_SHARE = 0.1
#: Failures (decayed) a credential may have before it is scored down: one failure is not a pattern.
PENALTY_GRACE = 1.0
#: Below this fraction of its tightest limit a credential is steered away from.
HEADROOM_LOW = 0.05
#: How long a low reading is believed without a newer one: a credential passed over
#: gets no answers to read, so after this it is picked again and read afresh.
HEADROOM_TRUST = 900.0


Limits = LocalLimits
NO_LIMITS = LocalLimits()


# -- local limits --------------------------------------------------------------


def _rolled(w: LimitWindow, now: float) -> LimitWindow:
    """C{w} with the windows that ended by C{now} started over."""
    if w.minute_start is not None and now >= w.minute_start + MINUTE:
        w = evolve(w, minute_start=None, minute_requests=0, minute_tokens=0)
    if w.day_start is not None and now >= w.day_start + DAY:
        w = evolve(w, day_start=None, day_requests=0)
    return w


def limit_until(w: LimitWindow, limits: Limits, now: float) -> float | None:
    """
    When the credential may take a request again: C{None} if it may now,
    else the end of the window that holds it (the day's, if both do).
    """
    w = _rolled(w, now)
    until = None
    if limits.rpd is not None and w.day_start is not None and w.day_requests >= limits.rpd:
        until = w.day_start + DAY
    if w.minute_start is not None:
        full = (limits.rpm is not None and w.minute_requests >= limits.rpm) or (
            limits.tpm is not None and w.minute_tokens >= limits.tpm)
        if full:
            end = w.minute_start + MINUTE
            until = end if until is None else max(until, end)
    return until


def count_request(w: LimitWindow, now: float) -> LimitWindow:
    """One request sent: counted in the minute and the day (a window starts at its first request)."""
    w = _rolled(w, now)
    # Built directly rather than evolved: this runs on every attempt of a limited credential.
    return LimitWindow(
        now if w.minute_start is None else w.minute_start, w.minute_requests + 1, w.minute_tokens,
        now if w.day_start is None else w.day_start, w.day_requests + 1,
    )


def count_tokens(w: LimitWindow, tokens: int, now: float) -> LimitWindow:
    """Tokens an answer used, counted in the current minute."""
    w = _rolled(w, now)
    if tokens <= 0:
        return w
    return evolve(w, minute_start=now if w.minute_start is None else w.minute_start,
                  minute_tokens=w.minute_tokens + tokens)


# -- slow start and the failure penalty -------------------------------------------


def decayed_penalty(p: Pace, now: float) -> float:
    return p.penalty_now(now)


def add_failure(p: Pace, now: float) -> Pace:
    """A failure: the penalty, decayed to now, plus one."""
    return evolve(p, penalty=decayed_penalty(p, now) + 1.0, penalty_at=now)


def back_at(p: Pace, when: float) -> Pace:
    """A cooldown that ends at C{when}: the ramp starts then (a later cooldown moves it)."""
    return evolve(p, since=when if p.since is None else max(p.since, when), credit=0.0)


def ramp(p: Pace, now: float, slow_start: float) -> float:
    """
    The slow-start share: from L{MIN_RAMP_SHARE} up to 1 over C{slow_start}
    seconds after C{since}. Before C{since} it is 1: what cools is out of
    selection anyway, and the credential's other models (a quota group's
    neighbours) go on at their full share.
    """
    if p.since is None or slow_start <= 0 or now < p.since or now >= p.since + slow_start:
        return 1.0
    return max(MIN_RAMP_SHARE, (now - p.since) / slow_start)


def penalty_factor(p: Pace, now: float) -> float:
    """1 for a credential with at most L{PENALTY_GRACE} recent failures, less for each more."""
    excess = decayed_penalty(p, now) - PENALTY_GRACE
    return 1.0 if excess <= 0 else 1.0 / (1.0 + excess)


def headroom_share(h: Headroom | None, now: float) -> float:
    """
    0 while the upstream says the tightest limit is nearly spent: until its
    reset, and for at most L{HEADROOM_TRUST} after the reading; else 1.
    """
    if h is None or h.fraction >= HEADROOM_LOW:
        return 1.0
    if h.reset_at is not None and now >= h.reset_at:
        return 1.0
    if h.read_at is not None and now >= h.read_at + HEADROOM_TRUST:
        return 1.0
    return 0.0


def share(p: Pace | None, h: Headroom | None, now: float, slow_start: float) -> float:
    """The part of its picks a credential keeps, in [0, 1]."""
    s = headroom_share(h, now)
    if p is not None and s:
        s *= ramp(p, now, slow_start) * penalty_factor(p, now)
    return s


def admit(credit: float, s: float) -> tuple[bool, float]:
    """
    Whether a pick of a credential with share C{s} goes ahead, and its new
    credit: each offer earns C{s}, a pick spends 1, so over any run of
    offers the picks taken are C{s} of them, give or take one.
    """
    if s >= 1.0:
        return True, 0.0
    credit += s
    if credit >= 1.0:
        return True, credit - 1.0
    return False, credit


def pace_live(p: Pace, now: float, slow_start: float) -> bool:
    """Whether the record still changes a pick (otherwise the store can drop it)."""
    ramping = p.since is not None and now < p.since + slow_start
    return ramping or decayed_penalty(p, now) > 0.05
